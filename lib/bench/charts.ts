/**
 * The benchmark report's charts as hand-written SVG (no dependencies): pure functions from
 * the results in bench-results/*.json to an SVG document, so the same JSON always gives the
 * same bytes. Each chart has a title, labelled axes, its values on the bars and a caption
 * naming the machine and the date; a white background keeps it legible on dark pages.
 */
import type { ModelResult } from './cpu';
import type { StartupResult } from './startup';

/** What a chart's caption says about where the numbers come from. */
export interface ChartMachine {
  cpu: string;
  cores: number;
  threads: number;
  date: string;
  /** e.g. `kiln 0.1.0 · onnxruntime-node 1.30.0 · Node v20.20.2` */
  versions: string;
}

const FONT = 'font-family="Helvetica, Arial, sans-serif"';
const COLORS = { kiln: '#e8590c', ort: '#1c7ed6', cold: '#5c7cfa', warm: '#e8590c', good: '#2b8a3e', bad: '#c92a2a', axis: '#495057', grid: '#dee2e6', text: '#212529', muted: '#6c757d' };

/** Escapes text for SVG content and attribute values. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Milliseconds for a label: `4.55 s`, `323 ms`, `20.2 ms`, `1.84 ms`. */
export function fmtMs(v: number): string {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 1 : 2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

const n = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

function text(x: number, y: number, s: string, o: { size?: number; anchor?: 'start' | 'middle' | 'end'; weight?: 'bold'; fill?: string; rotate?: number } = {}): string {
  const rot = o.rotate ? ` transform="rotate(${o.rotate} ${n(x)} ${n(y)})"` : '';
  const weight = o.weight ? ` font-weight="${o.weight}"` : '';
  return `<text x="${n(x)}" y="${n(y)}" font-size="${o.size ?? 12}" text-anchor="${o.anchor ?? 'start'}" fill="${o.fill ?? COLORS.text}"${weight}${rot}>${esc(s)}</text>`;
}

const rect = (x: number, y: number, w: number, h: number, fill: string) => `<rect x="${n(x)}" y="${n(y)}" width="${n(w)}" height="${n(h)}" fill="${fill}"/>`;
const line = (x1: number, y1: number, x2: number, y2: number, stroke: string, width = 1) =>
  `<line x1="${n(x1)}" y1="${n(y1)}" x2="${n(x2)}" y2="${n(y2)}" stroke="${stroke}" stroke-width="${width}"/>`;

function svg(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    rect(0, 0, width, height, '#ffffff'),
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** A legend centred on `cx` (label widths estimated at 6.6 px per character of 12 px text). */
function legend(cx: number, y: number, items: [string, string][]): string[] {
  const out: string[] = [];
  const width = items.reduce((w, [label]) => w + 30 + label.length * 6.6, -13);
  let x = cx - width / 2;
  for (const [label, color] of items) {
    out.push(rect(x, y - 10, 12, 12, color), text(x + 17, y, label, { size: 12 }));
    x += 30 + label.length * 6.6;
  }
  return out;
}

/** A round number at or above `v`: 1, 2, 2.5 or 5 × a power of ten. */
export function niceNumber(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * (1 - 1e-12)) return m * p;
  return 10 * p;
}

/** Linear axis ticks from 0 covering `v`: a round step, 4 to 6 intervals. */
export function linearTicks(v: number): number[] {
  const step = niceNumber(v / 5);
  const count = Math.ceil(v / step - 1e-9);
  return Array.from({ length: count + 1 }, (_, i) => +(i * step).toPrecision(12));
}

/** A decade's label on a log axis: 10 ms, 100 ms, 1 s, 10 s. */
const decadeLabel = (v: number) => (v >= 1000 ? `${+(v / 1000).toPrecision(6)} s` : `${+v.toPrecision(6)} ms`);

/** A short description of a model's sizes, for an axis label. */
export function sizeLabel(model: string, c: Record<string, number>): string {
  if (model === 'mlp' && c.layers !== undefined) return `${c.layers}×${c.width}, batch ${c.batch}`;
  if (model === 'block' && c.d !== undefined) return `d ${c.d}, ${c.heads} heads, seq ${c.seq}`;
  if (model === 'gpt' && c.layers !== undefined) return `${c.layers} blocks, d ${c.d}, seq ${c.seq}`;
  return Object.entries(c)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

const caption = (m: ChartMachine) => `${m.cpu}, ${m.cores} cores, ${m.threads} thread${m.threads === 1 ? '' : 's'} · ${m.versions} · ${m.date.slice(0, 10)}`;

/**
 * kiln against onnxruntime-node, one panel per model with its own linear axis (the models'
 * latencies differ by orders of magnitude): median ms per call as bars, p10–p90 as whiskers,
 * and kiln ÷ onnxruntime above each panel.
 */
export function latencyChart(results: ModelResult[], machine: ChartMachine): string {
  const title = 'CPU latency per call: kiln vs onnxruntime-node';
  const W = Math.max(640, 120 + 220 * results.length);
  const H = 400;
  const left = 70;
  const right = 20;
  const top = 92;
  const bottom = 300;
  const panelW = (W - left - right) / Math.max(1, results.length);
  const body: string[] = [
    text(W / 2, 26, title, { size: 17, anchor: 'middle', weight: 'bold' }),
    text(W / 2, 46, 'median ms per call, same threads, same weights (lower is better); whiskers: p10–p90', { size: 12, anchor: 'middle', fill: COLORS.muted }),
    ...legend(W / 2, 68, [
      ['kiln', COLORS.kiln],
      ['onnxruntime-node', COLORS.ort],
    ]),
    text(18, (top + bottom) / 2, 'ms per call', { size: 12, anchor: 'middle', rotate: -90, fill: COLORS.axis }),
  ];
  results.forEach((r, i) => {
    const x0 = left + i * panelW;
    const ticks = linearTicks(Math.max(r.kiln.p90, r.ort.p90, r.kiln.median, r.ort.median) * 1.08);
    const max = ticks[ticks.length - 1];
    const y = (v: number) => bottom - ((bottom - top - 28) * Math.min(v, max)) / max;
    // This panel's own scale.
    for (const v of ticks) {
      body.push(line(x0 + 8, y(v), x0 + panelW - 8, y(v), v === 0 ? COLORS.axis : COLORS.grid), text(x0 + 4, y(v) + 4, String(v), { size: 10, anchor: 'end', fill: COLORS.muted }));
    }
    const barW = Math.min(64, (panelW - 40) / 3);
    const bars: [number, typeof r.kiln, string][] = [
      [x0 + panelW / 2 - barW - 6, r.kiln, COLORS.kiln],
      [x0 + panelW / 2 + 6, r.ort, COLORS.ort],
    ];
    for (const [bx, t, color] of bars) {
      body.push(rect(bx, y(t.median), barW, bottom - y(t.median), color));
      const cx = bx + barW / 2;
      body.push(line(cx, y(t.p10), cx, y(t.p90), COLORS.text), line(cx - 5, y(t.p10), cx + 5, y(t.p10), COLORS.text), line(cx - 5, y(t.p90), cx + 5, y(t.p90), COLORS.text));
      body.push(text(cx, Math.min(y(t.median), y(t.p90)) - 6, fmtMs(t.median), { size: 12, anchor: 'middle', weight: 'bold' }));
    }
    const ok = r.ratio <= 1;
    body.push(text(x0 + panelW / 2, top - 2, `kiln ÷ ort = ${r.ratio.toFixed(2)}×`, { size: 13, anchor: 'middle', weight: 'bold', fill: ok ? COLORS.good : COLORS.bad }));
    body.push(text(x0 + panelW / 2, bottom + 20, r.model, { size: 14, anchor: 'middle', weight: 'bold' }));
    body.push(text(x0 + panelW / 2, bottom + 37, sizeLabel(r.model, r.config), { size: 11, anchor: 'middle', fill: COLORS.muted }));
  });
  body.push(text(W / 2, H - 30, 'kiln ÷ onnxruntime target: ≤ 1.00 (green when met)', { size: 11, anchor: 'middle', fill: COLORS.muted }));
  body.push(text(W / 2, H - 12, caption(machine), { size: 11, anchor: 'middle', fill: COLORS.muted }));
  return svg(W, H, title, body);
}

/**
 * Cold against warm start per model: process start to first result, fresh processes, on a
 * log axis (a cold start is seconds, a warm one tens to hundreds of milliseconds), with
 * warm ÷ cold above each pair.
 */
export function startupChart(results: StartupResult[], machine: ChartMachine): string {
  const title = 'Startup: cold vs warm, process start to first result';
  const W = Math.max(640, 140 + 200 * results.length);
  const H = 400;
  const left = 80;
  const right = 20;
  const top = 92;
  const bottom = 300;
  const values = results.flatMap((r) => [r.cold.firstMs, r.warm.firstMs]).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values, 100)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values, 1000) * 1.3));
  // The top decade sits 24 px below the ratio labels, so a bar that reaches it keeps its value label clear of them.
  const y = (v: number) => bottom - ((bottom - top - 24) * (Math.log10(Math.max(v, lo)) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  const body: string[] = [
    text(W / 2, 26, title, { size: 17, anchor: 'middle', weight: 'bold' }),
    text(W / 2, 46, 'fresh Node processes, median of the repetitions; log scale', { size: 12, anchor: 'middle', fill: COLORS.muted }),
    ...legend(W / 2, 68, [
      ['cold (empty cache: trace + compile)', COLORS.cold],
      ['warm (bundle load)', COLORS.warm],
    ]),
    text(18, (top + bottom) / 2, 'time to first result (log scale)', { size: 12, anchor: 'middle', rotate: -90, fill: COLORS.axis }),
  ];
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    body.push(line(left, y(d), W - right, y(d), d === lo ? COLORS.axis : COLORS.grid), text(left - 6, y(d) + 4, decadeLabel(d), { size: 10, anchor: 'end', fill: COLORS.muted }));
    for (let m = 2; m < 10 && d * m < hi; m++) body.push(line(left, y(d * m), W - right, y(d * m), '#f1f3f5'));
  }
  const groupW = (W - left - right) / Math.max(1, results.length);
  results.forEach((r, i) => {
    const cx = left + groupW * (i + 0.5);
    const barW = Math.min(64, (groupW - 40) / 3);
    const pairs: [number, number, string][] = [
      [cx - barW - 6, r.cold.firstMs, COLORS.cold],
      [cx + 6, r.warm.firstMs, COLORS.warm],
    ];
    for (const [bx, v, color] of pairs) {
      body.push(rect(bx, y(v), barW, bottom - y(v), color), text(bx + barW / 2, y(v) - 6, fmtMs(v), { size: 12, anchor: 'middle', weight: 'bold' }));
    }
    const ok = r.ratio <= 0.05;
    body.push(text(cx, top - 2, `warm ÷ cold = ${r.ratio.toFixed(3)}`, { size: 13, anchor: 'middle', weight: 'bold', fill: ok ? COLORS.good : COLORS.bad }));
    body.push(text(cx, bottom + 20, r.model, { size: 14, anchor: 'middle', weight: 'bold' }));
    body.push(text(cx, bottom + 37, sizeLabel(r.model, r.config), { size: 11, anchor: 'middle', fill: COLORS.muted }));
  });
  body.push(text(W / 2, H - 30, 'warm ÷ cold target: ≤ 0.05 (green when met)', { size: 11, anchor: 'middle', fill: COLORS.muted }));
  body.push(text(W / 2, H - 12, caption(machine), { size: 11, anchor: 'middle', fill: COLORS.muted }));
  return svg(W, H, title, body);
}
