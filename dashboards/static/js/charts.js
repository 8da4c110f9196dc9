// Small SVG charts: a sparkline per patient, and a time chart with min–max range, mean line and
// the patient's bands. No library: a few hundred bytes of SVG per chart load fast anywhere.
"use strict";

const NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children) if (c) el.append(c);
  return el;
}

/** points: [[isoTime, value], …]; a line over [since, since + hours], with the red level. */
export function sparkline(points, { since, hours = 24, redAt = null, label = "" } = {}) {
  const w = 120, hgt = 28, lo = 80, hi = 100;
  const t0 = new Date(since).getTime(), span = hours * 3600e3;
  const x = (iso) => ((new Date(iso).getTime() - t0) / span) * w;
  const y = (v) => hgt - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (hgt - 2) - 1;
  const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: "img", "aria-label": label, class: "spark" });
  svg.append(s("title", {}, document.createTextNode(label)));
  if (redAt !== null) svg.append(s("line", { x1: 0, x2: w, y1: y(redAt), y2: y(redAt), class: "spark-red" }));
  if (points.length) {
    const d = points.map(([ti, v], i) => `${i ? "L" : "M"}${x(ti).toFixed(1)},${y(v).toFixed(1)}`).join("");
    svg.append(s("path", { d, class: "spark-line" }));
    const [lt, lv] = points[points.length - 1];
    svg.append(s("circle", { cx: x(lt), cy: y(lv), r: 2, class: "spark-dot" }));
  }
  return svg;
}

/**
 * A time chart. rows: [{time, min, mean, max}]; bands: [{from, to, cls, label}] in value units;
 * lines: [{at, cls, label}] (e.g. the personal baseline).
 */
export function timeChart({ rows, since, until, yMin, yMax, bands = [], lines = [], label, unit = "" }) {
  const W = 720, H = 220, L = 40, R = 8, T = 8, B = 24;
  const t0 = new Date(since).getTime(), t1 = new Date(until).getTime();
  const x = (iso) => L + ((new Date(iso).getTime() - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (Math.min(yMax, Math.max(yMin, v)) - yMin) / (yMax - yMin)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart", preserveAspectRatio: "none" });
  svg.append(s("title", {}, document.createTextNode(label)));
  for (const b of bands) {
    const top = y(Math.min(b.to, yMax)), bottom = y(Math.max(b.from, yMin));
    if (bottom > top) svg.append(s("rect", { x: L, y: top, width: W - L - R, height: bottom - top, class: `band ${b.cls}` }));
  }
  // Horizontal grid with labels.
  const step = (yMax - yMin) > 60 ? 20 : 5;
  for (let v = Math.ceil(yMin / step) * step; v <= yMax; v += step) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, document.createTextNode(`${v}${unit}`)));
  }
  // Time labels: 5 ticks.
  const fmt = (t1 - t0) <= 36 * 3600e3
    ? { hour: "2-digit", minute: "2-digit" } : { day: "2-digit", month: "2-digit" };
  for (let i = 0; i <= 4; i += 1) {
    const ti = new Date(t0 + ((t1 - t0) * i) / 4);
    svg.append(s("text", { x: x(ti.toISOString()), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "axis" },
      document.createTextNode(ti.toLocaleString(document.documentElement.lang === "nb" ? "nb-NO" : "en-GB", { ...fmt, timeZone: "Europe/Oslo" }))));
  }
  for (const l of lines) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(l.at), y2: y(l.at), class: `marker ${l.cls}` }));
    svg.append(s("text", { x: W - R - 2, y: y(l.at) - 3, "text-anchor": "end", class: "axis" }, document.createTextNode(l.label)));
  }
  if (rows.length) {
    // Range (min–max) as an area; a gap of more than three buckets breaks it.
    const segments = [];
    let seg = [];
    const gap = rows.length > 1 ? 3 * Math.min(...rows.slice(1).map((r, i) => new Date(r.time) - new Date(rows[i].time))) : Infinity;
    rows.forEach((r, i) => {
      if (i && new Date(r.time) - new Date(rows[i - 1].time) > gap) { segments.push(seg); seg = []; }
      seg.push(r);
    });
    segments.push(seg);
    for (const sg of segments) {
      const top = sg.map((r) => `${x(r.time).toFixed(1)},${y(r.max).toFixed(1)}`);
      const bottom = sg.slice().reverse().map((r) => `${x(r.time).toFixed(1)},${y(r.min).toFixed(1)}`);
      if (sg.length > 1) svg.append(s("polygon", { points: [...top, ...bottom].join(" "), class: "range" }));
      const d = sg.map((r, i) => `${i ? "L" : "M"}${x(r.time).toFixed(1)},${y(r.mean).toFixed(1)}`).join("");
      svg.append(s("path", { d, class: "mean" }));
      if (sg.length === 1) svg.append(s("circle", { cx: x(sg[0].time), cy: y(sg[0].mean), r: 3, class: "dot" }));
    }
  }
  return svg;
}
