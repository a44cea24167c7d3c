// Plain SVG charts: a bar chart and a step line, each with a text alternative.
const NS = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function barChart(title: string, labels: string[], values: number[], unit: string): SVGElement {
  const w = 600, hgt = 180, pad = 28;
  const max = Math.max(1, ...values);
  const root = svg("svg", { viewBox: `0 0 ${w} ${hgt + pad}`, role: "img", class: "chart", preserveAspectRatio: "none" });
  root.append(svg("title", {}, `${title}: ${labels.map((l, i) => `${l} ${values[i]} ${unit}`).join(", ")}`));
  const bw = Math.min(80, (w - pad) / Math.max(1, values.length)); // a few bars stay bars, not one wide block
  root.append(svg("line", { x1: pad, y1: hgt, x2: w, y2: hgt, class: "axis" }));
  root.append(svg("text", { x: 2, y: 12, class: "tick" }, String(max)));
  root.append(svg("text", { x: 2, y: hgt, class: "tick" }, "0"));
  values.forEach((v, i) => {
    const bh = (v / max) * (hgt - 16);
    root.append(svg("rect", { x: pad + i * bw + 1, y: hgt - bh, width: Math.max(1, bw - 2), height: bh, class: v ? "bar" : "bar empty" }));
    if (values.length <= 40 && (values.length <= 12 || i % 5 === 0)) {
      root.append(svg("text", { x: pad + i * bw + bw / 2, y: hgt + 16, class: "tick", "text-anchor": "middle" }, labels[i]));
    }
  });
  return root;
}

export function stepPlot(title: string, points: { t: number; v: number }[], describe: (v: number) => string): SVGElement {
  const w = 600, hgt = 180, pad = 28;
  const root = svg("svg", { viewBox: `0 0 ${w} ${hgt + pad}`, role: "img", class: "chart" });
  const last = points[points.length - 1];
  root.append(svg("title", {}, `${title}: ${points.length} points${last ? `, latest ${describe(last.v)}` : ""}`));
  root.append(svg("line", { x1: pad, y1: hgt, x2: w, y2: hgt, class: "axis" }));
  if (points.length === 0) {
    root.append(svg("text", { x: w / 2, y: hgt / 2, "text-anchor": "middle", class: "tick" }, "nothing settled yet"));
    return root;
  }
  // Start a little before the first point, so a single settlement still shows as a step.
  const span = points[points.length - 1].t - points[0].t;
  const t0 = points[0].t - Math.max(60, span * 0.05), t1 = points[points.length - 1].t;
  const vmax = Math.max(...points.map((p) => p.v), 1e-12);
  const x = (t: number) => pad + ((t - t0) / (t1 - t0)) * (w - pad - 16);
  const y = (v: number) => hgt - (v / vmax) * (hgt - 16);
  let d = `M ${x(t0)} ${y(0)}`;
  let before = 0;
  for (const p of points) {
    d += ` L ${x(p.t)} ${y(before)} L ${x(p.t)} ${y(p.v)}`;
    before = p.v;
  }
  root.append(svg("path", { d, class: "line" }));
  for (const p of points) root.append(svg("circle", { cx: x(p.t), cy: y(p.v), r: 3, class: "dot" }));
  root.append(svg("text", { x: 2, y: 12, class: "tick" }, describe(vmax)));
  const clock = (t: number) => new Date(t * 1000).toISOString().slice(11, 16);
  root.append(svg("text", { x: pad, y: hgt + 16, class: "tick" }, clock(t0)));
  root.append(svg("text", { x: w - 8, y: hgt + 16, class: "tick", "text-anchor": "end" }, `${clock(t1)} UTC`));
  return root;
}
