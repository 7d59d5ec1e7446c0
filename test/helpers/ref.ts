/**
 * An independent float64 reference for kiln's numeric acceptance tests.
 *
 * Nothing here imports kiln: index math, broadcasting, reductions, matmul, softmax, the norms
 * and attention are re-derived from their PyTorch definitions in plain float64 so that a bug in
 * kiln cannot hide in a shared helper. Half-precision rounding is done bit-exactly from the
 * float64 bit pattern (round to nearest, ties to even). Arrays are always contiguous row-major.
 */

// Jest runs each test file in a vm context, where every lookup of a global name (Math, Number,
// Infinity…) goes through the context's interceptors and costs about a microsecond. The hot
// loops here run over millions of elements, so the globals they use are bound once per module.
const Math = globalThis.Math;
const Number = globalThis.Number;
const Infinity = globalThis.Infinity;
const NaN = globalThis.NaN;
const objectIs = globalThis.Object.is;

// ─── N-d arrays ──────────────────────────────────────────────────────────────────────────────

/** A contiguous row-major float64 array. `shape` [] is a 0-d scalar. */
export class Nd {
  constructor(
    readonly shape: number[],
    readonly data: Float64Array,
  ) {
    if (data.length !== numel(shape)) throw new Error(`ref: ${data.length} values for shape [${shape}]`);
  }
  get ndim(): number {
    return this.shape.length;
  }
  /** Same data, new shape (one -1 allowed), like a contiguous reshape. */
  reshape(shape: number[]): Nd {
    const known = shape.filter((s) => s !== -1).reduce((a, b) => a * b, 1);
    return new Nd(
      shape.map((s) => (s === -1 ? this.data.length / known : s)),
      this.data,
    );
  }
}

export function nd(shape: number[], values: ArrayLike<number>): Nd {
  return new Nd([...shape], Float64Array.from(values));
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Python-style dim normalization: -1 is the last of `ndim` dims. */
export function normDim(d: number, ndim: number): number {
  const r = d < 0 ? d + ndim : d;
  if (r < 0 || r >= ndim) throw new Error(`ref: dim ${d} out of range for ${ndim} dims`);
  return r;
}

/** NumPy broadcasting: align right; each pair equal or one of them 1. */
export function broadcastShapes(...shapes: number[][]): number[] {
  const n = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(n).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = n - s.length + i;
      const d = s[i]!;
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) throw new Error(`ref: cannot broadcast [${shapes.join('] [')}]`);
    }
  }
  return out;
}

/** For every flat index of `outShape`, the flat index into an array of `shape` broadcast to it. */
function broadcastIndex(shape: number[], outShape: number[]): Int32Array {
  const n = numel(outShape);
  const idx = new Int32Array(n);
  const st = stridesOf(shape);
  const off = outShape.length - shape.length;
  // stride 0 on broadcast (size-1 or missing) dims
  const bst = outShape.map((_, i) => (i < off || shape[i - off] === 1 ? 0 : st[i - off]!));
  const counter = new Array<number>(outShape.length).fill(0);
  let cur = 0;
  for (let f = 0; f < n; f++) {
    idx[f] = cur;
    for (let d = outShape.length - 1; d >= 0; d--) {
      counter[d]!++;
      cur += bst[d]!;
      if (counter[d]! < outShape[d]!) break;
      cur -= bst[d]! * counter[d]!;
      counter[d] = 0;
    }
  }
  return idx;
}

export function broadcastTo(a: Nd, shape: number[]): Nd {
  const idx = broadcastIndex(a.shape, broadcastShapes(a.shape, shape));
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = a.data[idx[i]!]!;
  return new Nd([...shape], out);
}

type Operand = Nd | number;
const asNd = (x: Operand): Nd => (typeof x === 'number' ? nd([], [x]) : x);

/** Elementwise map over broadcast operands (numbers act as 0-d arrays). */
export function map(fn: (...v: number[]) => number, ...args: Operand[]): Nd {
  const arrs = args.map(asNd);
  const shape = broadcastShapes(...arrs.map((a) => a.shape));
  const idx = arrs.map((a) => broadcastIndex(a.shape, shape));
  const n = numel(shape);
  const out = new Float64Array(n);
  if (arrs.length <= 2) {
    // the common arities without a spread call per element
    const [a, b] = [arrs[0]!.data, arrs[1]?.data];
    const [ia, ib] = [idx[0]!, idx[1]];
    if (b && ib) for (let i = 0; i < n; i++) out[i] = fn(a[ia[i]!]!, b[ib[i]!]!);
    else for (let i = 0; i < n; i++) out[i] = fn(a[ia[i]!]!);
    return new Nd(shape, out);
  }
  const v = new Array<number>(arrs.length);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < arrs.length; k++) v[k] = arrs[k]!.data[idx[k]![i]!]!;
    out[i] = fn(...v);
  }
  return new Nd(shape, out);
}

export function permute(a: Nd, dims: number[]): Nd {
  const p = dims.map((d) => normDim(d, a.ndim));
  const shape = p.map((d) => a.shape[d]!);
  const st = stridesOf(a.shape);
  const pst = p.map((d) => st[d]!);
  const out = new Float64Array(a.data.length);
  const counter = new Array<number>(shape.length).fill(0);
  let src = 0;
  for (let f = 0; f < out.length; f++) {
    out[f] = a.data[src]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      counter[d]!++;
      src += pst[d]!;
      if (counter[d]! < shape[d]!) break;
      src -= pst[d]! * counter[d]!;
      counter[d] = 0;
    }
  }
  return new Nd(shape, out);
}

export function transpose(a: Nd, d0: number, d1: number): Nd {
  const p = a.shape.map((_, i) => i);
  const x = normDim(d0, a.ndim);
  const y = normDim(d1, a.ndim);
  [p[x], p[y]] = [p[y]!, p[x]!];
  return permute(a, p);
}

/** `unsqueeze(d)`: a size-1 dim inserted at d (negative d counts from the end of the result). */
export function unsqueeze(a: Nd, d: number): Nd {
  const p = d < 0 ? d + a.ndim + 1 : d;
  return a.reshape([...a.shape.slice(0, p), 1, ...a.shape.slice(p)]);
}

/** `squeeze(d?)`: drop every size-1 dim, or only dim d if it has size 1 (else unchanged). */
export function squeeze(a: Nd, d?: number): Nd {
  if (d === undefined) return a.reshape(a.shape.filter((s) => s !== 1));
  const p = normDim(d, a.ndim);
  return a.shape[p] === 1 ? a.reshape(a.shape.filter((_, i) => i !== p)) : a;
}

/** `flatten(start, end)`: dims start..end (inclusive) merged into one. */
export function flatten(a: Nd, start = 0, end = -1): Nd {
  if (a.ndim === 0) return a.reshape([1]);
  const s = normDim(start, a.ndim);
  const e = normDim(end, a.ndim);
  return a.reshape([...a.shape.slice(0, s), numel(a.shape.slice(s, e + 1)), ...a.shape.slice(e + 1)]);
}

/** `expand(shape)`: broadcast to `shape`, where -1 keeps the existing size. */
export function expand(a: Nd, shape: number[]): Nd {
  const off = shape.length - a.ndim;
  return broadcastTo(
    a,
    shape.map((s, i) => (s === -1 ? a.shape[i - off]! : s)),
  );
}

/** Python slice semantics for a positive step: negative bounds count from the end, then clamp. */
export function sliceIndices(size: number, start: number, end: number, step: number): number[] {
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + size : v, 0), size);
  const out: number[] = [];
  for (let i = clamp(start); i < clamp(end); i += step) out.push(i);
  return out;
}

/** Gather `indices` along `dim` (used for slice and embedding-like picks). */
export function take(a: Nd, dim: number, indices: number[]): Nd {
  const d = normDim(dim, a.ndim);
  const outer = numel(a.shape.slice(0, d));
  const inner = numel(a.shape.slice(d + 1));
  const size = a.shape[d]!;
  const out = new Float64Array(outer * indices.length * inner);
  let o = 0;
  for (let i = 0; i < outer; i++)
    for (const j of indices) for (let k = 0; k < inner; k++) out[o++] = a.data[(i * size + j) * inner + k]!;
  const shape = [...a.shape];
  shape[d] = indices.length;
  return new Nd(shape, out);
}

export function slice(a: Nd, dim: number, start: number, end: number, step = 1): Nd {
  const d = normDim(dim, a.ndim);
  return take(a, d, sliceIndices(a.shape[d]!, start, end, step));
}

export function cat(arrs: Nd[], dim: number): Nd {
  const d = normDim(dim, arrs[0]!.ndim);
  const outer = numel(arrs[0]!.shape.slice(0, d));
  const inner = numel(arrs[0]!.shape.slice(d + 1));
  const total = arrs.reduce((s, a) => s + a.shape[d]!, 0);
  const out = new Float64Array(outer * total * inner);
  let o = 0;
  for (let i = 0; i < outer; i++)
    for (const a of arrs) {
      const chunk = a.shape[d]! * inner;
      out.set(a.data.subarray(i * chunk, (i + 1) * chunk), o);
      o += chunk;
    }
  const shape = [...arrs[0]!.shape];
  shape[d] = total;
  return new Nd(shape, out);
}

/** Rows of `table` ([V, D]) picked by integer `ids` of any shape → [...ids.shape, D]. */
export function embedding(ids: Nd, table: Nd): Nd {
  const picked = take(table, 0, Array.from(ids.data));
  return new Nd([...ids.shape, table.shape[1]!], picked.data);
}

// ─── Reductions ─────────────────────────────────────────────────────────────────────────────

export type ReduceKind = 'sum' | 'mean' | 'max' | 'min';

/** The dims a reduction covers: undefined = all; a list or a single dim, negatives allowed. */
export function reduceDims(ndim: number, dim?: number | number[]): number[] {
  if (dim === undefined) return [...Array(ndim).keys()];
  const list = Array.isArray(dim) ? dim : [dim];
  return [...new Set(list.map((d) => normDim(d, ndim)))].sort((a, b) => a - b);
}

/**
 * Reduce over `dim` (PyTorch `sum/mean/amax/amin`). Also returns, per output element, the
 * count K of reduced elements and Σ|x| — the inputs of a float32 summation error bound.
 */
export function reduce(
  a: Nd,
  kind: ReduceKind,
  dim?: number | number[],
  keepdim = false,
): { out: Nd; count: number; absSum: Nd } {
  const dims = reduceDims(a.ndim, dim);
  const keptShape = a.shape.map((s, i) => (dims.includes(i) ? 1 : s));
  const n = numel(keptShape);
  const acc = new Float64Array(n).fill(kind === 'max' ? -Infinity : kind === 'min' ? Infinity : 0);
  const abs = new Float64Array(n);
  const idx = broadcastIndex(keptShape, a.shape); // input flat index → output flat index
  for (let i = 0; i < a.data.length; i++) {
    const o = idx[i]!;
    const v = a.data[i]!;
    abs[o] += Math.abs(v);
    if (kind === 'max') acc[o] = Number.isNaN(v) || v > acc[o]! ? v : acc[o]!;
    else if (kind === 'min') acc[o] = Number.isNaN(v) || v < acc[o]! ? v : acc[o]!;
    else acc[o] += v;
  }
  const count = a.data.length / n;
  if (kind === 'mean') for (let i = 0; i < n; i++) acc[i]! /= count;
  const shape = keepdim ? keptShape : a.shape.filter((_, i) => !dims.includes(i));
  return { out: new Nd(shape, acc), count, absSum: new Nd(shape, abs) };
}

// ─── Linear algebra and composites ──────────────────────────────────────────────────────────

/**
 * `torch.matmul`: 1-D operands are promoted (a → [1,K], b → [K,1]) and the added dim removed;
 * batch dims broadcast. Returns the product and Σ_k |a_ik·b_kj| per element (for error bounds).
 */
export function matmul(a: Nd, b: Nd): { out: Nd; absSum: Nd; k: number } {
  const a2 = a.ndim === 1 ? a.reshape([1, a.shape[0]!]) : a;
  const b2 = b.ndim === 1 ? b.reshape([b.shape[0]!, 1]) : b;
  const [M, K] = a2.shape.slice(-2) as [number, number];
  const [K2, N] = b2.shape.slice(-2) as [number, number];
  if (K !== K2) throw new Error(`ref: matmul K mismatch ${K} vs ${K2}`);
  const batch = broadcastShapes(a2.shape.slice(0, -2), b2.shape.slice(0, -2));
  const ai = broadcastIndex(a2.shape.slice(0, -2), batch);
  const bi = broadcastIndex(b2.shape.slice(0, -2), batch);
  const nb = numel(batch);
  const out = new Float64Array(nb * M * N);
  const abs = new Float64Array(nb * M * N);
  for (let p = 0; p < nb; p++) {
    const ao = ai[p]! * M * K;
    const bo = bi[p]! * K * N;
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        let sa = 0;
        for (let k = 0; k < K; k++) {
          const t = a2.data[ao + i * K + k]! * b2.data[bo + k * N + j]!;
          s += t;
          sa += Math.abs(t);
        }
        out[(p * M + i) * N + j] = s;
        abs[(p * M + i) * N + j] = sa;
      }
  }
  let shape = [...batch, M, N];
  if (a.ndim === 1) shape = shape.filter((_, i) => i !== shape.length - 2);
  if (b.ndim === 1) shape = shape.slice(0, -1);
  return { out: new Nd(shape, out), absSum: new Nd(shape, abs), k: K };
}

/** Apply `fn` to every 1-D lane along `dim` (lane values in, lane values out). */
export function alongDim(a: Nd, dim: number, fn: (lane: number[]) => number[]): Nd {
  const d = normDim(dim, a.ndim);
  const size = a.shape[d]!;
  const inner = numel(a.shape.slice(d + 1));
  const outer = numel(a.shape.slice(0, d));
  const out = new Float64Array(a.data.length);
  const lane = new Array<number>(size);
  for (let o = 0; o < outer; o++)
    for (let i = 0; i < inner; i++) {
      const base = o * size * inner + i;
      for (let j = 0; j < size; j++) lane[j] = a.data[base + j * inner]!;
      const r = fn(lane);
      for (let j = 0; j < size; j++) out[base + j * inner] = r[j]!;
    }
  return new Nd([...a.shape], out);
}

export function softmaxLane(lane: number[]): number[] {
  const m = Math.max(...lane);
  const e = lane.map((v) => Math.exp(v - m));
  const s = e.reduce((x, y) => x + y, 0);
  return e.map((v) => v / s);
}

export function logSoftmaxLane(lane: number[]): number[] {
  const m = Math.max(...lane);
  const lse = Math.log(lane.reduce((s, v) => s + Math.exp(v - m), 0));
  return lane.map((v) => v - m - lse);
}

export const softmax = (a: Nd, dim: number) => alongDim(a, dim, softmaxLane);
export const logSoftmax = (a: Nd, dim: number) => alongDim(a, dim, logSoftmaxLane);

/** PyTorch layer_norm over the last dim: biased variance, eps inside the square root. */
export function layerNorm(x: Nd, weight?: Nd, bias?: Nd, eps = 1e-5): Nd {
  const y = alongDim(x, -1, (lane) => {
    const n = lane.length;
    const mean = lane.reduce((s, v) => s + v, 0) / n;
    const variance = lane.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
    const r = 1 / Math.sqrt(variance + eps);
    return lane.map((v) => (v - mean) * r);
  });
  return map((v, w, b) => v * w + b, y, weight ?? 1, bias ?? 0);
}

/** RMSNorm over the last dim: x / sqrt(mean(x²) + eps) · weight. */
export function rmsNorm(x: Nd, weight?: Nd, eps = 1e-6): Nd {
  const y = alongDim(x, -1, (lane) => {
    const r = 1 / Math.sqrt(lane.reduce((s, v) => s + v * v, 0) / lane.length + eps);
    return lane.map((v) => v * r);
  });
  return weight ? map((v, w) => v * w, y, weight) : y;
}

/**
 * Scaled dot-product attention on [..., S, D] like `torch.nn.functional.scaled_dot_product_attention`:
 * softmax(q·kᵀ·scale + mask)·v, scale defaulting to 1/√D; the causal mask is PyTorch's
 * top-left aligned `ones(L, S).tril()`. Also returns the largest |score - rowmax| and
 * Σ|q·k| per row (error-bound inputs).
 */
export function sdpa(
  q: Nd,
  k: Nd,
  v: Nd,
  opts: { causal?: boolean; scale?: number } = {},
): { out: Nd; maxSpread: number; maxQk: number } {
  const D = q.shape[q.ndim - 1]!;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const scores = matmul(q, transpose(k, -1, -2));
  const [L, S] = scores.out.shape.slice(-2) as [number, number];
  let maxSpread = 0;
  let maxQk = 0;
  const sc = scores.out.data;
  const probs = new Float64Array(sc.length);
  for (let r = 0; r < sc.length / S; r++) {
    const i = r % L;
    const lane: number[] = [];
    for (let j = 0; j < S; j++) lane.push(opts.causal && j > i ? -Infinity : sc[r * S + j]! * scale);
    const m = Math.max(...lane);
    for (let j = 0; j < S; j++) {
      if (lane[j] !== -Infinity) maxSpread = Math.max(maxSpread, m - lane[j]!);
      maxQk = Math.max(maxQk, scores.absSum.data[r * S + j]! * Math.abs(scale));
    }
    softmaxLane(lane).forEach((p, j) => (probs[r * S + j] = p));
  }
  return { out: matmul(new Nd(scores.out.shape, probs), v).out, maxSpread, maxQk };
}

// ─── Scalar math ────────────────────────────────────────────────────────────────────────────

/**
 * erf in float64 (JS has none): Maclaurin series for |x| < 2 (terms peak near 4, so about
 * 15 significant digits survive), 1 − erfc beyond.
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 2) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * sum * (2 / Math.sqrt(Math.PI));
  }
  return Math.sign(x) * (1 - erfcLentz(ax));
}

/**
 * erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))) for x ≥ 2, by
 * Lentz's method: relative accuracy near 1e-16 even where erfc is tiny.
 */
function erfcLentz(ax: number): number {
  const tiny = 1e-300;
  let f = ax;
  let C = ax;
  let Dv = 0;
  for (let n = 1; n < 500; n++) {
    const an = n / 2;
    Dv = ax + an * Dv;
    Dv = 1 / (Math.abs(Dv) < tiny ? tiny : Dv);
    C = ax + an / C;
    if (Math.abs(C) < tiny) C = tiny;
    const delta = C * Dv;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
}

/**
 * erfc in float64 without cancellation where it is small: 1 − erf(x) below 2 (≥ 0.0047
 * there, so at most about 2 digits cancel), the continued fraction above.
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  return x < 2 ? 1 - erf(x) : erfcLentz(x);
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
/** Exact GELU x·Φ(x) = 0.5·x·erfc(−x/√2): the erfc form stays accurate for very negative x. */
export const geluExact = (x: number) => 0.5 * x * erfc(-x / Math.SQRT2);
/**
 * tanh GELU 0.5·x·(1 + tanh u), u = √(2/π)(x + 0.044715x³), in its cancellation-free form
 * x·sigmoid(2u) (identical mathematically; 1 + tanh u cancels to 0 in float64 for very
 * negative x, which would make the reference, not kiln, wrong there).
 */
export const geluTanh = (x: number) => x * sigmoid(2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x));
export const silu = (x: number) => x * sigmoid(x);

// ─── Floating-point formats ─────────────────────────────────────────────────────────────────

/** A binary floating-point format: mantissa (fraction) bits and exponent bits. */
export interface Format {
  name: string;
  mant: number;
  exp: number;
}
export const F16: Format = { name: 'float16', mant: 10, exp: 5 };
export const BF16: Format = { name: 'bfloat16', mant: 7, exp: 8 };
export const F32: Format = { name: 'float32', mant: 23, exp: 8 };


const f64View = new DataView(new ArrayBuffer(8));
/** 2^k for k in [-1200, 1200): a table, because `2 ** k` is slow in V8's hot loops. */
const POW2 = Float64Array.from({ length: 2400 }, (_, i) => 2 ** (i - 1200));
const pow2 = (k: number) => POW2[k + 1200]!;
const emin = (f: Format) => 2 - (1 << (f.exp - 1)); // smallest normal exponent
const emax = (f: Format) => (1 << (f.exp - 1)) - 1;
/** The largest finite value of the format. */
export const maxFinite = (f: Format) => (2 - pow2(-f.mant)) * pow2(emax(f));

/** The unbiased binary exponent of a normal float64, read from its bit pattern. */
function exponentOf(x: number): number {
  f64View.setFloat64(0, x);
  return ((f64View.getUint32(0) >>> 20) & 0x7ff) - 1023;
}

/**
 * Round a float64 to `fmt` with round-to-nearest-even. The exponent comes from the float64 bit
 * pattern; the value is then scaled by a power of two so that one ulp of `fmt` at this exponent
 * (the subnormal quantum below the smallest normal) is 1 — exact in float64 — and rounded to an
 * integer, ties to even. `roundToBits` below is the same rounding done on the raw significand
 * bits; the reference's self-test checks that the two agree.
 */
export function roundTo(x: number, fmt: Format): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a < 2 ** -1022) return x < 0 ? -0 : 0; // float64 subnormals lie far below any half quantum
  const qexp = Math.max(exponentOf(a), emin(fmt)) - fmt.mant;
  const scaled = a * pow2(-qexp); // exact: a power-of-two scaling of a normal number
  const fl = Math.floor(scaled);
  const diff = scaled - fl; // exact: scaled < 2^54
  const q = diff > 0.5 || (diff === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  let r = q * pow2(qexp);
  if (r > maxFinite(fmt)) r = Infinity;
  return x < 0 ? -r : r;
}

/**
 * The same rounding on the float64 bit pattern: the 53-bit significand is shifted right to the
 * format's quantum at this exponent and the dropped bits decide the rounding.
 */
export function roundToBits(x: number, fmt: Format): number {
  f64View.setFloat64(0, x);
  const bits = f64View.getBigUint64(0);
  const neg = bits >> 63n === 1n;
  const e11 = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  if (e11 === 0x7ff) return x; // Inf or NaN
  if (e11 === 0) return neg ? -0 : 0;
  const E = e11 - 1023;
  const sig = (1n << 52n) | frac; // value = sig · 2^(E-52)
  const qexp = Math.max(E, emin(fmt)) - fmt.mant; // exponent of the quantum (one ulp)
  const shift = qexp - (E - 52);
  let q: bigint;
  if (shift >= 54) q = 0n; // value < quantum / 2
  else {
    const sh = BigInt(shift);
    q = sig >> sh;
    const rem = sig & ((1n << sh) - 1n);
    const half = 1n << (sh - 1n);
    if (rem > half || (rem === half && (q & 1n) === 1n)) q += 1n;
  }
  let r = Number(q) * 2 ** qexp;
  if (r > maxFinite(fmt)) r = Infinity;
  return neg ? -r : r;
}

export const roundF16 = (x: number) => roundTo(x, F16);
export const roundBF16 = (x: number) => roundTo(x, BF16);
export const roundF32 = (x: number) => roundTo(x, F32);

/**
 * The bit pattern of a value exactly representable in `fmt`, as a signed, ordered integer
 * (sign-magnitude turned into ±magnitude): consecutive representable values differ by 1, so
 * the difference of two patterns counts ulps. For positive values it equals the IEEE bits.
 */
export function orderedBits(v: number, fmt: Format): number {
  if (Number.isNaN(v)) throw new Error('ref: NaN has no order');
  const a = Math.abs(v);
  let mag: number;
  if (a === Infinity) mag = (2 ** fmt.exp - 1) * pow2(fmt.mant);
  else if (a < pow2(emin(fmt))) mag = a * pow2(fmt.mant - emin(fmt));
  else {
    const E = exponentOf(a);
    mag = (E - emin(fmt) + 1) * pow2(fmt.mant) + (a * pow2(fmt.mant - E) - pow2(fmt.mant));
  }
  if (!Number.isInteger(mag)) throw new Error(`ref: ${v} is not a ${fmt.name} value`);
  return v < 0 || objectIs(v, -0) ? -mag : mag;
}

/** IEEE bits of a float16 value (for checking the rounding against known encodings). */
export const f16Bits = (v: number) => {
  const o = orderedBits(v, F16);
  return o < 0 || objectIs(v, -0) ? 0x8000 | -o : o;
};

/** The reference bfloat16 rounding through float32 bits, the classic `(u + 0x7fff + lsb) >> 16`. */
export function bf16FromF32Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (Number.isNaN(f[0]!)) return NaN;
  const lsb = (u[0]! >>> 16) & 1;
  u[0] = ((u[0]! + 0x7fff + lsb) >>> 16) << 16;
  return f[0]!;
}

/** ulp distance between two values of `fmt` (both must be representable; Infinity if NaN vs number). */
export function ulpDistance(a: number, b: number, fmt: Format): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Infinity;
  return Math.abs(orderedBits(a, fmt) - orderedBits(b, fmt));
}

/** The size of one ulp of `fmt` at |v|. */
export function ulpOf(v: number, fmt: Format): number {
  const a = Math.abs(v);
  if (a < pow2(emin(fmt))) return pow2(emin(fmt) - fmt.mant);
  return pow2(exponentOf(a) - fmt.mant);
}

// ─── Random data ────────────────────────────────────────────────────────────────────────────

/** mulberry32: a small, seeded, reproducible PRNG. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  int(lo: number, hiExclusive: number): number {
    return lo + Math.floor(this.next() * (hiExclusive - lo));
  }
  array(n: number, gen: (r: Rng) => number): number[] {
    return Array.from({ length: n }, () => gen(this));
  }
}

/** A seed derived from a test's name, so each case has its own reproducible data. */
export function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

// ─── Comparison ─────────────────────────────────────────────────────────────────────────────

/** float32 unit roundoff 2^-24: the bound of one correctly rounded float32 operation. */
export const U32 = 2 ** -24;

/**
 * Per-element check result: the first few failing elements, for a readable message.
 * `tol(i)` is the allowed |got - want| at flat index i.
 */
export function mismatches(
  got: ArrayLike<number>,
  want: Nd,
  ok: (g: number, w: number, i: number) => boolean,
  limit = 5,
): string[] {
  const bad: string[] = [];
  if (got.length !== want.data.length) return [`length ${got.length}, want ${want.data.length}`];
  let count = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want.data[i]!;
    if (!ok(g, w, i)) {
      count++;
      if (bad.length < limit) bad.push(`[${unflatten(i, want.shape)}] got ${g}, want ${w}`);
    }
  }
  if (count > limit) bad.push(`… ${count - limit} more of ${got.length}`);
  return bad;
}

export function unflatten(i: number, shape: number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return out;
}

/** Exact equality with NaN = NaN (and -0 = 0). */
export const sameValue = (g: number, w: number) => g === w || (Number.isNaN(g) && Number.isNaN(w));

/**
 * float32 closeness: |g - w| ≤ rtol·max(|w|, floor) + extra. Non-finite values must match
 * exactly. `floor` turns the relative test into an absolute one near zero, where an op's
 * output can be small while its float32 error is set by the size of its input.
 */
export function closeF32(g: number, w: number, rtol: number, floor: number, extra = 0): boolean {
  if (!Number.isFinite(w) || !Number.isFinite(g)) return sameValue(g, w);
  return Math.abs(g - w) <= rtol * Math.max(Math.abs(w), floor) + extra;
}

/**
 * Half-precision closeness. `got` must be a value of the format; the expectation is the float64
 * result rounded once; allowed: `ulps` ulps of the format (1 by default), or else
 * |g - w| ≤ ulpOf(w) + extra, where `extra` is a computed float32 accumulation bound for long
 * reductions whose float64 result lies near a rounding boundary.
 */
export function closeHalf(g: number, wExact: number, fmt: Format, ulps = 1, extra = 0): boolean {
  if (roundTo(g, fmt) !== g && !Number.isNaN(g)) return false; // not a value of the format
  const w = roundTo(wExact, fmt);
  if (!Number.isFinite(w) || !Number.isFinite(g)) return sameValue(g, w);
  if (ulpDistance(g, w, fmt) <= ulps) return true;
  return extra > 0 && Math.abs(g - w) <= ulps * ulpOf(w, fmt) + extra;
}
