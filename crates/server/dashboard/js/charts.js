// Hand-made SVG charts: a bar chart (optionally stacked) and a sparkline. Sizes are in viewBox
// units; CSS makes the SVG as wide as its container.

import { s } from "./dom.js";
import { usd, usdShort } from "./format.js";

export const PALETTE = ["#4f46e5", "#0891b2", "#d97706", "#db2777", "#16a34a", "#7c3aed", "#64748b"];

/** Round numbers for an axis from 0 to about `max`: [step, top]. */
function niceScale(max, ticks = 4) {
  if (!(max > 0)) return [1, 1];
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((v) => v >= raw);
  return [step, step * Math.ceil(max / step)];
}

/**
 * Bars over time. `points`: [{start_ms, total_nanos, calls, segments?: [{name, nanos}]}];
 * `colors`: name → colour for stacked segments. `formatX(ms)` labels the buckets.
 */
export function barChart({ points, formatX, title, colors = {}, height = 220 }) {
  const W = 760;
  const H = height;
  const left = 64;
  const right = 8;
  const top = 10;
  const bottom = 26;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const max = Math.max(0, ...points.map((p) => p.total_nanos));
  const [step, yTop] = niceScale(max);
  const y = (v) => top + plotH - (v / yTop) * plotH;
  const slot = plotW / Math.max(1, points.length);
  const barW = Math.max(1, Math.min(28, slot * 0.72));

  const total = points.reduce((a, p) => a + p.total_nanos, 0);
  const peak = points.reduce((best, p) => (p.total_nanos > (best?.total_nanos ?? -1) ? p : best), null);
  const summary =
    points.length === 0
      ? `${title}: no data`
      : `${title}: ${usd(total)} in total over ${points.length} periods; highest ${usd(peak.total_nanos)} at ${formatX(peak.start_ms)}`;

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": summary });
  for (let v = 0; v <= yTop + step / 2; v += step) {
    svg.append(
      s("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }),
      s("text", { x: left - 8, y: y(v) + 4, class: "tick", "text-anchor": "end" }, usdShort(v)),
    );
  }
  const labelEvery = Math.max(1, Math.ceil(points.length / 8));
  points.forEach((p, i) => {
    const cx = left + slot * i + slot / 2;
    const g = s("g", { class: "bar" });
    const tip = [`${formatX(p.start_ms)}: ${usd(p.total_nanos)}`];
    if (p.calls !== undefined) tip.push(`${p.calls} calls`);
    if (p.segments?.length) {
      let acc = 0;
      for (const seg of p.segments) {
        if (seg.nanos <= 0) continue;
        const y0 = y(acc);
        acc += seg.nanos;
        g.append(
          s("rect", {
            x: cx - barW / 2,
            y: y(acc),
            width: barW,
            height: Math.max(0.5, y0 - y(acc)),
            fill: colors[seg.name] ?? PALETTE[6],
          }),
        );
        tip.push(`${seg.name}: ${usd(seg.nanos)}`);
      }
    } else if (p.total_nanos > 0) {
      g.append(
        s("rect", {
          x: cx - barW / 2,
          y: y(p.total_nanos),
          width: barW,
          height: Math.max(0.5, y(0) - y(p.total_nanos)),
          class: "fill",
          rx: 2,
        }),
      );
    }
    // A full-height transparent target so small bars still show their tooltip.
    g.append(s("rect", { x: left + slot * i, y: top, width: slot, height: plotH, class: "hit" }));
    g.append(s("title", null, tip.join("\n")));
    svg.append(g);
    if (i % labelEvery === 0) {
      svg.append(s("text", { x: cx, y: H - 8, class: "tick", "text-anchor": "middle" }, formatX(p.start_ms)));
    }
  });
  return svg;
}

/** A small line of `values` (numbers), no axes; `label` is its accessible description. */
export function sparkline(values, label, { width = 220, height = 44 } = {}) {
  const max = Math.max(1, ...values);
  const stepX = values.length > 1 ? width / (values.length - 1) : width;
  const pts = values.map((v, i) => `${(i * stepX).toFixed(1)},${(height - 3 - (v / max) * (height - 6)).toFixed(1)}`);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img", "aria-label": label });
  if (values.length) {
    svg.append(
      s("polygon", { points: `0,${height} ${pts.join(" ")} ${width},${height}`, class: "area" }),
      s("polyline", { points: pts.join(" "), class: "line" }),
    );
  }
  return svg;
}
