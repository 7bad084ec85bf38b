// sciagent ui: hash routes `#/` (runs list) and `#/runs/<id>` (one run). No framework, no CDN.
import { badge, el, fill, flash, getJSON, seconds, setLive, stream } from "./dom.js";
import { showRun } from "./run.js";

const STATUSES = ["running", "failed", "completed", "queued", "interrupted"];
const KINDS = ["study", "session", "sub-agent", "eval", "chem", "mcp"];
let closeView = () => {};

function route() {
  closeView();
  closeView = () => {};
  flash("");
  const main = document.getElementById("main");
  const match = location.hash.match(/^#\/runs\/([^/?#]+)/);
  if (match) {
    closeView = showRun(main, decodeURIComponent(match[1]));
  } else {
    closeView = showRuns(main);
  }
}

/** The runs list: counters, filters, a row per run, kept current by /api/stream. */
function showRuns(main) {
  document.getElementById("where").textContent = "runs";
  const runs = new Map();
  const filters = { kind: "", status: "", q: "" };
  const counters = el("div", { class: "counters", id: "counters" });
  const body = el("tbody", { id: "runs" });
  const select = (name, values) =>
    el("select", { name, "aria-label": name, onchange: (e) => { filters[name] = e.target.value; draw(); } },
      el("option", { value: "" }, `any ${name}`), values.map((v) => el("option", { value: v }, v)));
  const text = el("input", { type: "search", name: "q", placeholder: "search goals and ids", "aria-label": "search",
    oninput: (e) => { filters.q = e.target.value.trim().toLowerCase(); draw(); } });
  fill(main,
    counters,
    el("div", { class: "filters" }, select("kind", KINDS), select("status", STATUSES), text),
    el("table", { class: "runs" },
      el("thead", {}, el("tr", {}, ["run", "kind", "status", "age", "goal", "tasks", "approvals"].map(
        (h) => el("th", {}, h)))),
      body));

  function visible(run) {
    if (filters.kind && run.kind !== filters.kind) return false;
    if (filters.status && run.status !== filters.status) return false;
    if (filters.q && !`${run.id} ${run.goal || ""}`.toLowerCase().includes(filters.q)) return false;
    return true;
  }

  function draw() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const run of runs.values()) counts[run.status] = (counts[run.status] || 0) + 1;
    fill(counters, STATUSES.map((s) =>
      el("button", { class: `counter s-${s}`, "data-status": s, title: `show ${s} runs`,
        onclick: () => { filters.status = filters.status === s ? "" : s; main.querySelector("select[name=status]").value = filters.status; draw(); } },
        el("b", {}, String(counts[s])), ` ${s}`)));
    const ordered = [...runs.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    fill(body, ordered.filter(visible).map(row));
    if (!body.childElementCount) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no runs match")));
  }

  let source = null;
  getJSON("/api/runs").then((snapshot) => {
    for (const run of snapshot.runs) runs.set(run.id, run);
    draw();
    source = stream(`/api/stream?after=${encodeURIComponent(snapshot.cursor ?? "")}`, {
      run: (run) => { runs.set(run.id, run); draw(); },
    });
  }).catch((error) => { setLive("offline"); flash(error.message); });
  return () => source && source.close();
}

function row(run) {
  const tasks = Object.entries(run.tasks || {}).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(", ");
  const pending = run.pending_approvals || 0;
  return el("tr", { "data-run": run.id, class: `s-${run.status}` },
    el("td", { class: "mono" }, el("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id)),
    el("td", {}, run.kind, run.parent ? el("span", { class: "muted" }, " ↳") : null),
    el("td", {}, badge(run.status)),
    el("td", { class: "num" }, seconds(run.age_s)),
    el("td", { class: "goal", title: run.goal || "" }, run.goal || "", run.error ? el("div", { class: "err" }, run.error) : null),
    el("td", {}, tasks || el("span", { class: "muted" }, "—")),
    el("td", { class: "num" }, pending ? el("span", { class: "badge s-pending" }, `${pending} waiting`) : ""));
}

window.addEventListener("hashchange", route);
route();
