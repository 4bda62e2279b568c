// Small SVG charts, no library: a sparkline for a table cell and a line chart with
// axes for the live panels. Series are arrays of [epoch seconds, value].

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

export function human(n, unit = "") {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  const abs = Math.abs(n);
  if (unit === "B") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, v = n;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(Math.round(v))) + " " + units[i];
  }
  if (abs >= 1e6) return (n / 1e6).toFixed(1) + "M" + unit;
  if (abs >= 1e4) return (n / 1e3).toFixed(1) + "k" + unit;
  if (abs >= 100 || Number.isInteger(n)) return Math.round(n) + unit;
  return n.toFixed(1) + unit;
}

function path(points, x, y) {
  return points.map(([t, v], i) => (i ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1))
    .join(" ");
}

// A sparkline: one series, no axes; its last value in the title for screen readers.
export function sparkline(values, label) {
  const w = 120, h = 28;
  const svg = el("svg", {viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img",
                         class: "spark"});
  const last = values.length ? values[values.length - 1][1] : null;
  const title = el("title");
  title.textContent = `${label}: ${human(last)}`;
  svg.appendChild(title);
  if (values.length > 1) {
    const t0 = values[0][0], t1 = values[values.length - 1][0];
    const max = Math.max(1, ...values.map(p => p[1]));
    const x = t => ((t - t0) / Math.max(1e-9, t1 - t0)) * (w - 2) + 1;
    const y = v => h - 2 - (v / max) * (h - 4);
    svg.appendChild(el("path", {d: path(values, x, y), class: "line s0"}));
  }
  return svg;
}

// A line chart of one or more named series over the last `span` seconds.
export function lineChart(title, series, {unit = "", span = 300} = {}) {
  const w = 360, h = 150, left = 48, bottom = 20, top = 8, right = 8;
  const fig = document.createElement("figure");
  fig.className = "chart";
  const cap = document.createElement("figcaption");
  const lastText = series.map(s => {
    const v = s.points.length ? s.points[s.points.length - 1][1] : null;
    return `${s.name} ${human(v, unit)}`;
  }).join(", ");
  cap.textContent = `${title}: ${lastText}`;
  const svg = el("svg", {viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": cap.textContent,
                         preserveAspectRatio: "none"});
  const now = Date.now() / 1000;
  const t0 = now - span;
  const all = series.flatMap(s => s.points.filter(p => p[0] >= t0).map(p => p[1]));
  const max = Math.max(0, ...all) * 1.1 || 1;      // all zero: a 0..1 scale
  const x = t => left + ((t - t0) / span) * (w - left - right);
  const y = v => h - bottom - (v / max) * (h - bottom - top);
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    svg.appendChild(el("line", {x1: left, x2: w - right, y1: y(v), y2: y(v), class: "grid"}));
    const label = el("text", {x: left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end"});
    label.textContent = human(v, unit);
    svg.appendChild(label);
  }
  const tl = el("text", {x: left, y: h - 4, class: "axis"});
  tl.textContent = `-${Math.round(span / 60)} min`;
  svg.appendChild(tl);
  const tr = el("text", {x: w - right, y: h - 4, class: "axis", "text-anchor": "end"});
  tr.textContent = "now";
  svg.appendChild(tr);
  series.forEach((s, i) => {
    const pts = s.points.filter(p => p[0] >= t0);
    if (pts.length > 1) svg.appendChild(el("path", {d: path(pts, x, y), class: `line s${i}`}));
  });
  fig.append(svg, cap);
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, i) => {
    const li = document.createElement("li");
    li.className = `s${i}`;
    li.textContent = s.name;
    legend.appendChild(li);
  });
  fig.appendChild(legend);
  fig.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
  fig.dataset.max = String(Math.max(0, ...all));
  return fig;
}
