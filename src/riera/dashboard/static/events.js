"use strict";
// One server-sent-event stream per tab (browsers allow 6 connections per site): every view of the
// page subscribes here, and the bus reopens its one EventSource when what the tab follows changes.
// A hidden tab closes it (a background tab costs nothing); coming back reopens it, and the server's
// first message is the latest state, never a backlog.
window.RieraBus = (function () {
  const wants = {};  // query parameter -> value (streams, untreated, runs, run)
  const handlers = {};  // event name -> [fn]
  const statusFns = [];
  let source = null;
  let timer = null;
  let opened = "";
  let backoff = 1000;  // ms before reopening a stream the browser gave up on

  function url() {
    const q = new URLSearchParams();
    for (const k of Object.keys(wants).sort()) if (wants[k]) q.set(k, wants[k]);
    return "/api/events?" + q.toString();
  }

  function status(name) { for (const fn of statusFns) fn(name); }

  function connect() {
    timer = null;
    const next = url();
    if (document.hidden) { close(); return; }
    if (source && next === opened) return;
    close();
    if (next === "/api/events?") return;
    opened = next;
    status("connecting");
    source = new EventSource(next);
    source.addEventListener("open", () => status("open"));
    source.addEventListener("error", () => {
      status("retrying");
      // The browser retries by itself after a network error, but gives up for good on an
      // answer that is not an event stream (401 after a restart with a new token, 421, a
      // proxy's 502): then retry here, backing off.
      if (source && source.readyState === EventSource.CLOSED) {
        close();
        clearTimeout(timer);
        timer = setTimeout(connect, backoff);
        backoff = Math.min(30000, backoff * 2);
      }
    });
    source.addEventListener("open", () => { backoff = 1000; });
    for (const name of Object.keys(handlers)) attach(name);
  }

  function attach(name) {
    if (!source) return;
    source.addEventListener(name, (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch (err) { return; }
      for (const fn of handlers[name]) fn(data);
    });
  }

  function close() {
    if (source) { source.close(); source = null; opened = ""; }
  }

  function schedule() { if (!timer) timer = setTimeout(connect, 0); }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { close(); status("paused"); } else schedule();
  });

  return {
    set(key, value) {
      const v = value == null || value === false ? "" : String(value);
      if ((wants[key] || "") === v) return;
      wants[key] = v;
      schedule();
    },
    on(name, fn) {
      if (!handlers[name]) { handlers[name] = []; if (source) attach(name); }
      handlers[name].push(fn);
    },
    onStatus(fn) { statusFns.push(fn); },
    reconnect() { close(); schedule(); },
  };
})();
