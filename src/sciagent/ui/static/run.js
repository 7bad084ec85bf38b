// One run's page: header, failure or outcome, pending approvals, actions, live timeline, tasks, jobs,
// telemetry, files.
// The timeline grows from /api/runs/<id>/stream; the other panels are re-read (debounced) when a row arrives.
import { badge, bytes, clock, el, fill, flash, getJSON, postJSON, pretty, seconds, setLive, stream } from "./dom.js";
import { drawTelemetry } from "./plots.js";
import { timelineEntry } from "./timeline.js";

const SESSION_KINDS = new Set(["session", "sub-agent"]);

/** Renders run `id` into `main`; returns a function that closes its stream. */
export function showRun(main, id) {
  document.getElementById("where").textContent = id;
  const path = `/api/runs/${encodeURIComponent(id)}`;
  const panels = {
    header: el("section", { id: "run-header", class: "run-header" }),
    failure: el("section", { id: "failure", class: "panel failure", hidden: true }),
    outcome: el("section", { id: "outcome", class: "panel outcome", hidden: true }),
    approvals: el("section", { id: "approvals", class: "panel approvals", hidden: true }),
    actions: el("section", { id: "actions", class: "actions" }),
    telemetry: el("section", { id: "telemetry", class: "panel", hidden: true }),
    tasks: el("section", { id: "tasks", class: "panel", hidden: true }),
    jobs: el("section", { id: "jobs", class: "panel", hidden: true }),
    files: el("section", { id: "files", class: "panel", hidden: true }),
    children: el("section", { id: "children", class: "panel", hidden: true }),
  };
  const timeline = el("ol", { id: "timeline", class: "timeline" });
  fill(main, el("p", { class: "crumbs" }, el("a", { href: "#/" }, "← all runs")),
    panels.header, panels.failure, panels.outcome, panels.approvals, panels.actions,
    el("div", { class: "columns" },
      el("section", { class: "panel wide" }, el("h2", {}, "Timeline"), timeline),
      el("div", { class: "side" }, panels.telemetry, panels.tasks, panels.jobs, panels.files, panels.children)));

  let source = null;
  let closed = false;
  let timer = null;
  let reading = false;
  let again = false;
  const rows = new Map();

  function addItem(item) {
    const key = `${item.table}:${item.id}`;
    const node = timelineEntry(item);
    const old = rows.get(key);
    if (old) old.replaceWith(node); else timeline.append(node);
    rows.set(key, node);
  }

  function refresh() {  // the summary panels, re-read after rows arrive (one read at a time, 300 ms apart)
    if (closed || timer) return;
    if (reading) { again = true; return; }
    timer = setTimeout(() => {
      timer = null;
      reading = true;
      getJSON(path).then((detail) => { if (!closed) drawPanels(detail); })
        .catch((error) => flash(error.message))
        .finally(() => { reading = false; if (again) { again = false; refresh(); } });
    }, 300);
  }

  function drawPanels(detail) {
    const run = detail.run;
    drawHeader(panels.header, run);
    drawFailure(panels.failure, detail.failure);
    drawOutcome(panels.outcome, detail.outcome);
    drawApprovals(panels.approvals, id, detail.approvals || []);
    drawActions(panels.actions, run);
    drawTasks(panels.tasks, id, detail.tasks || []);
    drawJobs(panels.jobs, detail.jobs || []);
    drawTelemetry(panels.telemetry, detail.telemetry || []);
    drawFiles(panels.files, detail.files || []);
    drawChildren(panels.children, detail.children || []);
  }

  getJSON(path).then((detail) => {
    if (closed) return;
    drawPanels(detail);
    for (const item of detail.items || []) addItem(item);
    source = stream(`${path}/stream?after=${encodeURIComponent(detail.cursor ?? "")}`, {
      row: (item) => { addItem(item); refresh(); },
      telemetry: (data) => drawTelemetry(panels.telemetry, data.telemetry || []),
    });
  }).catch((error) => { setLive("offline"); fill(panels.header, el("h1", {}, "Run not shown")); flash(error.message); });

  return () => { closed = true; if (source) source.close(); clearTimeout(timer); };
}

function drawHeader(node, run) {
  const parts = [
    run.kind, run.duration_s !== null && run.duration_s !== undefined ? `ran ${seconds(run.duration_s)}` : null,
    `started ${clock(run.created_at)}`, run.finished_at ? `finished ${clock(run.finished_at)}` : null,
  ].filter(Boolean);
  fill(node,
    el("h1", { id: "goal" }, run.goal || run.id),
    el("div", { class: "meta" }, badge(run.status), " ", el("span", { class: "mono" }, run.id), " · ", parts.join(" · "),
      run.parent ? [" · parent ", el("a", { href: `#/runs/${encodeURIComponent(run.parent)}` }, run.parent)] : null));
}

function drawFailure(node, failure) {
  node.hidden = !failure;
  if (!failure) return;
  fill(node, el("h2", {}, "Failure"),
    failure.run_error ? el("p", { class: "err", id: "run-error" }, failure.run_error) : null,
    (failure.tasks || []).map((task) => el("div", { class: "failed-task" },
      el("h3", {}, el("span", { class: "mono" }, task.key), " ", el("span", { class: "fclass" }, task.failure_class || "failed")),
      el("p", {}, task.message || ""),
      task.log_tail && task.log_tail.length ? [
        el("div", { class: "muted" }, `last lines of ${task.log_path || "the log"}`),
        el("pre", { class: "log" }, task.log_tail.join("\n"))] : null)));
}

function drawOutcome(node, outcome) {  // what a finished run found: findings, answer, result
  node.hidden = !outcome;
  if (!outcome) return;
  fill(node, el("h2", {}, outcome.title), el("ul", { class: "outcome" }, (outcome.lines || []).map((line) => el("li", {}, line))));
}

function drawApprovals(node, runId, approvals) {
  node.hidden = !approvals.length;
  fill(node, el("h2", {}, `Waiting for approval (${approvals.length})`), approvals.map((a) => {
    const answer = (approve) => async (event) => {
      for (const b of event.target.parentElement.querySelectorAll("button")) b.disabled = true;
      try {
        await postJSON(`/api/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(a.request)}`, { approve });
        flash(`${approve ? "approved" : "declined"}: ${a.summary || a.request}`, "ok");
      } catch (error) {
        flash(error.message);
        for (const b of event.target.parentElement.querySelectorAll("button")) b.disabled = false;
      }
    };
    const facts = Object.entries(a.facts || {});
    return el("article", { class: "approval", "data-request": a.request },
      el("h3", {}, a.summary || a.tool || a.request),
      (a.effects || []).length ? el("p", {}, "effects: ", a.effects.map((e) => el("span", { class: "effect" }, e))) : null,
      a.reason ? el("p", { class: "muted" }, `why asked: ${a.reason}`) : null,
      facts.length ? el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, pretty(v))])) : null,
      a.arguments ? el("details", {}, el("summary", {}, "arguments"), el("pre", {}, pretty(a.arguments))) : null,
      a.detail || a.preview ? el("pre", { class: "preview" }, pretty(a.detail || a.preview)) : null,
      el("div", { class: "buttons" },
        el("button", { class: "approve", onclick: answer(true) }, "Approve"),
        el("button", { class: "decline", onclick: answer(false) }, "Decline")));
  }));
}

function drawActions(node, run) {
  const canTell = SESSION_KINDS.has(run.kind) && !["completed", "failed"].includes(run.status);
  const canStop = run.kind === "study" && run.status === "running";
  if (node.dataset.drawn === `${canTell}:${canStop}`) return;  // keep what the user is typing
  node.dataset.drawn = `${canTell}:${canStop}`;
  fill(node);
  if (canTell) {
    const input = el("input", { type: "text", id: "tell-text", placeholder: "tell the session something (read before its next model call)", "aria-label": "tell" });
    const form = el("form", { id: "tell", class: "tell", onsubmit: async (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      try {
        await postJSON(`/api/runs/${encodeURIComponent(run.id)}/tell`, { text: input.value });
        flash("told", "ok");
        input.value = "";
      } catch (error) { flash(error.message); }
    } }, input, el("button", { type: "submit" }, "Tell"));
    node.append(form);
  }
  if (canStop) {
    node.append(el("button", { id: "stop", class: "danger", onclick: async () => {
      if (!window.confirm("Stop this study? It finishes the running batch and can be resumed.")) return;
      try { await postJSON(`/api/runs/${encodeURIComponent(run.id)}/stop`, { reason: "stopped from the web UI" }); flash("stop asked", "ok"); }
      catch (error) { flash(error.message); }
    } }, "Stop study"));
  }
}

function drawTasks(node, runId, tasks) {
  node.hidden = !tasks.length;
  fill(node, el("h2", {}, `Tasks (${tasks.length})`), el("table", { class: "tasks" },
    el("thead", {}, el("tr", {}, ["task", "status", "where", "tries", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, tasks.map((t) => el("tr", { "data-task": t.key },
      el("td", { class: "mono" }, t.key), el("td", {}, badge(t.status), t.error ? el("div", { class: "err" }, t.error) : null),
      el("td", {}, t.executor || "", t.remote_id ? el("div", { class: "muted mono" }, t.remote_id) : null),
      el("td", { class: "num" }, t.attempts ?? ""),
      el("td", {}, ["running", "pending"].includes(t.status) ? el("button", { class: "cancel", onclick: async (event) => {
        event.target.disabled = true;
        try { await postJSON(`/api/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(t.key)}/cancel`, {}); flash(`cancel asked: ${t.key}`, "ok"); }
        catch (error) { event.target.disabled = false; flash(error.message); }
      } }, "Cancel") : null))))));
}

function drawJobs(node, jobs) {
  node.hidden = !jobs.length;
  fill(node, el("h2", {}, "Batch jobs"), el("table", {},
    el("thead", {}, el("tr", {}, ["job", "site", "state", "walltime", "left"].map((h) => el("th", {}, h)))),
    el("tbody", {}, jobs.map((j) => el("tr", {},
      el("td", { class: "mono" }, j.job_id), el("td", {}, `${j.site || ""} ${j.scheduler ? `(${j.scheduler})` : ""}`),
      el("td", {}, badge(j.state)), el("td", { class: "num" }, seconds(j.walltime_s)),
      el("td", { class: "num" }, j.walltime_left_s === null || j.walltime_left_s === undefined ? "—" : seconds(j.walltime_left_s)))))));
}

function drawFiles(node, files) {
  node.hidden = !files.length;
  const report = files.find((f) => /(^|\/)report\.html$/.test(f.path));
  fill(node, el("h2", {}, "Files"),
    report ? el("iframe", { class: "report", sandbox: "", src: report.url, title: "report" }) : null,
    el("ul", { class: "files" }, files.map((f) => el("li", {},
      el("a", { href: f.url, download: f.path.split("/").pop() }, f.path), " ", el("span", { class: "muted" }, `${f.kind || ""} ${bytes(f.size)}`)))));
}

function drawChildren(node, children) {
  node.hidden = !children.length;
  fill(node, el("h2", {}, "Sub-runs"), el("ul", {}, children.map((c) => el("li", {},
    el("a", { href: `#/runs/${encodeURIComponent(c.id)}` }, c.id), " ", badge(c.status), " ", c.goal || ""))));
}

