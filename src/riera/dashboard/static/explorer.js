"use strict";
// The provenance explorer: runs, one run (stages, plan, task timeline, elements with lineage one
// level at a time, programs, Git file versions, stream epochs), domain data with filters, and a
// read-only SQL console. Every list is paged by keyset; every value reaches the page as text.
(function () {
  const $ = (id) => document.getElementById(id);
  const bus = window.RieraBus;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === "data") Object.assign(node.dataset, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c == null ? "" : c instanceof Node ? c : String(c));
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = String(text);
    return node;
  }
  const cell = (v, cls) => el("td", { class: cls || "", title: v == null ? "" : String(v) }, v == null ? "–" : v);
  const when = (ms) => ms == null ? null : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  const num = (v) => v == null ? null : Number(v).toLocaleString();

  async function get(path) {
    const res = await fetch(path, { headers: { accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }
  function qs(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v)) for (const x of v) q.append(k, x);
      else if (v != null && v !== "") q.set(k, v);
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // -- routing ---------------------------------------------------------------------------------
  let view = null;
  let runId = null;

  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const name = parts[0] || "streams";
    const next = name === "runs" && parts[1] ? "run" : name;
    for (const main of document.querySelectorAll("main.view")) main.hidden = main.id !== "view-" + next;
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("on", a.dataset.view === (next === "run" ? "runs" : next));
    }
    document.body.dataset.view = next;
    view = next;
    runId = next === "run" ? parts.slice(1).join("/") : null;
    bus.set("runs", next === "runs" ? "1" : "");
    bus.set("run", runId || "");
    window.dispatchEvent(new CustomEvent("riera:view", { detail: next }));
    if (next === "domains" || next === "sql") {
      $("state").className = "state finished";
      $("state").textContent = "read-only";
    }
    if (next === "runs") loadRuns();
    else if (next === "run") openRun(runId);
    else if (next === "domains") loadDomains();
  }
  window.addEventListener("hashchange", route);

  // -- runs ------------------------------------------------------------------------------------
  let runsNext = null;

  function runRow(r) {
    const tr = el("tr", { class: "link", data: { run: r.run_id }, on: { click: () => { location.hash = "#/runs/" + encodeURIComponent(r.run_id); } } });
    fillRunRow(tr, r);
    return tr;
  }
  function fillRunRow(tr, r) {
    tr.replaceChildren(cell(r.run_id), el("td", {}, el("span", { class: "badge " + (r.status || "") }, r.status || "?")),
      cell(r.action), cell(when(r.started_at)), cell(r.seconds == null ? null : r.seconds.toFixed(2)),
      cell(r.workers), cell(r.error, "clip"));
  }

  async function loadRuns(more) {
    const body = $("runs-table").tBodies[0];
    try {
      const page = await get("/api/runs" + qs({ status: $("runs-status").value, after: more ? runsNext : null }));
      if (!more) body.replaceChildren();
      body.append(...page.rows.map(runRow));
      runsNext = page.next;
      $("runs-more").hidden = !page.next;
    } catch (err) {
      body.replaceChildren(el("tr", {}, el("td", { colSpan: 7 }, "cannot load runs: " + err.message)));
    }
  }
  // Live: the first page comes by the tab's event stream; rows shown change in place and new
  // runs appear on top, without reloading what the user paged to.
  bus.on("runs", (page) => {
    if (view !== "runs") return;
    $("runs-live").textContent = "live";
    const body = $("runs-table").tBodies[0];
    const shown = new Map([...body.rows].map((tr) => [tr.dataset.run, tr]));
    const status = $("runs-status").value;
    const fresh = [];
    for (const r of page.rows) {
      const tr = shown.get(r.run_id);
      if (status && r.status !== status) {  // no longer what the filter shows
        if (tr) tr.remove();
        continue;
      }
      if (tr) fillRunRow(tr, r); else fresh.push(runRow(r));
    }
    if (fresh.length && shown.size) body.prepend(...fresh);
    else if (fresh.length) body.append(...fresh);
  });
  $("runs-more").addEventListener("click", () => loadRuns(true));
  $("runs-status").addEventListener("change", () => loadRuns(false));

  // -- one run ---------------------------------------------------------------------------------
  let summary = null;
  let clockSkew = 0;  // server now - client now
  const pages = {};  // tab -> next cursor

  async function openRun(id) {
    $("run-title").textContent = id;
    for (const [k, fmt] of [["json", "json"], ["provn", "provn"], ["dot", "dot"], ["png", "png"]]) {
      $("exp-" + k).href = `/api/runs/${encodeURIComponent(id)}/export.${fmt}`;
    }
    $("lineage").hidden = true;
    try {
      showSummary(await get(`/api/runs/${encodeURIComponent(id)}`));
    } catch (err) {
      $("run-summary").textContent = err.message;
      return;
    }
    loadPlan(id);
    loadTimeline(id);
    for (const tab of ["elements", "programs", "files", "epochs"]) loadTab(tab, false);
  }

  function showSummary(s) {
    summary = s;
    clockSkew = s.now - Date.now();
    const r = s.run;
    const badge = $("run-status");
    badge.className = "badge " + (r.status || "");
    badge.textContent = r.status || "?";
    const parts = [r.action, r.user_name && `by ${r.user_name}`, r.host && `on ${r.host}`,
      r.started_at && `started ${when(r.started_at)} UTC`, r.seconds != null && `${r.seconds.toFixed(2)} s`,
      r.workers && `${r.workers} workers`, r.executor && `executor ${r.executor}`,
      `${num(s.counts.tasks)} tasks, ${num(s.counts.elements)} elements, ${num(s.counts.programs)} programs, ${num(s.counts.files)} file versions, ${num(s.counts.epochs)} epochs`,
      r.error && `error: ${r.error}`];
    $("run-summary").textContent = parts.filter(Boolean).join(" · ");
    $("stages-table").tBodies[0].replaceChildren(...s.stages.map((st) => {
      const t = st.tasks || {};
      return el("tr", {}, cell(st.stage_id), cell(st.label), cell(st.status),
        cell(`${t.ok || 0} / ${t.running || 0} / ${t.failed || 0} / ${st.num_tasks ?? "?"}`),
        cell(st.seconds == null ? null : st.seconds.toFixed(2)), cell(num(st.rows_out)), cell(st.retries));
    }));
  }

  let timelineAt = 0;
  bus.on("run", (s) => {
    if (view !== "run" || !s.run || s.run.run_id !== runId) return;
    const before = summary && summary.counts;
    showSummary(s);
    if (performance.now() - timelineAt > 1000) loadTimeline(runId);
    for (const tab of ["elements", "programs", "files", "epochs"]) {
      if (!before || before[tab] !== s.counts[tab]) loadTab(tab, false, true);
    }
  });

  async function loadPlan(id) {
    const box = $("plan");
    let plan;
    try { plan = await get(`/api/runs/${encodeURIComponent(id)}/plan`); } catch (err) { box.textContent = err.message; return; }
    box.replaceChildren();
    if (!plan.nodes.length) { box.append(el("p", { class: "muted" }, "no plan recorded")); return; }
    const V = window.RieraVendor;
    const label = (n) => `${n.kind || "op"}${n.label ? ": " + n.label : ""}`.slice(0, 48);
    if (!V || !V.dagre) {  // the layout library did not load: a plain list still shows the plan
      box.append(el("ol", {}, ...plan.nodes.map((n) => el("li", {}, label(n)))));
      return;
    }
    const g = new V.dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 12, ranksep: 28, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of plan.nodes) g.setNode(n.op_id, { width: 7 * label(n).length + 16, height: 24, n });
    for (const e of plan.edges) g.setEdge(e.from, e.to);
    V.dagre.layout(g);
    const { width, height } = g.graph();
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "natural" });
    for (const e of g.edges()) {
      const pts = g.edge(e).points;
      root.append(svg("path", { class: "edge", d: "M" + pts.map((p) => `${p.x},${p.y}`).join(" L") }));
    }
    for (const id of g.nodes()) {
      const n = g.node(id);
      const group = svg("g", { class: "node", transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})` });
      group.append(svg("rect", { width: n.width, height: n.height, rx: 4 }), svg("text", { x: 8, y: 16 }, label(n.n)),
        svg("title", {}, `${n.n.op_id} ${n.n.function || ""}`));
      root.append(group);
    }
    box.append(root);
    if (plan.more) box.append(el("p", { class: "muted" }, `+${plan.more} more operators`));
  }

  // The task timeline: one lane per worker process; a running task grows to "now". A large run
  // comes binned: each cell's shade is how busy the lane was.
  let timeline = null;
  async function loadTimeline(id) {
    timelineAt = performance.now();
    try { timeline = await get(`/api/runs/${encodeURIComponent(id)}/timeline`); } catch (err) { $("timeline").textContent = err.message; return; }
    drawTimeline();
  }
  function drawTimeline() {
    const t = timeline;
    const box = $("timeline");
    if (!t || !t.lanes.length) { box.replaceChildren(el("p", { class: "muted" }, "no task started yet")); return; }
    const now = Date.now() + clockSkew;
    const running = t.bars ? t.bars.some((b) => b.running) : false;
    const end = running ? Math.max(t.end, now) : t.end;
    const W = 1000, lane = 16, left = 120, H = t.lanes.length * lane + 20;
    const x = (ms) => left + (W - left - 10) * (ms - t.start) / Math.max(1, end - t.start);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, height: Math.min(480, H) });
    t.lanes.forEach((name, i) => root.append(svg("text", { x: 4, y: i * lane + 12 }, name.slice(0, 18))));
    if (t.bars) {
      for (const b of t.bars) {
        const x0 = x(b.start), x1 = x(b.end == null ? now : b.end);
        const r = svg("rect", { x: x0, y: b.lane * lane + 2, width: Math.max(1, x1 - x0), height: lane - 4,
          class: b.running ? "running" : b.status === "failed" ? "failed" : "ok" });
        r.append(svg("title", {}, `${b.task_id} (${b.status}${b.attempt ? ", attempt " + b.attempt : ""})`));
        root.append(r);
      }
      $("timeline-note").textContent = `${t.tasks} tasks`;
    } else {
      const w = (W - left - 10) / t.bins.busy[0].length;
      t.bins.busy.forEach((cells, i) => cells.forEach((v, j) => {
        if (!v) return;
        const r = svg("rect", { x: left + j * w, y: i * lane + 2, width: w, height: lane - 4,
          class: t.bins.failed[i][j] ? "failed" : "ok", "fill-opacity": (0.15 + 0.85 * v).toFixed(2) });
        r.append(svg("title", {}, `${Math.round(100 * v)}% busy${t.bins.failed[i][j] ? `, ${t.bins.failed[i][j]} failed` : ""}`));
        root.append(r);
      }));
      $("timeline-note").textContent = `${num(t.tasks)} tasks, binned by ${Math.round(t.bins.width_ms)} ms`;
    }
    root.append(svg("text", { x: left, y: H - 4 }, when(t.start)), svg("text", { x: W - 150, y: H - 4 }, when(end)));
    box.replaceChildren(root);
  }
  setInterval(() => {  // running tasks grow with the clock between updates
    if (view === "run" && timeline && timeline.bars && timeline.bars.some((b) => b.running)) drawTimeline();
  }, 1000);

  // -- the run's paged tabs ------------------------------------------------------------------
  const TABS = {
    elements: (r) => el("tr", { class: "link", on: { click: () => showLineage(r.element_id) } },
      cell(r.element_no), cell(r.element_id), cell(r.kind), cell(r.stage_id), cell(num(r.rows)), cell(num(r.bytes)), cell(r.location, "clip")),
    programs: (r) => el("tr", {}, cell(r.task_id), cell(Array.isArray(r.argv) ? r.argv.join(" ") : r.argv, "clip"),
      cell(r.exit_code), cell(r.seconds == null ? null : r.seconds.toFixed(3)), cell(r.stdout_tail, "clip"), cell(r.stderr_tail, "clip")),
    files: (r) => el("tr", {}, cell(r.stage_id), cell(r.path, "clip"), cell((r.commit_sha || "").slice(0, 12)), cell(r.branch), cell(num(r.bytes))),
    epochs: (r) => el("tr", {}, cell(r.epoch), cell(r.status), cell(when(r.committed_at)), cell(num(r.records_in)),
      cell(num(r.records_out)), cell(num(r.late_records)), cell(r.checkpoint_seconds == null ? null : r.checkpoint_seconds.toFixed(3))),
  };

  async function loadTab(tab, more, live) {
    if (live && pages[tab + ":paged"]) return;  // the user paged on: do not pull the list from under them
    const body = $(tab + "-table").tBodies[0];
    try {
      const page = await get(`/api/runs/${encodeURIComponent(runId)}/${tab}` + qs({ after: more ? pages[tab] : null, limit: 25 }));
      if (!more) body.replaceChildren();
      body.append(...page.rows.map(TABS[tab]));
      pages[tab] = page.next;
      if (more) pages[tab + ":paged"] = true;
      else delete pages[tab + ":paged"];
      $(tab + "-more").hidden = !page.next;
    } catch (err) {
      body.replaceChildren(el("tr", {}, el("td", { colSpan: 7 }, err.message)));
    }
  }
  $("element-find").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("element-id").value.trim();
    if (id) showLineage(id);
  });
  for (const tab of Object.keys(TABS)) {
    $(tab + "-more").addEventListener("click", () => loadTab(tab, true));
  }
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("on", o === b);
      for (const t of Object.keys(TABS)) $("tab-" + t).hidden = t !== b.dataset.tab;
    });
  }

  // Lineage, one level at a time: what the element came from and what it went into, the first
  // few of each and "+N more"; a click on a neighbour moves there.
  async function showLineage(elementId) {
    const box = $("lineage");
    box.hidden = false;
    const base = `/api/runs/${encodeURIComponent(runId)}/lineage`;
    const fetchSide = (dir, after) => get(base + qs({ element: elementId, direction: dir, after }));
    let up, down;
    try {
      [up, down] = await Promise.all([fetchSide("up"), fetchSide("down")]);
    } catch (err) { box.replaceChildren(el("p", {}, err.message)); return; }
    const item = (i) => el("li", { class: "item", on: { click: () => showLineage(i.element_id) } },
      `${i.element_id} (${i.kind || "?"}, ${num(i.rows) ?? "?"} rows) via ${i.task_id}`);
    const list = (title, res, dir) => {
      const ul = el("ul", {}, ...res.items.map(item));
      if (!res.items.length) ul.append(el("li", { class: "muted" }, "none"));
      let next = res.next;
      const more = el("li", { class: "more" }, `+${num(res.more)} more`);
      more.addEventListener("click", async () => {  // the next page, by keyset
        const page = await fetchSide(dir, next);
        more.before(...page.items.map(item));
        next = page.next;
        if (page.more) more.textContent = `+${num(page.more)} more`; else more.remove();
      });
      if (res.more) ul.append(more);
      return el("div", { class: "side " + dir }, el("h4", {}, title), ul);
    };
    const e = up.element;
    box.replaceChildren(el("h4", {}, `${e.element_id} (${e.kind || "?"}, stage ${e.stage_id || "–"}, ${num(e.rows) ?? "?"} rows)`),
      list("came from (up one level)", up, "up"), list("went into (down one level)", down, "down"));
  }

  // -- domain data -----------------------------------------------------------------------------
  let domains = [];
  let domainNext = null;
  async function loadDomains() {
    try { domains = await get("/api/domains"); } catch (err) { $("domain-sql").textContent = err.message; return; }
    const sel = $("domain-dataset");
    const was = sel.value;
    sel.replaceChildren(...domains.map((d) => el("option", { value: d.dataset }, d.dataset)));
    if (was) sel.value = was;
    if (!domains.length) $("domain-sql").textContent = "no domain dataset declared yet";
  }
  function filterRow() {
    const d = domains.find((x) => x.dataset === $("domain-dataset").value);
    const cols = d ? Object.keys(d.columns) : [];
    return el("span", { class: "filter" },
      el("select", { class: "col" }, ...cols.map((c) => el("option", { value: c }, c))),
      el("select", { class: "op" }, ...["=", "!=", "<", "<=", ">", ">="].map((o) => el("option", { value: o }, o))),
      el("input", { class: "val", size: 8 }));
  }
  async function queryDomain(more) {
    const filters = [...document.querySelectorAll("#domain-filters .filter")]
      .filter((f) => f.querySelector(".val").value !== "")
      .map((f) => `${f.querySelector(".col").value}:${f.querySelector(".op").value}:${f.querySelector(".val").value}`);
    const ds = $("domain-dataset").value;
    if (!ds) return;
    const table = $("domain-table");
    try {
      const page = await get(`/api/domains/${encodeURIComponent(ds)}` + qs({ run: $("domain-run").value, f: filters, after: more ? domainNext : null }));
      $("domain-sql").textContent = page.sql + "\n-- " + JSON.stringify(page.params);
      const cols = page.rows.length ? Object.keys(page.rows[0]) : [];
      if (!more) {
        table.tHead.replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, c))));
        table.tBodies[0].replaceChildren();
      }
      table.tBodies[0].append(...page.rows.map((r) => el("tr", {}, ...Object.values(r).map((v) => cell(v)))));
      domainNext = page.next;
      $("domain-more").hidden = !page.next;
    } catch (err) {
      $("domain-sql").textContent = err.message;
    }
  }
  $("domain-add").addEventListener("click", () => $("domain-filters").append(filterRow()));
  $("domain-dataset").addEventListener("change", () => $("domain-filters").replaceChildren());
  $("domain-go").addEventListener("click", () => queryDomain(false));
  $("domain-more").addEventListener("click", () => queryDomain(true));

  // -- SQL console -------------------------------------------------------------------------
  async function runSql() {
    const table = $("sql-table");
    $("sql-note").textContent = "running…";
    try {
      const res = await get("/api/sql" + qs({ q: $("sql-text").value }));
      table.tHead.replaceChildren(el("tr", {}, ...res.columns.map((c) => el("th", {}, c))));
      table.tBodies[0].replaceChildren(...res.rows.map((r) => el("tr", {}, ...r.map((v) => cell(v)))));
      $("sql-note").textContent = `${res.rows.length} rows${res.truncated ? " (cut at the row cap)" : ""}, ${res.ms} ms`;
    } catch (err) {
      table.tHead.replaceChildren();
      table.tBodies[0].replaceChildren();
      $("sql-note").textContent = err.message;
    }
  }
  $("sql-go").addEventListener("click", runSql);

  bus.onStatus((name) => {  // the header's pill speaks for the explorer on its pages
    if (view === "streams") return;
    const pill = $("state");
    const [cls, label] = name === "open" ? ["live", "live"] : name === "retrying" ? ["disconnected", "disconnected, retrying"]
      : name === "paused" ? ["stale", "paused while the tab is hidden"] : ["connecting", "connecting"];
    pill.className = "state " + cls;
    pill.textContent = label;
  });

  route();
})();
