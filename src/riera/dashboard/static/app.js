"use strict";
// The live stream view: one EventSource per tab, frames at the server's display rate.
(function () {
  const $ = (id) => document.getElementById(id);
  const bus = window.RieraBus;
  let selected = new URLSearchParams(location.search).get("run");
  let lastFrame = 0;
  let active = true;  // the streams view is the one shown
  // What the user sees, measured where it happens: when each frame was painted, the intervals
  // between painted frames, and the time from subscribing to the first painted bars.
  const perf = window.__riera = { paints: [], intervals: [], firstPaintMs: null, subscribedAt: null,
                                  dropped: 0, keepValues: false };

  function setState(name, text) {
    const el = $("state");
    el.className = "state " + name;
    el.textContent = text || name;
  }

  function text(el, value) { el.textContent = value == null ? "–" : String(value); }

  // The list of streaming queries: once by a GET at load, then live by the tab's event stream
  // (a query started after the page opened appears, statuses change). With none chosen, the
  // newest is watched as soon as there is one.
  function renderList(rows) {
    const list = $("stream-list");
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
    if (wanted && !watching) watch(wanted.run_id);
  }

  async function loadStreams() {
    try {
      const res = await fetch("/api/streams", { headers: { accept: "application/json" } });
      renderList(await res.json());
    } catch (err) {
      setState("disconnected", "disconnected, retrying");
      setTimeout(loadStreams, 2000);
    }
  }
  bus.on("streams", (data) => { if (data.rows) renderList(data.rows); });

  let watching = null;

  function watch(runId) {
    selected = watching = runId;
    for (const li of document.querySelectorAll("#stream-list li")) {
      li.classList.toggle("selected", li.dataset.run === runId);
    }
    $("chart-note").textContent = "waiting for the first result";
    perf.subscribedAt = performance.now();
    perf.firstPaintMs = null;
    order = []; leading.clear(); lastFrame = 0;  // another query: nothing of the last one's order
    for (const s of series) s.length = 0;
    subscribe();
  }

  function subscribe() {
    bus.set("list", active ? "1" : "");
    bus.set("streams", active ? watching : "");
    bus.set("untreated", active && $("show-untreated").checked ? "1" : "");
  }

  bus.onStatus((name) => {
    if (!active) return;
    if (name === "connecting") setState("connecting");
    else if (name === "open" && !lastFrame) setState("waiting", "waiting for the first result");
    else if (name === "retrying") setState("disconnected", "disconnected, retrying");
    else if (name === "paused") setState("stale", "paused while the tab is hidden");
  });
  let system = {};
  let shown = null;  // the frame on screen, to redraw its metrics when the system figures move
  bus.on("system", (data) => {
    system = data;
    if (shown) { drawMetrics(shown); drawProcesses(shown); }
  });
  let latest = null;  // frames waiting to be painted: only the newest is kept
  bus.on("frame", (frame) => {
    if (frame.run_id !== watching) return;
    if (latest) perf.dropped++;
    latest = frame;
    requestAnimationFrame(() => {
      if (!latest) return;
      const f = latest; latest = null;
      draw(f);
      painted(f);
    });
  });
  window.addEventListener("riera:view", (ev) => {
    active = ev.detail === "streams";
    subscribe();
  });

  // Throughput and latency over the last minutes, drawn by uPlot (vendored): one point per
  // painted frame, at most SERIES_POINTS kept.
  const SERIES_POINTS = 600;
  const series = [[], [], []];
  let plot = null;
  function chartSeries(frame) {
    const V = window.RieraVendor;
    const m = frame.metrics || {};
    if (!V || !V.uPlot || m.records_per_second == null) return;
    series[0].push(Date.now() / 1000);
    series[1].push(m.records_per_second);
    series[2].push((m.latency || {}).p99_ms ?? null);
    if (series[0].length > SERIES_POINTS) for (const s of series) s.shift();
    const box = $("series");
    if (!plot) {
      plot = new V.uPlot({
        width: Math.max(240, box.clientWidth || 600), height: 160,
        scales: { x: { time: true }, lat: {} },
        legend: { live: false },
        axes: [{}, { label: "records/s" }, { scale: "lat", side: 1, label: "p99 ms", grid: { show: false } }],
        series: [{}, { label: "records/s", stroke: "#3b7dd8" }, { label: "latency p99 ms", stroke: "#cf222e", scale: "lat" }],
      }, series, box);
      new ResizeObserver(() => plot.setSize({ width: Math.max(240, box.clientWidth), height: 160 })).observe(box);
    } else {
      plot.setData(series);
    }
  }

  function painted(frame) {
    chartSeries(frame);
    const now = performance.now();
    const last = perf.paints.length ? perf.paints[perf.paints.length - 1].at : null;
    if (last !== null) perf.intervals.push(now - last);
    const entry = { at: now, wall: Date.now(), sent_at: frame.sent_at, bars: (frame.top || []).length };
    if (perf.keepValues) entry.values = Object.fromEntries((frame.top || []).map((r) => [r.key, r.value]));
    perf.paints.push(entry);
    if (perf.paints.length > 2000) perf.paints.splice(0, perf.paints.length - 2000);
    if (perf.intervals.length > 240) perf.intervals.splice(0, perf.intervals.length - 240);
    if (perf.firstPaintMs === null && (frame.top || []).length) perf.firstPaintMs = now - perf.subscribedAt;
  }

  function stats(values) {
    if (!values.length) return {};
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    const sd = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
    const sorted = [...values].sort((a, b) => a - b);
    const p95 = sorted[Math.min(sorted.length - 1, Math.floor(0.95 * sorted.length))];
    return { mean, sd, p95 };
  }

  // Sorting with hysteresis: a bar goes above another only when it has led it by MARGIN of the
  // largest value for DWELL_MS in a row ("a clear lead"), so near-ties do not swap on every
  // frame. Values are always the exact ones; only the order waits. The order shown is the one
  // closest to the previous order that puts every clear leader above the bar it leads: bars are
  // taken in their previous order, each as soon as no bar still to place clearly leads it. Clear
  // leads cannot form a cycle (each is a gap of more than MARGIN), so this always ends, and the
  // bars out of order differ by no more than the margin once the dwell has passed. A bar new to
  // the chart needs no dwell.
  const MARGIN = 0.02;
  const DWELL_MS = 1000;
  let order = [];
  const leading = new Map();  // "leader\u0000led" -> since when leader leads led by the margin
  const nodes = new Map();  // key -> its <li>, kept across frames (no DOM churn)
  let waiting = false;  // a lead is still in its dwell: draw again when it may have ended

  function reorder(values) {
    const known = new Set(order);
    const prev = order.filter((k) => values.has(k));
    for (const k of values.keys()) if (!known.has(k)) prev.push(k);
    const max = Math.max(1, ...values.values());
    const now = Date.now();
    const held = new Set();
    for (const [a, va] of values) {
      for (const [b, vb] of values) {
        if (va - vb > MARGIN * max) {
          const pair = a + "\u0000" + b;
          if (!leading.has(pair)) leading.set(pair, now);
          held.add(pair);
        }
      }
    }
    for (const pair of [...leading.keys()]) if (!held.has(pair)) leading.delete(pair);
    const clear = (a, b) => {
      const since = leading.get(a + "\u0000" + b);
      return since !== undefined && (now - since >= DWELL_MS || !known.has(a) || !known.has(b));
    };
    const placed = new Set();
    const next = [];
    while (next.length < prev.length) {
      const free = prev.find((k) => !placed.has(k) &&
        !prev.some((j) => j !== k && !placed.has(j) && clear(j, k)));
      next.push(free);
      placed.add(free);
    }
    const at = new Map(next.map((k, i) => [k, i]));
    waiting = [...leading.keys()].some((pair) => {
      const [a, b] = pair.split("\u0000");
      return at.get(a) > at.get(b);  // a leads b, still below it: its dwell is running
    });
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
    shown = frame;
    if (pending) { clearTimeout(pending); pending = null; }
    $("chart-title").textContent = frame.job || frame.run_id;
    const top = frame.top || [];
    const finished = frame.state === "ok" || frame.state === "failed";
    setState(finished ? "finished" : top.length ? "live" : "waiting",
             finished ? "finished (" + frame.state + ")" : top.length ? "live" : "waiting for the first result");
    $("chart-note").textContent = frame.error ? frame.error
      : top.length ? `${top.length} of ${frame.keys || 0} keys, largest first`
      : finished ? "the query ended without a result" : "waiting for the first result";
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
    if (waiting) pending = setTimeout(() => draw(frame), DWELL_MS + 20);
    drawUntreated(frame.untreated);
    drawProcesses(frame);
    drawMetrics(frame);
  }

  const fmt = (v, digits = 1) => v == null || Number.isNaN(v) ? null : Number(v).toFixed(digits);
  const mib = (v) => v == null ? null : (v / 1048576).toFixed(1) + " MiB";

  // Lag: records not yet read, in all (and per source partition when there are several).
  function lag(value) {
    if (value == null) return null;
    if (typeof value !== "object") return value;
    const parts = Object.entries(value);
    const total = parts.reduce((a, [, v]) => a + (Number(v) || 0), 0);
    return parts.length > 1 ? `${total} (${parts.map(([k, v]) => `${k}: ${v}`).join(", ")})` : String(total);
  }

  function drawMetrics(frame) {
    const m = frame.metrics || {};
    const lat = m.latency || {};
    const sys = system;
    const shm = sys.shm || {};
    const own = sys.process || {};
    const ram = sys.ram || {};
    const iv = stats(perf.intervals);
    const rows = [
      ["painted frame interval ms (mean ± SD, p95)",
       iv.mean == null ? null : `${fmt(iv.mean)} ± ${fmt(iv.sd)}, p95 ${fmt(iv.p95)}`],
      ["time to first update ms", fmt(perf.firstPaintMs, 0)],
      ["frame rate", frame.hz == null ? null : `${fmt(frame.hz)} Hz` + (frame.step_down ? ` (stepped down: ${frame.step_down})` : "")],
      ["epoch", m.committed_epoch], ["records in", m.records_in],
      ["records/s", fmt(m.records_per_second, 0)],
      ["latency p50 / p95 / p99 ms", lat.p50_ms == null ? null : `${fmt(lat.p50_ms)} / ${fmt(lat.p95_ms)} / ${fmt(lat.p99_ms)}`],
      ["lag (records)", lag(m.lag)],
      ["watermark", m.watermark == null ? null : new Date(m.watermark).toISOString()],
      ["checkpoint ms (last, p50)", m.checkpoint_ms == null ? null : typeof m.checkpoint_ms === "object"
        ? `${fmt(m.checkpoint_ms.last)}, ${fmt(m.checkpoint_ms.p50)}` : fmt(m.checkpoint_ms)],
      ["system RAM", ram.total == null ? null : `${mib(ram.total - ram.available)} of ${mib(ram.total)} (${fmt(ram.used_percent)}%)`],
      ["/dev/shm", shm.total == null ? null : `${mib(shm.used)} of ${mib(shm.total)}; Riera: ${shm.riera_segments ?? 0} segments, ${mib(shm.riera_bytes || 0)}`],
      ["dashboard memory (USS / PSS)", own.uss_bytes == null ? null : `${mib(own.uss_bytes)} / ${mib(own.pss_bytes)}`],
    ];
    const dl = $("metrics");
    dl.replaceChildren();
    for (const [k, v] of rows) {
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

  // The query's processes (driver and workers, from its status file) and its producers (announced
  // by themselves, sampled by the dashboard once a second).
  function drawProcesses(frame) {
    const producers = ((system.producers || {})[frame.run_id]) || [];
    const theirs = new Set(producers.map((p) => p.pid));  // a producer the driver started: once
    const rows = [...((frame.metrics || {}).processes || []).filter((p) => !theirs.has(p.pid)),
                  ...producers];
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

  $("show-untreated").addEventListener("change", subscribe);

  setInterval(() => {  // no frame for a while: say so instead of freezing silently
    if (lastFrame && Date.now() - lastFrame > 10000 && $("state").classList.contains("live")) {
      setState("stale", "stale (no change for 10 s)");
    }
  }, 1000);
  loadStreams();
  subscribe();  // the list follows the store from the start, even before there is a query
})();
