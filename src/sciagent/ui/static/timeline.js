// One timeline row per journal row (Item): steps, model calls, tasks, events, artifacts, the run itself.
// Every string from the journal goes in as text (el() makes text nodes), never as markup.
import { badge, clock, el, parsed, pretty, seconds } from "./dom.js";

/** The <li> for an Item; a later Item with the same table and id replaces it (an update in place). */
export function timelineEntry(item) {
  const kind = KINDS[item.table] || other;
  return el("li", { class: `item t-${item.table} s-${item.status || ""}`, "data-key": `${item.table}:${item.id}`, "data-seq": item.seq ?? "" },
    el("span", { class: "time" }, clock(item.time)),
    el("span", { class: "what" }, kind.label(item)),
    el("div", { class: "body" }, kind.body(item)));
}

const other = { label: (item) => item.table, body: (item) => item.text || "" };

const KINDS = {
  run: { label: () => "run", body: (item) => [badge(item.status), " ", item.error || item.text || ""] },
  step: { label: (item) => item.kind || "step", body: step },
  model_call: { label: () => "model", body: modelCall },
  task: { label: () => "task", body: task },
  event: { label: (item) => eventKind(item), body: event },
  artifact: { label: () => "file", body: (item) => [item.kind ? `${item.kind}: ` : "", el("span", { class: "mono" }, item.path || item.text || "")] },
};

function step(item) {
  const data = parsed(item.data);
  const duration = item.duration_s !== null && item.duration_s !== undefined ? ` · ${seconds(item.duration_s)}` : "";
  if (item.kind === "message" && data.message) return message(data, item);
  if (item.kind === "tool_call") {
    const call = data.record || data.call || {};
    const args = call.arguments ?? call.raw;
    return [
      el("div", {}, badge(item.status), " ", el("b", { class: "mono" }, call.tool || item.summary || ""), duration),
      args !== undefined ? el("pre", { class: "args" }, pretty(args)) : null,
      data.record?.error ? el("div", { class: "err" }, data.record.error) : null,
      data.record && data.record.result !== undefined && data.record.result !== null
        ? el("details", {}, el("summary", {}, "result"), el("pre", {}, pretty(data.record.result))) : null];
  }
  return [badge(item.status), " ", item.summary || item.text || "", duration];
}

function message(data, item) {
  const m = data.message;
  const who = data.told !== undefined ? "told" : m.role;
  const calls = (data.calls || []).map((c) => el("div", { class: "call" }, "→ ", el("span", { class: "mono" }, c.tool || ""), " ",
    el("span", { class: "muted" }, typeof c.raw === "string" ? c.raw : pretty(c.raw))));
  const content = typeof m.content === "string" ? m.content : m.content ? pretty(m.content) : "";
  const long = m.role === "system" || (m.role === "tool" && content.length > 240);
  return [el("span", { class: `role r-${who}` }, who), " ",
    long ? el("details", {}, el("summary", {}, content.slice(0, 120)), el("pre", {}, content))
      : el("span", { class: m.role === "assistant" ? "answer" : "text" }, content || item.summary || ""),
    calls];
}

function modelCall(item) {
  const tokens = [item.prompt_tokens, item.completion_tokens].every((n) => n === null || n === undefined)
    ? "" : ` · ${item.prompt_tokens ?? "?"}→${item.completion_tokens ?? "?"} tokens`;
  return [badge(item.outcome || item.status), " ", item.purpose || "", " · ", el("span", { class: "mono" }, item.model_id || ""),
    item.latency_s !== null && item.latency_s !== undefined ? ` · ${seconds(item.latency_s)}` : "", tokens,
    item.attempt > 1 ? ` · attempt ${item.attempt}` : "", item.error ? el("div", { class: "err" }, item.error) : null];
}

function task(item) {
  return [badge(item.status), " ", el("span", { class: "mono" }, item.key || ""), " on ", item.executor || "?",
    item.attempts ? ` · try ${item.attempts}` : "", item.error ? el("div", { class: "err" }, item.error) : null];
}

function eventKind(item) {
  const data = parsed(item.data);
  return { approval_request: "approval?", approval_answer: "approval", tell: "told", batch_job: "job" }[data.kind] || item.level || "event";
}

function event(item) {
  const data = parsed(item.data);
  if (data.kind === "tell") return el("span", { class: "told" }, data.text ?? item.message ?? "");
  if (data.kind === "approval_request") return [el("b", {}, data.summary || item.message || ""), data.tool ? [" · ", el("span", { class: "mono" }, data.tool)] : null];
  if (data.kind === "approval_answer") return [badge(data.approved ? "approved" : "declined"), ` by ${data.by || "?"}`, data.reason ? ` · ${data.reason}` : ""];
  if (data.kind === "batch_job") return [el("span", { class: "mono" }, data.job_id || ""), " ", badge(data.state || ""), " ", item.message || ""];
  return [item.level && item.level !== "info" ? badge(item.level) : null, " ", item.message || item.text || ""];
}
