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
    const untreated = $("show-untreated").checked ? "&untreated=1" : "";
    source = new EventSource("/api/events?streams=" + encodeURIComponent(runId) + untreated);
    source.addEventListener("open", () => setState("waiting", "waiting for the first result"));
    source.addEventListener("error", () => setState("disconnected", "disconnected, retrying"));
    source.addEventListener("frame", (ev) => draw(JSON.parse(ev.data)));
  }

  // Sorting with hysteresis: a bar overtakes the one above it only when it leads by MARGIN of the
  // largest value for DWELL_MS in a row, so near-ties do not swap on every frame. Values are
  // always the exact ones; only the order waits.
  const MARGIN = 0.02;
  const DWELL_MS = 1000;
  let order = [];
  const leading = new Map();  // "below\u0000above" -> since when below leads by the margin
  const nodes = new Map();  // key -> its <li>, kept across frames (no DOM churn)

  function reorder(values) {
    const next = order.filter((k) => values.has(k));
    for (const k of values.keys()) if (!next.includes(k)) next.push(k);
    const max = Math.max(1, ...values.values());
    const now = Date.now();
    for (let pass = 0; pass < next.length; pass++) {
      let swapped = false;
      for (let i = 0; i + 1 < next.length; i++) {
        const above = next[i], below = next[i + 1];
        const pair = below + "\u0000" + above;
        if (values.get(below) - values.get(above) > MARGIN * max) {
          if (!leading.has(pair)) leading.set(pair, now);
          if (now - leading.get(pair) >= DWELL_MS) {
            next[i] = below; next[i + 1] = above; leading.delete(pair); swapped = true;
          }
        } else {
          leading.delete(pair);
        }
      }
      if (!swapped) break;
    }
    order = next;
    return next;
  }

  function bar(key) {
    const li = document.createElement("li");
    li.className = "bar";
    li.dataset.key = key;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = key;
    label.title = key;
    label.dir = "auto";
    const fill = document.createElement("span");
    fill.className = "fill";
    const value = document.createElement("span");
    value.className = "value";
    li.append(label, fill, value);
    return li;
  }

  let pending = null;  // a redraw when a lead has lasted the dwell (frames come only on change)

  function draw(frame) {
    lastFrame = Date.now();
    if (pending) { clearTimeout(pending); pending = null; }
    $("chart-title").textContent = frame.job || frame.run_id;
    const top = frame.top || [];
    const finished = frame.state === "ok" || frame.state === "failed";
    setState(finished ? "finished" : top.length ? "live" : "waiting",
             finished ? "finished (" + frame.state + ")" : top.length ? "live" : "waiting for the first result");
    $("chart-note").textContent = frame.error ? frame.error
      : `${top.length} of ${frame.keys || 0} keys, largest first`;
    const values = new Map(top.map((r) => [r.key, r.value]));
    const keys = reorder(values);
    const max = Math.max(1, ...values.values());
    const chart = $("chart");
    const before = new Map();
    for (const [k, li] of nodes) before.set(k, li.getBoundingClientRect().top);
    for (const [k, li] of [...nodes]) if (!values.has(k)) { li.remove(); nodes.delete(k); }
    for (const k of keys) {
      let li = nodes.get(k);
      if (!li) { li = bar(k); nodes.set(k, li); }
      li.querySelector(".fill").style.width = (100 * values.get(k) / max).toFixed(2) + "%";
      li.querySelector(".value").textContent = values.get(k).toLocaleString();
      chart.append(li);  // in display order (appending an existing node moves it)
    }
    // Reordering moves as motion, not a jump: each bar slides from where it was, for as long as
    // one frame lasts.
    const ms = frame.interval_ms || 250;
    for (const [k, li] of nodes) {
      const was = before.get(k);
      if (was === undefined) continue;
      const dy = was - li.getBoundingClientRect().top;
      if (!dy) continue;
      li.style.transition = "none";
      li.style.transform = `translateY(${dy}px)`;
      requestAnimationFrame(() => {
        li.style.transition = `transform ${ms}ms ease`;
        li.style.transform = "";
      });
    }
    if (leading.size) pending = setTimeout(() => draw(frame), DWELL_MS + 20);
    drawUntreated(frame.untreated);
    drawProcesses((frame.metrics || {}).processes || []);
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

  // Document 000's untreated chart: every key, in arrival order, redrawn whole on every frame.
  function drawUntreated(rows) {
    const ol = $("untreated");
    ol.hidden = !rows;
    $("chart").parentElement.classList.toggle("both", !!rows);
    if (!rows) return;
    const max = Math.max(1, ...rows.map((r) => r.value));
    ol.replaceChildren(...rows.map((r) => {
      const li = bar(r.key);
      li.querySelector(".fill").style.width = (100 * r.value / max).toFixed(2) + "%";
      li.querySelector(".value").textContent = r.value.toLocaleString();
      return li;
    }));
  }

  function drawProcesses(rows) {
    const body = $("processes").querySelector("tbody");
    body.replaceChildren(...rows.map((p) => {
      const tr = document.createElement("tr");
      for (const v of [p.name, p.pid, (p.cpu_percent ?? 0).toFixed(1),
                       ((p.uss_bytes || 0) / 1048576).toFixed(1),
                       ((p.pss_bytes || 0) / 1048576).toFixed(1)]) {
        const td = document.createElement("td"); text(td, v); tr.append(td);
      }
      return tr;
    }));
  }

  $("show-untreated").addEventListener("change", () => { if (selected) watch(selected); });

  setInterval(() => {  // no frame for a while: say so instead of freezing silently
    if (lastFrame && Date.now() - lastFrame > 10000 && $("state").classList.contains("live")) {
      setState("stale", "stale (no change for 10 s)");
    }
  }, 1000);
  loadStreams();
})();
