/* charts.js - hand-drawn SVG charts: spectrum (energy left out, log), histogram
 * with the display window, the difference colour bar, the backend comparison. */
import { HEAT } from './view.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/* Width in CSS pixels a chart is laid out at (its fallback when hidden), so the
 * viewBox can follow it and labels keep their size on narrow screens. */
export function chartWidth(chart, fallback) {
  const w = Math.round(chart.getBoundingClientRect().width);
  return w >= 200 ? Math.min(w, 1000) : fallback;
}

export function fmt(v, digits = 6) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (!Number.isFinite(v)) return '∞';
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(digits)));
}

/* 10^d as a percentage label: 100 %, 1 %, 0.01 %, 1e-5 %. */
function pctLabel(d) {
  const e = d + 2;
  return e >= -3 ? `${Number((10 ** e).toPrecision(1))} %` : `1e${e} %`;
}

/* The fraction of the energy left out at each k: residual[k] = sum_{i>k} s_i^2 / sum s_i^2,
 * summed from the tail so small values keep their precision. residual[0] = 1. */
export function residuals(sv) {
  const n = sv.length, r = new Float64Array(n + 1);
  let tail = 0;
  for (let k = n; k >= 0; k--) { r[k] = tail; if (k > 0) tail += sv[k - 1] * sv[k - 1]; }
  const tot = tail;
  for (let k = 0; k <= n; k++) r[k] = tot > 0 ? r[k] / tot : 0;
  return r;
}

/* Energy left out (1 - cumulative energy) on a log axis against k, singular values
 * on a second log axis, k marked; optionally a target level (the residual an
 * estimated PSNR needs) with the k that reaches it. Returns {setK}. */
export function drawSpectrum(chart, { sv, rank, target }, onPick) {
  chart.replaceChildren();
  const n = sv.length;
  if (!n) return { setK() {} };
  const res = residuals(sv);
  const W = chartWidth(chart, 560), narrow = W < 480, H = 280;
  const x0 = 76, x1 = W - 46, y0 = H - 38, y1 = narrow ? 44 : 30;
  chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
  let minPos = 1;
  for (let k = 1; k < n; k++) if (res[k] > 0 && res[k] < minPos) minPos = res[k];
  const dLo = Math.max(-12, Math.min(-1, Math.floor(Math.log10(minPos))));
  const X = (k) => x0 + (n > 1 ? (k - 1) / (n - 1) : 0.5) * (x1 - x0);
  const Y = (r) => y0 - (Math.log10(Math.max(r, 10 ** dLo)) - dLo) / -dLo * (y0 - y1);
  const pos = sv.filter((s) => s > 0);
  const sHi = Math.ceil(Math.log10(Math.max(...pos))), sLo = Math.min(sHi - 1, Math.floor(Math.log10(Math.min(...pos))));
  const S = (s) => y0 - (Math.log10(Math.max(s, 10 ** sLo)) - sLo) / (sHi - sLo) * (y0 - y1);
  const g = svg('g', { 'font-size': 11 });
  const every = Math.ceil(-dLo / 8);
  for (let d = dLo; d <= 0; d++) {
    g.append(svg('line', { x1: x0, x2: x1, y1: Y(10 ** d), y2: Y(10 ** d), class: 'grid' }));
    if ((d - dLo) % every === 0 || d === 0) g.append(svg('text', { x: x0 - 4, y: Y(10 ** d) + 4, 'text-anchor': 'end', class: 'res-t' }, pctLabel(d)));
  }
  const sEvery = Math.ceil((sHi - sLo) / 6);
  for (let d = sLo; d <= sHi; d += sEvery)
    g.append(svg('text', { x: x1 + 4, y: S(10 ** d) + 4, class: 'sv-t' }, d >= 0 && d <= 4 ? String(10 ** d) : `1e${d}`));
  const step = Math.max(1, Math.round(n / (narrow ? 4 : 6) / 10) * 10);
  for (let i = 1; i <= n; i += (i === 1 && step > 1 ? step - 1 : step)) // step 1 (n < 35): every k
    g.append(svg('text', { x: X(i), y: y0 + 14, 'text-anchor': 'middle' }, String(i)));
  g.append(svg('text', { x: (x0 + x1) / 2, y: H - 4, 'text-anchor': 'middle' }, 'rank k'));
  const yMid = (y0 + y1) / 2;
  g.append(svg('text', { x: 11, y: yMid, transform: `rotate(-90 11 ${yMid})`, 'text-anchor': 'middle', class: 'res-t' }, 'energy left out, 1 − E(k) (log)'));
  g.append(svg('rect', { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: 'frame' }));
  // Components beyond the stored rank are shaded: they cannot be reconstructed.
  if (rank < n) g.append(svg('rect', { x: X(rank), y: y1, width: x1 - X(rank), height: y0 - y1, class: 'unstored' }));
  const rPts = [], sPts = [];
  for (let k = 1; k <= n; k++) {
    rPts.push(`${X(k).toFixed(1)},${Y(res[k]).toFixed(1)}`);
    sPts.push(`${X(k).toFixed(1)},${S(sv[k - 1]).toFixed(1)}`);
  }
  g.append(svg('polyline', { points: sPts.join(' '), class: 'sv' }));
  g.append(svg('polyline', { points: rPts.join(' '), class: 'residual' }));
  if (target && target.residual > 0) {
    const yt = Y(target.residual);
    g.append(svg('line', { x1: x0, x2: x1, y1: yt, y2: yt, class: 'target' }));
    g.append(svg('text', { x: x1 - 4, y: yt - 4, 'text-anchor': 'end', class: 'target-t' }, target.label));
    if (target.k) g.append(svg('circle', { cx: X(target.k), cy: yt, r: 4, class: 'target-dot' }));
  }
  // Legend above the plot, never over the curves.
  const lg = svg('g', { transform: `translate(${x0},${narrow ? 12 : 14})` });
  lg.append(svg('line', { x1: 0, x2: 18, y1: -4, y2: -4, class: 'residual' }), svg('text', { x: 22, y: 0 }, 'energy left out (left axis)'));
  const [lx, ly] = narrow ? [0, 16] : [200, 0];
  lg.append(svg('line', { x1: lx, x2: lx + 18, y1: ly - 4, y2: ly - 4, class: 'sv' }), svg('text', { x: lx + 22, y: ly }, 'singular value (right axis)'));
  g.append(lg);
  const mark = svg('line', { y1: y1, y2: y0, class: 'kmark' });
  const dot = svg('circle', { r: 3.5, class: 'kdot' });
  const label = svg('text', { y: y0 - 8, class: 'klabel' });
  g.append(mark, dot, label);
  chart.append(g);
  chart.onclick = (ev) => {
    const pt = chart.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const p = pt.matrixTransform(chart.getScreenCTM().inverse());
    onPick(Math.min(rank, Math.max(1, Math.round(1 + (p.x - x0) / (x1 - x0) * (n - 1)))));
  };
  return {
    setK(k) {
      const xk = X(k), r = res[k], left = xk < (x0 + x1) / 2;
      for (const a of ['x1', 'x2']) mark.setAttribute(a, xk);
      dot.setAttribute('cx', xk);
      dot.setAttribute('cy', Y(r));
      label.setAttribute('x', left ? xk + 6 : xk - 6);
      label.setAttribute('text-anchor', left ? 'start' : 'end');
      label.textContent = `k = ${k}: ${r > 0 ? fmt(r * 100, 3) : '0'} % left out`;
      chart.dataset.k = String(k);
    },
  };
}

/* Histogram of the original's values (log counts), the display window shaded.
 * Returns {setWindow(c, w)}. */
export function drawHistogram(chart, raw) {
  chart.replaceChildren();
  const W = chartWidth(chart, 420), H = 96, x0 = 6, x1 = W - 6, y0 = H - 18, y1 = 6;
  chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const lo = raw.min, hi = Math.max(raw.max, raw.min + 1);
  const nb = Math.min(128, hi - lo + 1), bins = new Float64Array(nb);
  const scale = nb / (hi - lo + 1);
  for (const v of raw.data) bins[Math.min(nb - 1, Math.floor((v - lo) * scale))]++;
  const top = Math.log10(1 + Math.max(...bins));
  const X = (v) => x0 + (v - lo) / (hi - lo) * (x1 - x0);
  const g = svg('g', { 'font-size': 10 });
  const shade = svg('rect', { y: y1, height: y0 - y1, class: 'win' });
  g.append(shade);
  const bw = (x1 - x0) / nb;
  bins.forEach((c, i) => {
    if (!c) return;
    const h = Math.log10(1 + c) / top * (y0 - y1);
    g.append(svg('rect', { x: x0 + i * bw, y: y0 - h, width: Math.max(0.8, bw - 0.3), height: h, class: 'hbar' }));
  });
  g.append(svg('line', { x1: x0, x2: x1, y1: y0, y2: y0, class: 'axis' }));
  g.append(svg('text', { x: x0, y: H - 4 }, String(lo)));
  g.append(svg('text', { x: x1, y: H - 4, 'text-anchor': 'end' }, String(raw.max)));
  g.append(svg('text', { x: (x0 + x1) / 2, y: H - 4, 'text-anchor': 'middle', class: 'muted-t' }, 'value (count on a log scale)'));
  const edges = [svg('line', { y1: y1, y2: y0, class: 'win-edge' }), svg('line', { y1: y1, y2: y0, class: 'win-edge' })];
  g.append(...edges);
  chart.append(g);
  return {
    setWindow(c, w) {
      const a = Math.max(x0, Math.min(x1, X(c - w / 2))), b = Math.max(x0, Math.min(x1, X(c + w / 2)));
      shade.setAttribute('x', a);
      shade.setAttribute('width', Math.max(0, b - a));
      edges[0].setAttribute('x1', a); edges[0].setAttribute('x2', a);
      edges[1].setAttribute('x1', b); edges[1].setAttribute('x2', b);
    },
  };
}

/* The heat map's 256 colours, left to right. */
export function paintColourBar(cv) {
  cv.width = 256;
  cv.height = 1;
  const ctx = cv.getContext('2d');
  const img = ctx.createImageData(256, 1);
  HEAT.forEach(([r, gg, b], i) => img.data.set([r, gg, b, 255], 4 * i));
  ctx.putImageData(img, 0, 0);
}

/* Bars of median kernel time and round trip per backend, log axis, and a table. */
export function drawCompare(chart, tbody, rows, k) {
  chart.replaceChildren();
  tbody.replaceChildren();
  if (!rows.length) return;
  for (const r of rows) {
    const tr = document.createElement('tr');
    tr.dataset.backend = r.name;
    for (const v of [r.name, fmt(r.kernel, 3), fmt(r.rtt, 3)]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    tbody.append(tr);
  }
  chart.toggleAttribute('hidden', false);
  const W = chartWidth(chart, 760), narrow = W < 560, H = 300;
  const x0 = 64, x1 = narrow ? W - 12 : W - 150, y0 = H - 40, y1 = narrow ? 52 : 30;
  chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const vals = rows.flatMap((r) => [r.kernel, r.rtt]).filter((v) => v > 0 && Number.isFinite(v));
  // A little room below the smallest value, so its bar never has zero height.
  let dLo = Math.floor(Math.log10(Math.min(...vals)) - 0.2), dHi = Math.ceil(Math.log10(Math.max(...vals)));
  if (dHi <= dLo) dHi = dLo + 1;
  const Y = (v) => y0 - (Math.log10(v) - dLo) / (dHi - dLo) * (y0 - y1);
  const g = svg('g', { 'font-size': 12 });
  g.append(svg('text', { x: (x0 + x1) / 2, y: 16, 'text-anchor': 'middle', 'font-weight': 'bold' },
    narrow ? `median ms at k = ${k}, log scale` : `median time per reconstruction at k = ${k} (log scale; lower is faster)`));
  for (let d = dLo; d <= dHi; d++) {
    g.append(svg('line', { x1: x0, x2: x1, y1: Y(10 ** d), y2: Y(10 ** d), class: 'grid' }));
    g.append(svg('text', { x: x0 - 6, y: Y(10 ** d) + 4, 'text-anchor': 'end' }, `${Number((10 ** d).toPrecision(1))} ms`));
    for (let m = 2; m <= 9 && d < dHi; m++)
      g.append(svg('line', { x1: x0, x2: x1, y1: Y(m * 10 ** d), y2: Y(m * 10 ** d), class: 'minor' }));
  }
  const gw = (x1 - x0) / rows.length, bw = gw * 0.36;
  rows.forEach((r, i) => {
    const gx = x0 + i * gw + gw * 0.14;
    [['kernel', r.kernel], ['rtt', r.rtt]].forEach(([cls, v], j) => {
      if (!(v > 0 && Number.isFinite(v))) return;
      const bar = svg('rect', { x: gx + j * bw, y: Y(v), width: bw * 0.92, height: y0 - Y(v), class: `bar ${cls}`, 'data-backend': r.name });
      bar.append(svg('title', {}, `${r.name}: ${cls === 'kernel' ? 'server kernel' : 'round trip'} ${fmt(v, 3)} ms`));
      g.append(bar);
    });
    g.append(svg('text', { x: x0 + (i + 0.5) * gw, y: y0 + 16, 'text-anchor': 'middle' }, r.name));
  });
  g.append(svg('line', { x1: x0, x2: x1, y1: y0, y2: y0, class: 'axis' }));
  g.append(svg('line', { x1: x0, x2: x0, y1: y0, y2: y1, class: 'axis' }));
  // Legend to the right, or above the plot where there is no room beside it.
  const lg = svg('g', { transform: narrow ? `translate(${x0},24)` : `translate(${x1 + 16},${y1 + 10})` });
  const [dx, dy] = narrow ? [130, 0] : [0, 22];
  lg.append(svg('rect', { x: 0, y: 0, width: 14, height: 14, class: 'bar kernel' }), svg('text', { x: 20, y: 11 }, 'server kernel'));
  lg.append(svg('rect', { x: dx, y: dy, width: 14, height: 14, class: 'bar rtt' }), svg('text', { x: dx + 20, y: dy + 11 }, 'client round trip'));
  g.append(lg);
  chart.append(g);
}
