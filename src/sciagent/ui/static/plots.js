// Telemetry plots drawn as SVG (no plotting library): one small line chart per series, a % done bar and
// the health badges, for each simulation whose state file the server read.
import { clock, el, fill } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 300, H = 90, PAD = { l: 46, r: 6, t: 8, b: 16 };
const SERIES = [
  ["potential_kj_mol", "potential energy (kJ/mol)"],
  ["temperature_k", "temperature (K)"],
  ["speed_ns_day", "speed (ns/day)"],
];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

/** Redraws the telemetry panel from a list of Telemetry objects (see the contract's shapes). */
export function drawTelemetry(node, telemetry) {
  node.hidden = !telemetry.length;
  fill(node, el("h2", {}, "Simulations"), telemetry.map((t) => {
    const done = t.done_fraction === null || t.done_fraction === undefined ? null : Math.max(0, Math.min(1, t.done_fraction));
    return el("div", { class: "telemetry", "data-key": t.key },
      el("h3", {}, el("span", { class: "mono" }, t.key), " ", el("span", { class: "muted" }, `${t.rows ?? 0} rows · updated ${clock(t.last_update)}`)),
      el("div", { class: "health" }, (t.badges || []).map((b) => el("span", { class: `health-badge h-${b.level}`, title: b.text || "" }, `${b.name}: ${b.text || b.level}`))),
      done === null ? null : doneBar(done),
      el("div", { class: "plots" }, SERIES.map(([name, title]) =>
        chart(t.series?.time_ps || [], t.series?.[name] || [], title, name === "temperature_k" ? t.target_temperature_k : null))));
  }));
}

function doneBar(done) {
  const pct = `${(done * 100).toFixed(0)} %`;
  return el("div", { class: "done" }, svgBar(done), " ", pct, " done");
}

function svgBar(done) {
  return svg("svg", { class: "bar", width: 160, height: 10, viewBox: "0 0 160 10", role: "img", "aria-label": "done" },
    svg("rect", { x: 0, y: 0, width: 160, height: 10, class: "bar-bg" }),
    svg("rect", { x: 0, y: 0, width: (160 * done).toFixed(1), height: 10, class: "bar-fg" }));
}

/** A line chart of ys against xs (non-finite values are left out; the health badge says so). */
function chart(xs, ys, title, target) {
  const points = [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i += 1) {
    const x = Number(xs[i]), y = Number(ys[i]);
    if (Number.isFinite(x) && Number.isFinite(y)) points.push([x, y]);
  }
  const box = svg("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": title, "data-series": title });
  box.append(svg("title", {}, title));
  const label = svg("text", { x: PAD.l, y: PAD.t - 1, class: "plot-title" });
  label.textContent = title;
  if (!points.length) {
    const none = svg("text", { x: W / 2, y: H / 2, class: "plot-empty", "text-anchor": "middle" });
    none.textContent = "no rows yet";
    box.append(label, none);
    return box;
  }
  const [x0, x1] = range(points.map((p) => p[0]));
  const [y0, y1] = range(points.map((p) => p[1]).concat(target ? [target] : []));
  const sx = (x) => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
  const sy = (y) => H - PAD.b - ((y - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
  box.append(svg("rect", { x: PAD.l, y: PAD.t, width: W - PAD.l - PAD.r, height: H - PAD.t - PAD.b, class: "plot-bg" }), label);
  if (target) box.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: sy(target), y2: sy(target), class: "target" }));
  box.append(svg("polyline", { class: "series", points: points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") }));
  for (const [value, y] of [[y1, PAD.t + 8], [y0, H - PAD.b]]) {
    const tick = svg("text", { x: PAD.l - 3, y, class: "tick", "text-anchor": "end" });
    tick.textContent = short(value);
    box.append(tick);
  }
  const last = svg("text", { x: W - PAD.r, y: H - 3, class: "tick", "text-anchor": "end" });
  last.textContent = `${short(x1)} ps`;
  box.append(last);
  return box;
}

function range(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { const pad = Math.abs(lo) * 0.01 || 1; lo -= pad; hi += pad; }
  return [lo, hi];
}

function short(v) {
  const a = Math.abs(v);
  if (a >= 1e5) return v.toExponential(1);
  if (a >= 100) return v.toFixed(0);
  return v.toPrecision(3);
}
