// Small DOM and HTTP helpers. Journal text is untrusted: it only ever becomes a text node here
// (el() children and textContent); nothing in this page assigns innerHTML.

const TOKEN = document.querySelector('meta[name="sciagent-token"]')?.content || "";

/** An element with attributes (set with setAttribute) and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Appends children; strings and numbers as text nodes, null/undefined skipped, arrays flattened. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function badge(status) {
  return el("span", { class: `badge s-${String(status || "unknown").replace(/[^a-z-]/g, "")}` }, status || "?");
}

/** GET a JSON API path; throws an Error carrying the server's one-line reason. */
export async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  return answer(response);
}

/** POST JSON with the token header (state-changing requests need it, and a same-origin Origin). */
export async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Sciagent-Token": TOKEN },
    body: JSON.stringify(body || {}),
  });
  return answer(response);
}

async function answer(response) {
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status} from ${response.url}`);
  return body;
}

/** Shows a one-line message at the top of the page (an action's outcome or an error). */
export function flash(text, level = "error") {
  const box = document.getElementById("flash");
  box.className = `flash ${level}`;
  box.hidden = !text;
  box.textContent = text || "";
}

/** The connection indicator: "live" while a stream is open, "reconnecting" after it dropped. */
export function setLive(state) {
  const node = document.getElementById("live");
  node.dataset.state = state;
  node.textContent = state;
}

/** An EventSource whose open/error states drive the indicator; `handlers` maps event names to callbacks. */
export function stream(url, handlers) {
  const source = new EventSource(url);
  source.onopen = () => setLive("live");
  source.onerror = () => setLive(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      handle(data, message);
    });
  }
  return source;
}

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "";
  const s = Math.max(0, Number(value));
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A time of day from an ISO string or Unix seconds. */
export function clock(when) {
  if (!when) return "";
  const date = new Date(typeof when === "number" ? when * 1000 : when);
  return Number.isNaN(date.getTime()) ? String(when) : date.toLocaleTimeString([], { hour12: false });
}

/** JSON or text, pretty, for a <pre>. */
export function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value, null, 2);
}

/** A row field that may arrive as a JSON string or already parsed. */
export function parsed(value) {
  if (typeof value !== "string") return value || {};
  try { return JSON.parse(value); } catch { return {}; }
}
