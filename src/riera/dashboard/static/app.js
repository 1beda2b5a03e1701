"use strict";
// The live stream view: one EventSource per tab, frames at the server's display rate.
(function () {
  const $ = (id) => document.getElementById(id);
  let source = null;
  let selected = new URLSearchParams(location.search).get("run");
  let lastFrame = 0;

  function setState(name, text) {
    const el = $("state");
    el.className = "state " + name;
    el.textContent = text || name;
  }

  function text(el, value) { el.textContent = value == null ? "–" : String(value); }

  async function loadStreams() {
    const list = $("stream-list");
    try {
      const res = await fetch("/api/streams", { headers: { accept: "application/json" } });
      const rows = await res.json();
      list.replaceChildren();
      if (!rows.length) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "no streaming query recorded yet";
        list.append(li);
      }
      for (const row of rows) {
        const li = document.createElement("li");
        li.dataset.run = row.run_id;
        li.title = row.run_id;
        li.textContent = `${row.job || row.run_id} (${row.status})`;
        li.addEventListener("click", () => watch(row.run_id));
        if (row.run_id === selected) li.classList.add("selected");
        list.append(li);
      }
      const wanted = rows.find((r) => r.run_id === selected) || rows[0];
      if (wanted && !source) watch(wanted.run_id);
    } catch (err) {
      setState("disconnected", "disconnected, retrying");
      setTimeout(loadStreams, 2000);
    }
  }

  function watch(runId) {
    selected = runId;
    for (const li of document.querySelectorAll("#stream-list li")) {
      li.classList.toggle("selected", li.dataset.run === runId);
    }
    if (source) source.close();
    setState("connecting");
    $("chart-note").textContent = "waiting for the first result";
    source = new EventSource("/api/events?streams=" + encodeURIComponent(runId));
    source.addEventListener("open", () => setState("waiting", "waiting for the first result"));
    source.addEventListener("error", () => setState("disconnected", "disconnected, retrying"));
    source.addEventListener("frame", (ev) => draw(JSON.parse(ev.data)));
  }

  function draw(frame) {
    lastFrame = Date.now();
    $("chart-title").textContent = frame.job || frame.run_id;
    const top = frame.top || [];
    const finished = frame.state === "ok" || frame.state === "failed";
    setState(finished ? "finished" : top.length ? "live" : "waiting",
             finished ? "finished (" + frame.state + ")" : top.length ? "live" : "waiting for the first result");
    $("chart-note").textContent = frame.error ? frame.error
      : `${top.length} of ${frame.keys || 0} keys, largest first`;
    const max = top.reduce((m, r) => Math.max(m, r.value), 0) || 1;
    const chart = $("chart");
    chart.replaceChildren();
    for (const row of top) {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.key = row.key;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = row.key;
      label.title = row.key;
      label.dir = "auto";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * row.value / max).toFixed(2) + "%";
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = row.value.toLocaleString();
      li.append(label, fill, value);
      chart.append(li);
    }
    const m = frame.metrics || {};
    const lat = m.latency || {};
    const dl = $("metrics");
    dl.replaceChildren();
    for (const [k, v] of [["epoch", m.committed_epoch], ["records in", m.records_in],
                          ["records/s", m.records_per_second], ["latency p50 ms", lat.p50_ms],
                          ["latency p99 ms", lat.p99_ms]]) {
      const dt = document.createElement("dt"); text(dt, k);
      const dd = document.createElement("dd"); text(dd, v);
      dl.append(dt, dd);
    }
  }

  setInterval(() => {  // no frame for a while: say so instead of freezing silently
    if (lastFrame && Date.now() - lastFrame > 10000 && $("state").classList.contains("live")) {
      setState("stale", "stale (no change for 10 s)");
    }
  }, 1000);
  loadStreams();
})();
