// busrig dashboard: renders the server's snapshots (event "state") and
// timeline entries (event "timeline") from GET /events, and sends actions
// to POST /action with the token from the page's address (#token=...).
// Everything is built with textContent: no string from a node or the bus
// is ever parsed as HTML.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("busrig-token");
if (token) sessionStorage.setItem("busrig-token", token);
let state = null;
const entries = [];
const MAX_ENTRIES = 2000;

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $ = (id) => document.getElementById(id);

function pad(n, w) { return String(n).padStart(w, "0"); }
function timeOfDay(ms) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${pad(d.getUTCMilliseconds(), 3)}`;
}
function ago(ms) {
  const now = state ? state.now_ms : Date.now();
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function stateCell(word, pending, extra) {
  const cls = `state s-${word || "unknown"}`;
  const text = pending ? `${word} (${pending})` : (word || "unknown");
  return h("span", { class: cls }, text, extra || null);
}

// ----- actions --------------------------------------------------------

function can(kind) { return !!(token && state && state.can && state.can[kind]); }

function actionButton(label, kind, action, fields, confirmText, choice) {
  const disabled = !can(kind);
  const why = !token ? "read-only: open the address the dashboard printed (with its #token)"
    : (disabled ? `this dashboard has no ${kind} credential` : null);
  const attrs = {
    type: "button", "data-action": action, disabled, title: why,
    onclick: () => confirmAction(Object.assign({ action }, fields), confirmText, choice),
  };
  for (const [k, v] of Object.entries(fields)) attrs[`data-${k}`] = v;
  return h("button", attrs, label);
}

let pending = null;
function confirmAction(body, text, choice) {
  pending = { body, choice };
  $("confirm-text").textContent = text;
  const label = $("confirm-choice-label");
  const sel = $("confirm-choice");
  sel.replaceChildren();
  if (choice) {
    $("confirm-choice-name").textContent = choice.label + " ";
    for (const [value, name] of choice.options) sel.append(h("option", { value }, name));
    label.hidden = false;
  } else {
    label.hidden = true;
  }
  $("confirm").showModal();
  (choice ? sel : $("confirm-ok")).focus();
}

$("confirm").addEventListener("close", async () => {
  const p = pending;
  pending = null;
  if (!p || $("confirm").returnValue !== "ok") return;
  const body = Object.assign({}, p.body);
  if (p.choice) {
    const v = $("confirm-choice").value;
    if (v !== "") body[p.choice.field] = p.choice.number ? Number(v) : v;
  }
  toast(`${body.action}: sent…`, false);
  try {
    const r = await fetch("/action", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (r.ok) toast(`done: ${j.done}`, false);
    else toast(`refused (HTTP ${r.status}): ${j.error || r.statusText}`, true);
  } catch (e) {
    toast(`the dashboard did not answer: ${e}`, true);
  }
});

let toastTimer = null;
function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 12000 : 5000);
}

// ----- views ----------------------------------------------------------

function renderHeader(s) {
  const c = s.cluster;
  $("cluster-name").textContent = c.name || "(no cluster answers)";
  $("quorum-owner").textContent = c.quorum_owner || "none";
  $("epoch").textContent = c.epoch ?? "-";
  $("quorum-model").textContent = c.quorum_model ? `${c.quorum_model}, ${c.profile}` : "-";
  $("asked").textContent = c.asked || "-";
  $("source").textContent = s.source;
  $("mode").textContent = token ? "" : "(read-only: no token in the address)";
}

function renderAlarms(s) {
  const ul = $("alarms");
  const active = s.alarms.filter((a) => a.active).length;
  const count = $("alarm-count");
  count.textContent = active ? String(active) : "";
  count.className = active ? "some" : "";
  if (!s.alarms.length) { ul.replaceChildren(h("li", { class: "none" }, "none")); return; }
  ul.replaceChildren(...s.alarms.map((a) => h("li", { class: a.active ? "active" : "past", "data-kind": a.kind },
    `${a.kind}: ${a.text} (since ${timeOfDay(a.since_ms)} UTC)`)));
}

// How long ago the node whose view is shown last heard this one, per
// network; a network silent past two heartbeats is marked.
function heard(n, c) {
  if (n.name === c.asked) return "(view shown)";
  const hb = n.heartbeat;
  if (!hb) return "-";
  const one = (ms) => ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
  const slow = (ms) => ms > 2 * heartbeatMs(c) ? " ⚠" : "";
  return `${one(hb.private_ms)}${slow(hb.private_ms)} / ${one(hb.public_ms)}${slow(hb.public_ms)}`;
}

// The heartbeat interval of the cluster's timing profile (README,
// "Quorum and membership").
function heartbeatMs(c) { return c.profile === "mscs2003" ? 1200 : 100; }

function renderNodes(s) {
  const c = s.cluster;
  const nets = [["both", "both networks"], ["private", "private (heartbeats)"], ["public", "public"]];
  const rows = c.nodes.map((n) => {
    const owner = c.quorum_owner === n.name;
    const acts = [];
    if (n.state === "offline") { /* pausing needs a member */ }
    else if (n.state === "paused") acts.push(actionButton("resume", "cluster", "node-resume", { node: n.name }, `Resume node ${n.name}? It takes groups again.`));
    else acts.push(actionButton("pause", "cluster", "node-pause", { node: n.name }, `Pause node ${n.name}? It keeps its groups but takes no new ones.`));
    if (s.can.lab) {
      if (n.process === "running" || n.process === "stopped") acts.push(actionButton("kill", "lab", "lab-kill", { node: n.name }, `Kill ${n.name} with SIGKILL? Its groups fail over.`));
      else acts.push(actionButton("start", "lab", "lab-start", { node: n.name }, `Start ${n.name}? It joins the cluster again.`));
      acts.push(actionButton("partition", "lab", "lab-partition", { node: n.name }, `Cut ${n.name}'s cluster traffic?`, { label: "network", field: "net", options: nets }));
      acts.push(actionButton("heal", "lab", "lab-heal", { node: n.name }, `Heal ${n.name}'s cluster traffic?`, { label: "network", field: "net", options: nets }));
    }
    const proc = n.process ? `${n.process}${n.pid ? ` (pid ${n.pid})` : ""}` : "-";
    return h("tr", { "data-node": n.name },
      h("td", {}, h("strong", {}, n.name), owner ? h("span", { class: "owner-badge", title: "quorum owner" }, "quorum owner") : null),
      h("td", { class: "node-state" }, stateCell(n.state)),
      h("td", { class: "heard" }, ""),
      h("td", {}, n.phase || "-", n.writes_held ? " (writes held)" : ""),
      h("td", { class: "mono", title: n.error || null }, n.arbitration || (n.error ? "does not answer" : "-")),
      h("td", {}, proc),
      h("td", {}, acts));
  });
  $("nodes").tBodies[0].replaceChildren(...rows);
}

// The heartbeat ages change every poll: their cells are updated in place,
// the rest of the table only when it changed.
function renderHeard(s) {
  for (const n of s.cluster.nodes) {
    const cell = document.querySelector(`#nodes tr[data-node="${CSS.escape(n.name)}"] td.heard`);
    if (cell) cell.textContent = heard(n, s.cluster);
  }
}

function renderGroups(s) {
  const c = s.cluster;
  const err = $("cluster-error");
  err.hidden = !c.error;
  err.textContent = c.error || "";
  const rows = [];
  const moveTo = (g) => [["", "best possible node"], ...c.nodes.filter((n) => n.name !== g.owner).map((n) => [n.name, n.name])];
  for (const g of c.groups) {
    const acts = [
      actionButton("move", "cluster", "group-move", { group: g.name }, `Move group ${g.name} (now on ${g.owner || "no node"})?`, { label: "to", field: "to", options: moveTo(g) }),
      g.target === "offline"
        ? actionButton("online", "cluster", "group-online", { group: g.name }, `Bring group ${g.name} online?`)
        : actionButton("offline", "cluster", "group-offline", { group: g.name }, `Take group ${g.name} offline? Its resources stop.`),
    ];
    const where = g.state_node && g.state_node !== g.owner ? ` (reported by ${g.state_node})` : "";
    rows.push(h("tr", { class: "group", "data-group": g.name },
      h("td", {}, h("strong", {}, g.name), g.target === "offline" ? " (kept offline)" : ""),
      h("td", { class: "group-state", title: g.reason || null }, stateCell(g.state, g.pending), where),
      h("td", { class: "group-owner" }, g.owner || "-"),
      h("td", {}, g.preferred.length ? g.preferred.join(", ") : "(any)"),
      h("td", { class: "failovers" }, String(g.failovers)),
      h("td", {}, acts)));
    for (const r of g.resources) {
      rows.push(h("tr", { class: "resource", "data-resource": r.name },
        h("td", {}, `${r.name} `, h("span", { class: "mono" }, r.kind)),
        h("td", { title: r.reason || null }, stateCell(r.state, r.pending), r.node ? ` on ${r.node}` : ""),
        h("td", {}, ""), h("td", {}, ""), h("td", {}, ""),
        h("td", {},
          actionButton("online", "cluster", "resource-online", { resource: r.name }, `Bring resource ${r.name} online?`),
          actionButton("offline", "cluster", "resource-offline", { resource: r.name }, `Take resource ${r.name} offline?`))));
    }
  }
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 6, class: "note" }, "no groups")));
  $("groups").tBodies[0].replaceChildren(...rows);
}

function nexus(n) {
  if (!n) return "-";
  if (!n.initiator) return "(all registrants)";
  return `${n.initiator} isid ${n.isid || "-"}`;
}

function renderBus(s) {
  const b = s.bus;
  const err = $("bus-error");
  err.hidden = !b.error;
  err.textContent = b.error || "";
  const st = b.status;
  if (!st) { $("buses").replaceChildren(h("p", { class: "note" }, b.control ? "no answer from the bus" : "no bus watched")); return; }
  $("buses").replaceChildren(...(st.buses || []).map((bus) => {
    const bw = bus.bandwidth ? ` · ${bus.bandwidth.name} ${(bus.bandwidth.bytes_per_sec / 1e6).toFixed(0)} MB/s shared by ${bus.bandwidth.shared_by}` : "";
    return h("p", { "data-bus": bus.name },
      h("strong", {}, `bus ${bus.name}`), ` ${bus.topology}${bus.max_initiators ? `, at most ${bus.max_initiators} initiators` : ""}; targets ${(bus.targets || []).join(", ")}${bw} `,
      actionButton("reset bus", "bus", "bus-reset", { bus: bus.name }, `Reset bus ${bus.name}? Every SCSI-2 reservation on it is cleared and every nexus gets unit attention 29/02.`));
  }));
  $("luns").replaceChildren(...(st.luns || []).map((l) => {
    const pr = l.pr_reservation;
    const dm = l.disk_model;
    const wc = l.write_cache;
    const rows = [
      ["size", `${(l.size_bytes / 1048576).toFixed(0)} MiB, ${l.block_size}-byte blocks${l.read_only ? ", read-only" : ""}`],
      ["SCSI-2 holder", nexus(l.scsi2_holder)],
      ["PR", pr ? `${pr.type} (${pr.type_name}) held by ${nexus(pr)}` : "none"],
      ["PRgeneration", `${l.pr_generation}${l.aptpl ? ", APTPL (persists power loss)" : ""}`],
      ["registrations", l.registrations.length ? l.registrations.map((r) => `${r.key} ${r.initiator} isid ${r.isid}`).join("\n") : "none"],
      ["pending UAs", l.unit_attentions.length ? l.unit_attentions.map((u) => `${u.initiator} isid ${u.isid}: ${u.pending.join(", ")}`).join("\n") : "none"],
      ["write cache", wc ? `${wc.mode}${wc.dirty_blocks ? `, ${wc.dirty_blocks} dirty blocks` : ""}` : "-"],
    ];
    if (dm) rows.push(["disk model", `${dm.model || "custom"}: ${dm.counters.ios} I/Os, ${dm.counters.backend_ops} back-end ops, ${dm.counters.split_ios} split`]);
    return h("div", { class: l.offline ? "lun offline" : "lun", "data-lun": String(l.lun) },
      h("h4", {}, h("span", {}, `LUN ${l.lun}`, l.offline ? h("span", { class: "state s-offline" }, " offline") : ""),
        actionButton("power-cycle", "bus", "lun-power-cycle", { lun: l.lun, target: l.target }, `Power-cycle LUN ${l.lun} of ${l.target}? Its volatile cache is lost and its SCSI-2 reservation cleared.`)),
      h("dl", {}, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { style: "white-space: pre-line" }, v)])));
  }));
  const faults = (st.faults && st.faults.paths) || {};
  const rows = (st.sessions || []).filter((x) => x.target).map((x) => {
    const cut = faults[x.initiator] && faults[x.initiator].cut;
    return h("tr", {},
      h("td", { class: "mono" }, x.initiator), h("td", { class: "mono" }, x.isid), h("td", { class: "mono" }, x.target),
      h("td", { class: "mono" }, x.peer || "-"), h("td", {}, String(x.commands_in_flight)),
      h("td", {}, cut
        ? actionButton("restore", "bus", "path-restore", { initiator: x.initiator }, `Restore the path of ${x.initiator}?`)
        : actionButton("cut", "bus", "path-cut", { initiator: x.initiator }, `Cut the path of ${x.initiator}? Its connections close and its logins are refused until restore.`)));
  });
  $("sessions").tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "note" }, "no sessions"))]));
  const items = [];
  for (const [ini, f] of Object.entries(faults)) {
    const words = [];
    if (f.frozen) words.push("frozen");
    if (f.delay_ms) words.push(`delayed ${f.delay_ms} ms`);
    if (f.cut) words.push("cut");
    if (f.fail_remaining) words.push(`next ${f.fail_remaining} commands fail (${f.fail_sense})`);
    items.push(h("li", {}, h("span", { class: "mono" }, ini), `: ${words.join(", ") || "none"} `,
      f.cut ? actionButton("restore", "bus", "path-restore", { initiator: ini }, `Restore the path of ${ini}?`) : null));
  }
  for (const o of (st.faults && st.faults.offline_luns) || []) items.push(h("li", {}, `LUN ${o.lun} of ${o.target} offline`));
  $("faults").replaceChildren(...(items.length ? items : [h("li", { class: "note" }, "none")]));
}

function renderBench(s) {
  const rows = s.bench.rates.map((r) => {
    const max = Math.max(1, ...r.history);
    const pts = r.history.map((v, i) => `${(i / Math.max(1, r.history.length - 1)) * 180},${28 - (v / max) * 26}`).join(" ");
    return h("tr", {},
      h("td", {}, r.what), h("td", {}, r.ops_per_s.toFixed(0)), h("td", {}, (r.bytes_per_s / 1e6).toFixed(2)),
      h("td", {}, `${r.mean_queue_us.toFixed(0)} µs`),
      h("td", {}, r.mean_service_us === null ? "-" : `${r.mean_service_us.toFixed(0)} µs`),
      h("td", {}, svg("svg", { class: "spark", viewBox: "0 0 180 28", "aria-label": `peak ${max.toFixed(0)} per s` }, svg("polyline", { points: pts }))));
  });
  $("bench").tBodies[0].replaceChildren(...(rows.length ? rows
    : [h("tr", {}, h("td", { colspan: 6, class: "note" }, "this bus has no disk model and no bandwidth model, so it keeps no I/O counters (see README, bus configuration)"))]));
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

// ----- timeline -------------------------------------------------------

function addOptions(sel, values) {
  const have = new Set([...sel.options].map((o) => o.value));
  for (const v of values) if (!have.has(String(v))) sel.append(h("option", { value: String(v) }, String(v)));
}

function renderTimeline() {
  addOptions($("f-node"), [...new Set(entries.flatMap((e) => e.nodes))].sort());
  addOptions($("f-group"), [...new Set(entries.flatMap((e) => e.groups))].sort());
  addOptions($("f-lun"), [...new Set(entries.flatMap((e) => e.luns))].sort((a, b) => a - b));
  const fn = $("f-node").value, fg = $("f-group").value, fl = $("f-lun").value, fs = $("f-source").value;
  const ft = $("f-text").value.toLowerCase();
  const shown = entries.filter((e) => (!fn || e.nodes.includes(fn)) && (!fg || e.groups.includes(fg))
    && (!fl || e.luns.includes(Number(fl))) && (!fs || e.source === fs) && (!ft || e.text.toLowerCase().includes(ft)));
  const items = shown.slice(-400).reverse().map((e) => h("li", { "data-source": e.source },
    h("span", { class: "t", title: ago(e.ms) }, timeOfDay(e.ms)),
    h("span", { class: `src src-${e.source}` }, e.source),
    h("span", {}, e.text)));
  $("timeline").replaceChildren(...items);
  renderAxis(shown);
}

// The last five minutes, one lane per source, a tick per entry.
function renderAxis(shown) {
  const el = $("axis");
  const w = el.clientWidth || 800, lanes = ["cluster", "bus", "node-log", "observed", "action"];
  const now = state ? state.now_ms : Date.now(), span = 300000, left = 70;
  const x = (ms) => left + ((ms - (now - span)) / span) * (w - left - 6);
  const kids = lanes.map((l, i) => svg("text", { x: 4, y: 12 + i * 13 }, document.createTextNode(l)));
  for (let m = 0; m <= 5; m++) {
    const t = now - span + m * 60000;
    kids.push(svg("line", { x1: x(t), x2: x(t), y1: 0, y2: 68, stroke: "#d0d7de" }));
    kids.push(svg("text", { x: x(t) - 16, y: 78 }, document.createTextNode(m === 5 ? "now" : `-${5 - m} min`)));
  }
  for (const e of shown) {
    if (e.ms < now - span) continue;
    const i = lanes.indexOf(e.source);
    kids.push(svg("rect", { x: x(e.ms) - 1, y: 3 + i * 13, width: 3, height: 10, fill: "#0b5cad" },
      svg("title", {}, document.createTextNode(`${timeOfDay(e.ms)} ${e.text}`))));
  }
  el.setAttribute("viewBox", `0 0 ${w} 82`);
  el.replaceChildren(...kids);
}

for (const id of ["f-node", "f-group", "f-lun", "f-source", "f-text"]) $(id).addEventListener("input", renderTimeline);

// ----- the stream -----------------------------------------------------

// Each view is rebuilt only when what it shows changed, so a button is
// not replaced under the pointer or the keyboard focus by a poll that
// changed nothing.
const shown = {};
function changed(view, data) {
  const key = JSON.stringify(data);
  if (shown[view] === key) return false;
  shown[view] = key;
  return true;
}

function render() {
  // Before the server's first round its state is empty.
  if (!state || !state.cluster) return;
  const s = state;
  const c = s.cluster;
  const can = [s.can, !!token];
  if (changed("header", [c.name, c.quorum_owner, c.epoch, c.quorum_model, c.profile, c.asked, s.source, token])) renderHeader(s);
  if (changed("alarms", s.alarms)) renderAlarms(s);
  const nodes = c.nodes.map((n) => Object.assign({}, n, { heartbeat: null }));
  if (changed("nodes", [nodes, c.quorum_owner, c.asked, can])) renderNodes(s);
  renderHeard(s);
  if (changed("groups", [c.groups, c.nodes.map((n) => n.name), c.error, can])) renderGroups(s);
  const bus = s.bus.status ? Object.assign({}, s.bus.status, { now_ms: 0, events: 0 }) : null;
  if (changed("bus", [bus, s.bus.error, s.bus.control, can])) renderBus(s);
  if (changed("bench", s.bench)) renderBench(s);
}

function connect() {
  const es = new EventSource("/events");
  es.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "conn up"; });
  es.addEventListener("error", () => { $("conn").textContent = "reconnecting…"; $("conn").className = "conn down"; });
  es.addEventListener("state", (ev) => {
    // Keep the focus on the same button across a re-render.
    const f = document.activeElement;
    const key = f && f.dataset && f.dataset.action ? [f.dataset.action, f.dataset.node, f.dataset.group, f.dataset.resource, f.dataset.lun, f.dataset.initiator, f.dataset.bus] : null;
    state = JSON.parse(ev.data);
    render();
    if (key) {
      const again = [...document.querySelectorAll("button[data-action]")].find((b) =>
        [b.dataset.action, b.dataset.node, b.dataset.group, b.dataset.resource, b.dataset.lun, b.dataset.initiator, b.dataset.bus].join("|") === key.join("|"));
      if (again) again.focus();
    }
    renderAxis(entries);
  });
  es.addEventListener("timeline", (ev) => {
    for (const e of JSON.parse(ev.data)) entries.push(e);
    entries.sort((a, b) => a.ms - b.ms || a.seq - b.seq);
    if (entries.length > MAX_ENTRIES) entries.splice(0, entries.length - MAX_ENTRIES);
    renderTimeline();
  });
}

// Keyboard: a, c, b, t, n jump to a view; / searches the timeline.
document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || $("confirm").open) return;
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea") return;
  if (ev.key === "/") { ev.preventDefault(); $("f-text").focus(); return; }
  const link = document.querySelector(`nav a[data-key="${ev.key}"]`);
  if (link) {
    ev.preventDefault();
    const target = document.querySelector(link.getAttribute("href"));
    target.scrollIntoView();
    target.querySelector("h2").focus();
  }
});

// Keep the token out of the address bar and the history; the tab keeps
// it (sessionStorage) for a reload.
if (location.hash.includes("token=")) history.replaceState(null, "", location.pathname);
connect();
