/**
 * GPU launch decisions for the CUDA target: for each fused kernel, a small configuration
 * (threads per block, lanes per thread, threads per row, matmul tiles), the launch
 * geometry it implies (grid as dims or `cdiv(<dim>,<n>)`, block, dynamic shared memory),
 * and the candidate configurations an autotuner may time. Pure functions of the Kernel, so
 * the renderer (lib/codegen/cuda*.ts) and the plan agree by construction, and everything
 * is tested without a GPU. Configurations are plain JSON: the tuner's choice is stored in
 * the bundle and replayed on load. See docs/CUDA.md.
 */
import { dimMul, dimProd, dimStr, dimToJSON, ITEMSIZE, isStatic, type Dim, type DType } from '../ir';
import type { DimJSON, LaunchPlan, PlanBuffer, PlanStep } from '../ir/plan';
import type { Kernel, KOperand } from './kernel';
import { type ViewStack } from './view';

/** What the decisions depend on besides the kernel. */
export interface GpuFacts {
  /** Architecture number (80 for sm_80): cp.async needs 80. */
  readonly arch: number;
  /** Streaming multiprocessors (for grid-filling heuristics); default 132 (H100). */
  readonly smCount?: number;
  /** True for an arch-specific target (`sm_90a`): wgmma and other features that do not carry forward. */
  readonly archSpecific?: boolean;
  /**
   * float32 matmuls may run on TF32 tensor cores (the `tf32` compile option, like PyTorch's
   * `allow_tf32`): operands rounded to 10 mantissa bits, f32 accumulate. sm_80 and newer.
   */
  readonly tf32?: boolean;
  /**
   * False turns off choosing the wgmma matmul on sm_90a (heuristic and candidates;
   * `KILN_CUDA_WGMMA=0`): the mma kernel serves every matmul, as on sm_90.
   */
  readonly wgmma?: boolean;
}

/** Elementwise: one thread per `vec` consecutive elements of the last domain dim. */
export interface ElementwiseConfig {
  readonly kind: 'elementwise';
  readonly block: number;
  readonly vec: number;
}

/**
 * Row kernel: `threads` per row (1: a thread per row, for reductions over leading dims;
 * 32: a warp per row; more: the whole block), `vec` lanes per thread along the reduced last
 * dim, and where each thread keeps the elements of the row that reduction stages read
 * (`cache`): in registers, in shared memory (each thread reads back only what it wrote, so
 * no barrier), or nowhere (every stage reads memory again).
 */
export interface RowConfig {
  readonly kind: 'reduce';
  readonly block: number;
  readonly threads: number;
  readonly vec: number;
  readonly cache: 'registers' | 'shared' | 'none';
  /**
   * Parts per row of a two-level reduction (too few rows to fill the GPU, one stage): a
   * first kernel (`<name>__part`) reduces each part of every row (with a block, or with the
   * row's thread for reductions over leading dims) and writes a partial; the kernel itself
   * then combines a row's partials in part order (deterministic) and stores.
   */
  readonly split?: number;
}

/** Matmul on tensor cores (f16/bf16, mma.sync m16n8k16, f32 accumulate). */
export interface MmaConfig {
  readonly kind: 'matmul';
  readonly variant: 'mma';
  readonly bm: number;
  readonly bn: number;
  readonly warpsM: number;
  readonly warpsN: number;
  /** Shared-memory pipeline depth (cp.async); 1 = synchronous loads. */
  readonly stages: number;
  /**
   * Split-K (too few output tiles to fill the GPU): K is cut into `split` parts of whole K
   * tiles; a first kernel (`<name>__part`) computes every tile once per part into float32
   * partials, and the kernel itself adds an element's partials in part order (deterministic,
   * no atomics) and runs the fused epilogue once. The row kernels' two-level split (`RowConfig.split`).
   */
  readonly split?: number;
}

/**
 * float32 matmul on TF32 tensor cores (`mma.sync.aligned.m16n8k8` tf32, f32 accumulate; only
 * with `GpuFacts.tf32`): the tiles, warps and cp.async ring of `MmaConfig` with 4-byte
 * elements (16-byte chunks of 4 floats), K tiles of `TF32_BK`.
 */
export interface Tf32Config {
  readonly kind: 'matmul';
  readonly variant: 'tf32';
  readonly bm: number;
  readonly bn: number;
  readonly warpsM: number;
  readonly warpsN: number;
  /** Shared-memory pipeline depth (cp.async); 1 = synchronous loads. */
  readonly stages: number;
}

/** Matmul on CUDA cores: f32 (shared-memory tiles, bm×bn per block of 256 threads) or exact int32. */
export interface SimtConfig {
  readonly kind: 'matmul';
  readonly variant: 'simt' | 'int';
  readonly bm: number;
  readonly bn: number;
}

/**
 * Matmul on Hopper warpgroup MMA (`wgmma.mma_async`, sm_90a only): bm/64
 * warpgroups each compute 64×bn with m64n{bn}k16, operands from a `stages`-deep ring of
 * 128B-swizzled shared tiles (BK = 64). On an sm_90a target (Hopper's own, see
 * `deviceCubinTarget`) it is the default and the first candidates for every f16/bf16 matmul
 * it can run (`wgmmaProblem`); the mma kernel serves the rest.
 */
export interface WgmmaConfig {
  readonly kind: 'matmul';
  readonly variant: 'wgmma';
  readonly bm: 64 | 128;
  readonly bn: 128 | 192 | 256;
  readonly stages: number;
  /** Split-K parts (as MmaConfig.split; offered to the tuner only, where the tiles leave SMs idle). */
  readonly split?: number;
}

/** Every matmul configuration. */
export type MatmulConfig = MmaConfig | Tf32Config | SimtConfig | WgmmaConfig;

export type GpuConfig = ElementwiseConfig | RowConfig | MatmulConfig;

/** One step's launch geometry. */
export interface Geometry {
  readonly grid: readonly DimJSON[];
  readonly block: readonly number[];
  readonly sharedBytes: number;
}

/** The K tile of the tensor-core kernel (two k16 steps). */
export const MMA_BK = 32;
/** The K tile of the f32 kernel. */
export const SIMT_BK = 16;
/** The K tile of the wgmma kernel: one 128-byte swizzle row of 16-bit elements. */
export const WGMMA_BK = 64;
/** Shared memory above this needs more than an H100 block may have (227 KiB). */
export const MAX_BLOCK_SHARED = 232448;
/** Shared-memory row padding (elements) that keeps ldmatrix rows conflict-free and 16-byte aligned. */
export const MMA_PAD = 8;
/** The K tile of the TF32 kernel (two k8 steps; 64-byte rows, as the f16 kernel's). */
export const TF32_BK = 16;
/**
 * Row padding (floats) of the TF32 kernel's shared tiles. Its MMAs see the K of each k8 step
 * permuted (MMA k t and t+4 are stored k 2t and 2t+1, for A and B alike: a sum does not
 * care), so a K-major operand gives each lane its two k values as one 64-bit load. With K-major
 * rows of TF32_BK + 8 = 24 floats, the 4 rows g of a half-warp's 64-bit loads start 8 banks
 * apart (g·24 mod 32); with M/N-major rows of bm|bn + 4, the 32-bit loads of k row 2t, column g
 * fall on bank 8t + g: every fragment load is conflict-free.
 */
export const TF32_PAD_K = 8;
export const TF32_PAD_MN = 4;

// ---- dim helpers ------------------------------------------------------------------------

/** True when `d` is a multiple of `n` for every value of its symbols. */
export function divisible(d: Dim, n: number): boolean {
  if (isStatic(d)) return d % n === 0;
  return d.terms.every((t) => t.coef % n === 0);
}

/** ceil(d / n) as a grid entry. */
export function cdiv(d: Dim, n: number): DimJSON {
  if (isStatic(d)) return Math.ceil(d / n);
  return n === 1 ? dimStr(d) : `cdiv(${dimStr(d)},${n})`;
}

/** A size for heuristics: symbols guessed at 256. */
function guess(d: Dim): number {
  if (isStatic(d)) return d;
  return d.terms.reduce((s, t) => s + t.coef * 256 ** t.vars.length, 0);
}

const pow2ceil = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

// ---- access analysis ---------------------------------------------------------------------

/** How a view is read across the lanes of one thread (consecutive indices of the last domain dim). */
export type LaneAccess = 'vector' | 'broadcast' | 'scalar';

/** `vector`: one aligned `vec`-element load; `broadcast`: the same element for every lane. */
export function laneAccess(view: ViewStack, vec: number): LaneAccess {
  if (view.length !== 1) return 'scalar';
  const v = view[0];
  const last = v.shape.length - 1;
  if (last < 0 || v.mask) return 'scalar';
  if (v.strides[last] === 0) return 'broadcast';
  if (v.strides[last] !== 1) return 'scalar';
  const aligned = divisible(v.offset, vec) && v.strides.slice(0, last).every((s) => divisible(s, vec));
  return aligned ? 'vector' : 'scalar';
}

/** Every (view, dtype) a kernel reads or writes with domain coordinates. */
function accesses(k: Kernel): { view: ViewStack; dtype: DType }[] {
  const out = k.stores.map((s) => ({ view: s.view, dtype: k.params[s.param].dtype }));
  for (const n of k.nodes) if (n.k === 'load') out.push({ view: n.view, dtype: n.dtype });
  return out;
}

/**
 * The widest lane count (≤ 8, at most 16 bytes per access) at which some access is a
 * vector access, given that lanes must not cross the last dim (`tailOk`: a rank-1 domain,
 * whose ragged end is handled apart). 1 when nothing vectorizes.
 */
function pickVec(k: Kernel, tailOk: boolean): number {
  const last = k.domain[k.domain.length - 1];
  if (last === undefined) return 1;
  for (const vec of [8, 4, 2]) {
    if (!tailOk && !(isStatic(last) && last % vec === 0)) continue;
    const vector = accesses(k).filter((a) => laneAccess(a.view, vec) === 'vector');
    if (vector.length === 0) continue;
    if (Math.max(...vector.map((a) => ITEMSIZE[a.dtype])) * vec > 16) continue;
    return vec;
  }
  return 1;
}

/** True when every index in the kernel fits int32 (all sizes static and below 2^31). */
export function fitsInt32(k: Kernel): boolean {
  const sizes = [dimProd(k.domain), ...k.params.map((p) => dimProd(p.node.shape))];
  return sizes.every((s) => isStatic(s) && s < 2 ** 31 - 1024);
}

// ---- row kernels -------------------------------------------------------------------------

/** Rows (kept dims) and row length (reduced dims) of a row kernel. */
export function rowShape(k: Kernel): { rows: Dim; len: Dim } {
  return { rows: dimProd(k.domain.filter((_, d) => !k.reduced[d])), len: dimProd(k.domain.filter((_, d) => k.reduced[d])) };
}

/** Loads of a row kernel read by reduction stages along reduced dims (the ones worth keeping). */
export function stageLoads(k: Kernel): number[] {
  const used = new Set<number>();
  const walk = (i: number): void => {
    const n = k.nodes[i];
    if (used.has(i)) return;
    used.add(i);
    if (n.k === 'alu') n.src.forEach(walk);
    else if (n.k === 'guard') walk(n.src);
    else if (n.k === 'gather') walk(n.row);
  };
  k.stages.forEach((s) => walk(s.src));
  return [...used].filter((i) => k.nodes[i].k === 'load' && k.reduced.some((r, d) => r && k.deps[i][d])).sort((a, b) => a - b);
}

/** Register budget (values per thread) for keeping rows in registers. */
const rowBudget = (threads: number): number => (threads >= 512 ? 16 : 32);

/**
 * Dynamic shared memory a block may use for a cached row: A100 (sm_80, 163 KiB per block),
 * H100/H200 (sm_90) and B200 (sm_100, 227 KiB) allow more than the 99 KiB of sm_86/89/120.
 */
const sharedBudget = (arch: number): number => ([80, 90, 100, 103].includes(arch) ? 160 * 1024 : 96 * 1024);

/** Where a row fits for `threads` and `vec`: registers, else shared memory (block rows), else nowhere. */
function cacheOf(k: Kernel, threads: number, vec: number, facts: GpuFacts): RowConfig['cache'] {
  const { len } = rowShape(k);
  const loads = stageLoads(k).length;
  if (!isStatic(len) || threads < 2 || loads === 0) return 'none';
  const per = Math.ceil(len / (threads * vec)) * vec;
  if (per * loads <= rowBudget(threads)) return 'registers';
  if (threads >= 64 && 4 * len * loads <= sharedBudget(facts.arch)) return 'shared';
  return 'none';
}

/** Bytes of dynamic shared memory of a row configuration (4 per cached element). */
export function rowSharedBytes(k: Kernel, c: RowConfig): number {
  const { len } = rowShape(k);
  return c.cache === 'shared' && isStatic(len) ? 4 * len * stageLoads(k).length : 0;
}

/**
 * Parts per row worth splitting a one-stage reduction into, when its rows cannot fill the
 * GPU. Block rows (the last dim reduced, fewer rows than SMs): enough parts for two blocks
 * per SM, each at least four chunks per thread. A thread per row (leading dims reduced,
 * `block` threads a block): enough parts for a full SM of threads (2048) on every SM, each
 * at least 64 elements, so the partials stay a small fraction of the input. Undefined when
 * the kernel is not such a reduction or its sizes are symbolic.
 */
function splitParts(k: Kernel, facts: GpuFacts, threads: number, vec: number, block: number): number | undefined {
  const { rows, len } = rowShape(k);
  const lastReduced = k.reduced[k.reduced.length - 1] ?? false;
  if (k.stages.length !== 1 || !isStatic(rows) || !isStatic(len)) return undefined;
  const sms = facts.smCount ?? 132;
  let parts: number;
  if (threads === 1 && !lastReduced) parts = Math.min(Math.ceil((2048 * sms) / (Math.ceil(rows / block) * block)), Math.floor(len / 64));
  else if (threads >= 64 && lastReduced && rows < sms) parts = Math.min(Math.ceil((2 * sms) / Math.max(1, rows)), Math.floor(len / (threads * vec * 4)));
  else return undefined;
  return parts >= 2 ? parts : undefined;
}

function rowConfig(k: Kernel, facts: GpuFacts, threads: number, block?: number, split = true): RowConfig {
  const lastReduced = k.reduced[k.reduced.length - 1] ?? false;
  const vec = threads > 1 && lastReduced ? pickVec(k, false) : 1;
  const b = block ?? (threads >= 64 ? threads : 256);
  const parts = split ? splitParts(k, facts, threads, vec, b) : undefined;
  if (parts !== undefined) return { kind: 'reduce', block: b, threads, vec, cache: 'none', split: parts };
  return { kind: 'reduce', block: b, threads, vec, cache: cacheOf(k, threads, vec, facts) };
}

/** The dtype of a split reduction's partials (float accumulators, else 32-bit integers). */
export function partialsDType(k: Kernel): DType {
  if (k.kind === 'matmul') return 'float32'; // split-K: the f32 accumulators
  const dt = k.stages[0].dtype;
  return dt === 'int32' || dt === 'bool' ? 'int32' : 'float32';
}

function defaultRow(k: Kernel, facts: GpuFacts): RowConfig {
  const { len } = rowShape(k);
  const lastReduced = k.reduced[k.reduced.length - 1] ?? false;
  // Reductions over leading dims: a thread per row reads coalesced along the kept last dim.
  if (!lastReduced || (isStatic(len) && len <= 4)) return rowConfig(k, facts, 1);
  if (!isStatic(len)) return rowConfig(k, facts, 128);
  if (len <= 1024) return rowConfig(k, facts, 32);
  return rowConfig(k, facts, Math.min(1024, Math.max(64, pow2ceil(len / 16))));
}

function rowCandidates(k: Kernel, facts: GpuFacts): RowConfig[] {
  const lastReduced = k.reduced[k.reduced.length - 1] ?? false;
  if (!lastReduced) return [128, 256, 512].flatMap((b) => [rowConfig(k, facts, 1, b), rowConfig(k, facts, 1, b, false)]);
  const { len } = rowShape(k);
  const out = [rowConfig(k, facts, 32, 128), rowConfig(k, facts, 32, 256)];
  for (const t of [64, 128, 256, 512, 1024]) {
    if (isStatic(len) && len < t) continue;
    out.push(rowConfig(k, facts, t));
    if (out[out.length - 1].split) out.push(rowConfig(k, facts, t, undefined, false));
  }
  return out;
}

// ---- matmul ------------------------------------------------------------------------------

/** How each matmul operand reaches shared memory (see docs/CUDA.md, "Matmul"). */
export interface MmaLayout {
  /** `k`: A's K is contiguous (16-byte chunks along K); `m`: M is; `scalar`: element loads. */
  readonly a: 'k' | 'm' | 'scalar';
  /** `n`: B's N is contiguous; `k`: K is; `scalar`: element loads. */
  readonly b: 'n' | 'k' | 'scalar';
}

/** The operand layouts of a matmul kernel for 16-byte chunks of `chunk` elements (8 × 2 bytes; 4 × 4 for TF32). */
export function mmaLayout(k: Kernel, chunk = 8): MmaLayout {
  const mm = k.matmul!;
  const r = k.domain.length;
  const [M, N] = [k.domain[r - 2], k.domain[r - 1]];
  const chunked = (o: KOperand, contig: number, other: number, along: Dim): boolean => {
    const v = o.view;
    const s = v[0].strides;
    if (ITEMSIZE[k.params[o.param].dtype] * chunk !== 16) return false; // converted as loaded (a 16-bit operand of a TF32 matmul)
    const batchOk = s.slice(0, r - 2).every((x) => divisible(x, chunk));
    return s[contig] === 1 && divisible(s[other], chunk) && batchOk && divisible(v[0].offset, chunk) && divisible(along, chunk);
  };
  const a = chunked(mm.a, r - 1, r - 2, mm.k) ? 'k' : chunked(mm.a, r - 2, r - 1, M) ? 'm' : 'scalar';
  const b = chunked(mm.b, r - 1, r - 2, N) ? 'n' : chunked(mm.b, r - 2, r - 1, mm.k) ? 'k' : 'scalar';
  return { a, b };
}

/**
 * The matmul's operand dtype: float32 where the operands are stored in different dtypes (a
 * float32 matmul reading one of them from 16-bit storage, see `narrowOperands`).
 */
export function matmulDType(k: Kernel): DType {
  const [a, b] = [k.matmul!.a, k.matmul!.b].map((o) => k.params[o.param].dtype);
  return a === b ? a : 'float32';
}

const MMA_TILES: readonly Omit<MmaConfig, 'stages'>[] = [
  { kind: 'matmul', variant: 'mma', bm: 128, bn: 128, warpsM: 2, warpsN: 4 },
  { kind: 'matmul', variant: 'mma', bm: 64, bn: 128, warpsM: 2, warpsN: 2 },
  { kind: 'matmul', variant: 'mma', bm: 64, bn: 64, warpsM: 2, warpsN: 2 },
  { kind: 'matmul', variant: 'mma', bm: 32, bn: 64, warpsM: 1, warpsN: 2 },
];

/** Whether the tensor-core kernel streams tiles with cp.async (both operands chunked, sm_80+). */
export function mmaAsync(k: Kernel, facts: GpuFacts): boolean {
  const l = mmaLayout(k);
  return facts.arch >= 80 && l.a !== 'scalar' && l.b !== 'scalar';
}

function mmaConfig(k: Kernel, facts: GpuFacts, tile: Omit<MmaConfig, 'stages'>, stages = 3): MmaConfig {
  return { ...tile, stages: mmaAsync(k, facts) ? stages : 1 };
}

/** Blocks a matmul launches with tiles bm × bn. */
function ctas(k: Kernel, bm: number, bn: number): number {
  const r = k.domain.length;
  return Math.ceil(guess(k.domain[r - 2]) / bm) * Math.ceil(guess(k.domain[r - 1]) / bn) * guess(dimProd(k.domain.slice(0, r - 2)));
}

/** Whether float32 matmuls run on TF32 tensor cores: asked for (`GpuFacts.tf32`) and sm_80 or newer. */
export function tf32Enabled(facts: GpuFacts): boolean {
  return facts.tf32 === true && facts.arch >= 80;
}

/** The TF32 kernel's tiles: those of the f16/bf16 kernel. */
const TF32_TILES: readonly Omit<Tf32Config, 'stages'>[] = MMA_TILES.map((t) => ({ ...t, variant: 'tf32' }));

/** A TF32 configuration: cp.async with `stages` when both operands come in 16-byte chunks of 4 floats, else synchronous loads. */
function tf32Config(k: Kernel, tile: Omit<Tf32Config, 'stages'>, stages = 3): Tf32Config {
  const l = mmaLayout(k, 4);
  return { ...tile, stages: l.a !== 'scalar' && l.b !== 'scalar' ? stages : 1 };
}

// wgmma tiles the heuristic chooses from, best first.
const WGMMA_TILES: readonly WgmmaConfig[] = [
  { kind: 'matmul', variant: 'wgmma', bm: 128, bn: 256, stages: 4 },
  { kind: 'matmul', variant: 'wgmma', bm: 128, bn: 128, stages: 6 },
];
// One warpgroup per block: twice the blocks of a 128-row tile. Offered to the tuner (only)
// where every 128-row tile leaves SMs idle (a [1024, 768] projection: 48 blocks on 132
// SMs); checked on hardware by the GPU suite but timed on few shapes.
const WGMMA_SMALL_TILES: readonly WgmmaConfig[] = [
  { kind: 'matmul', variant: 'wgmma', bm: 64, bn: 256, stages: 4 },
  { kind: 'matmul', variant: 'wgmma', bm: 64, bn: 128, stages: 6 },
];
// Three 64-column atoms: offered to the tuner (only) where its blocks fill the GPU's waves
// better than both 128-row tiles do (a [1024, 3072] output: 128 blocks of 128×192 on 132 SMs,
// against 96 of 128×256 or 192 of 128×128), and as a split-K tile.
const WGMMA_WIDE_FIT: WgmmaConfig = { kind: 'matmul', variant: 'wgmma', bm: 128, bn: 192, stages: 4 };

/** The share of the GPU's block slots (one block per SM, whole waves) that `n` blocks keep busy. */
function waveFill(n: number, sms: number): number {
  return n / (Math.ceil(n / sms) * sms);
}

/**
 * The wgmma configurations offered for `k` (none off sm_90a, or with `facts.wgmma` false):
 * those it can run, except over a broadcast batch (an operand with a batch stride of 0), a
 * layout not yet measured on hardware.
 */
function wgmmaConfigs(k: Kernel, facts: GpuFacts, tiles = WGMMA_TILES): WgmmaConfig[] {
  if (!facts.archSpecific || facts.wgmma === false || k.kind !== 'matmul' || !k.matmul) return [];
  const r = k.domain.length;
  const broadcast = [k.matmul.a, k.matmul.b].some((o) => o.view[0].strides.slice(0, r - 2).some((st, d) => st === 0 && guess(k.domain[d]) > 1));
  return broadcast ? [] : tiles.filter((c) => wgmmaProblem(k, c, facts) === undefined);
}

function defaultMatmul(k: Kernel, facts: GpuFacts): MatmulConfig {
  const sms = facts.smCount ?? 132;
  const dt = matmulDType(k);
  if (dt === 'int32') return { kind: 'matmul', variant: 'int', bm: 16, bn: 16 };
  // wgmma on sm_90a, where there is at least one full tile row: the largest tile that still
  // gives every SM a block, else 128×128 while that gives at least half of them one. Fewer
  // blocks (few rows, or a narrow output): one-warpgroup 64×128 tiles, K split into the parts
  // that fill one wave (the tuner's pick at 16, 64 and 128 × 4096 × 4096 on an H100), for a
  // static M of 16 rows or more, an output 512 columns wide or more (narrower ones: more
  // blocks from the mma kernel's smaller tiles) and a K long enough to split; a dynamic M
  // keeps 128-row tiles, for its large sizes. Else 128×128, or the mma kernel (and split-K).
  const rows = k.domain[k.domain.length - 2];
  const M = guess(rows);
  const wg = wgmmaConfigs(k, facts).filter((c) => M >= c.bm);
  const full = wg.find((c) => ctas(k, c.bm, c.bn) >= sms);
  if (full) return full;
  const last = wg[wg.length - 1];
  if (last && (2 * ctas(k, last.bm, last.bn) >= sms || !isStatic(rows))) return last;
  const wide = guess(k.domain[k.domain.length - 1]) >= 512;
  const [narrow] = isStatic(rows) && M >= 16 && wide ? wgmmaConfigs(k, facts, [WGMMA_SMALL_TILES[1]]) : [];
  const wave = narrow && oneWaveParts(k, facts, narrow);
  if (narrow && wave) return { ...narrow, split: wave };
  if (last) return last;
  if (dt === 'float32' && tf32Enabled(facts)) return tf32Config(k, TF32_TILES.find((t) => ctas(k, t.bm, t.bn) >= sms) ?? TF32_TILES[TF32_TILES.length - 1]);
  if (dt === 'float32') return { kind: 'matmul', variant: 'simt', ...(ctas(k, 128, 128) >= sms ? { bm: 128, bn: 128 } : { bm: 64, bn: 64 }) };
  const tile = mmaTile(k, facts);
  // Too few warps for the tensor cores: split K, when the sizes are known and the work is worth a second launch.
  const flop = 2 * guess(dimProd(k.domain)) * guess(k.matmul!.k);
  if (!k.domain.every(isStatic) || flop < SPLIT_MIN_FLOP || !tooFewWarps(k, facts)) return mmaConfig(k, facts, tile);
  const t = splitTile(k);
  const parts = splitKParts(k, facts, t);
  return parts ? { ...mmaConfig(k, facts, t), split: parts } : mmaConfig(k, facts, tile);
}

/** The unsplit tile: the largest that still gives every SM a block, else the smallest. */
function mmaTile(k: Kernel, facts: GpuFacts): Omit<MmaConfig, 'stages'> {
  return MMA_TILES.find((t) => ctas(k, t.bm, t.bn) >= (facts.smCount ?? 132)) ?? MMA_TILES[MMA_TILES.length - 1];
}

/**
 * True when the unsplit tiles give the GPU fewer than 4 warps per SM: an SM's four
 * sub-partitions each have their own tensor cores, and a warp runs on one, so some idle
 * (64×4096×4096 on 132 SMs: 128 blocks of 2 warps).
 */
function tooFewWarps(k: Kernel, facts: GpuFacts): boolean {
  const t = mmaTile(k, facts);
  return ctas(k, t.bm, t.bn) * t.warpsM * t.warpsN < 4 * (facts.smCount ?? 132);
}

/** Each part of a split-K matmul covers at least this many K tiles (256 of K): the pipeline fills and the partials stay small beside the operands. */
const SPLIT_MIN_KTILES = 8;
/** The heuristic splits only matmuls of at least this much work (2·M·N·K; the tuner's floor too): below it a second launch costs more than it gains. */
const SPLIT_MIN_FLOP = 2 ** 24;
/** Threads per block of a split-K matmul's combine kernel (a thread per output element). */
export const SPLIT_COMBINE_BLOCK = 256;

/** The tile of a split-K matmul: the largest whose rows and columns the output covers at least half of (32×64 at least). */
function splitTile(k: Kernel): Omit<MmaConfig, 'stages'> {
  const r = k.domain.length;
  const [M, N] = [guess(k.domain[r - 2]), guess(k.domain[r - 1])];
  return MMA_TILES.find((t) => t.bm <= Math.max(32, pow2ceil(M)) && t.bn <= Math.max(64, pow2ceil(N))) ?? MMA_TILES[MMA_TILES.length - 1];
}

/**
 * Parts to split K into with `tile` (see MmaConfig.split): enough blocks for two per SM
 * (times `scale`, for the tuner's other candidates), each part at least SPLIT_MIN_KTILES K
 * tiles, and partials (8 bytes per output element and part: written, then read) no more bytes
 * than the operands; evened out so that no part is empty. Undefined below two parts or for a
 * symbolic K.
 */
function splitKParts(k: Kernel, facts: GpuFacts, tile: { readonly bm: number; readonly bn: number }, scale = 1, bk = MMA_BK): number | undefined {
  const K = k.matmul!.k;
  if (!isStatic(K)) return undefined;
  const r = k.domain.length;
  const [M, N] = [guess(k.domain[r - 2]), guess(k.domain[r - 1])];
  const kt = Math.ceil(K / bk);
  const blocks = scale * Math.ceil((2 * (facts.smCount ?? 132)) / ctas(k, tile.bm, tile.bn));
  const want = Math.min(blocks, Math.floor(kt / SPLIT_MIN_KTILES), Math.floor((M * K + K * N) / (4 * M * N)));
  return want >= 2 ? Math.ceil(kt / Math.ceil(kt / want)) : undefined;
}

/**
 * Split-K candidates for the tuner: when the unsplit tiles give too few warps (static sizes),
 * or for a symbolic M or N (the tuner measures at its tuning sizes, 256 unless told): the
 * split tile and the smaller ones, each at its heuristic part count and twice that, plus a
 * 4-stage ring. Never for a symbolic batch: its parts share grid.z with the batch, whose
 * limit (65535) a split would reach at a batch S times smaller, at run time.
 */
function splitCandidates(k: Kernel, facts: GpuFacts): MmaConfig[] {
  if (!k.domain.slice(0, -2).every(isStatic)) return [];
  if (k.domain.every(isStatic) && !tooFewWarps(k, facts)) return [];
  const out: MmaConfig[] = [];
  for (const t of MMA_TILES.slice(MMA_TILES.findIndex((x) => x === splitTile(k)))) {
    for (const scale of [1, 2]) {
      const parts = splitKParts(k, facts, t, scale);
      if (parts && !out.some((c) => c.bm === t.bm && c.bn === t.bn && c.split === parts)) out.push({ ...mmaConfig(k, facts, t), split: parts });
    }
  }
  if (out.length && mmaAsync(k, facts)) out.push({ ...out[0], stages: 4 });
  return out;
}

/**
 * Split-K wgmma candidates for a matmul whose wgmma tiles leave SMs idle (static sizes, work
 * worth a second launch): the one-warpgroup tiles, 128×128 and 128×192, each at the part
 * count that gives about two blocks per SM and at the most parts that fit one wave, parts of
 * at least SPLIT_MIN_KTILES 64-wide K tiles.
 */
function wgmmaSplits(k: Kernel, facts: GpuFacts): WgmmaConfig[] {
  if (!k.domain.every(isStatic) || 2 * guess(dimProd(k.domain)) * guess(k.matmul!.k) < SPLIT_MIN_FLOP) return [];
  const tiles = wgmmaConfigs(k, facts, [...WGMMA_SMALL_TILES, WGMMA_TILES[1], WGMMA_WIDE_FIT]);
  // About two blocks per SM; and the most parts that still fit one wave (fewer partials,
  // longer pipelines), where that is another count.
  return tiles.flatMap((t) => [...new Set([splitKParts(k, facts, t, 1, WGMMA_BK), oneWaveParts(k, facts, t)])].flatMap((split) => (split ? [{ ...t, split }] : [])));
}

/**
 * The most split-K parts of wgmma tile `t` that still fit one wave, each of at least
 * SPLIT_MIN_KTILES 64-wide K tiles, evened out so that no part is empty (static sizes, work
 * worth a second launch); undefined below two.
 */
function oneWaveParts(k: Kernel, facts: GpuFacts, t: WgmmaConfig): number | undefined {
  if (!k.domain.every(isStatic) || !isStatic(k.matmul!.k) || 2 * guess(dimProd(k.domain)) * guess(k.matmul!.k) < SPLIT_MIN_FLOP) return undefined;
  const kt = Math.ceil(guess(k.matmul!.k) / WGMMA_BK);
  const want = Math.min(Math.floor((facts.smCount ?? 132) / ctas(k, t.bm, t.bn)), Math.floor(kt / SPLIT_MIN_KTILES));
  return want >= 2 ? Math.ceil(kt / Math.ceil(kt / want)) : undefined;
}

function matmulCandidates(k: Kernel, facts: GpuFacts): MatmulConfig[] {
  const dt = matmulDType(k);
  if (dt === 'int32') return [defaultMatmul(k, facts)];
  if (dt === 'float32' && tf32Enabled(facts)) {
    const out = TF32_TILES.map((t) => tf32Config(k, t));
    if (out[0].stages > 1) out.push(...TF32_TILES.slice(0, 2).map((t) => tf32Config(k, t, 2)));
    return out;
  }
  if (dt === 'float32') return [64, 128].map((t) => ({ kind: 'matmul', variant: 'simt', bm: t, bn: t }));
  const sms = facts.smCount ?? 132;
  const wg = wgmmaConfigs(k, facts);
  const idle = wg.length > 0 && wg.every((c) => ctas(k, c.bm, c.bn) < sms);
  const fill = (c: WgmmaConfig) => waveFill(ctas(k, c.bm, c.bn), sms);
  const wide = wg.length > 0 && wg.every((c) => fill(WGMMA_WIDE_FIT) > fill(c)) ? wgmmaConfigs(k, facts, [WGMMA_WIDE_FIT]) : [];
  const out: MatmulConfig[] = [...wg, ...wide, ...MMA_TILES.map((t) => mmaConfig(k, facts, t)), ...(idle ? [...wgmmaConfigs(k, facts, WGMMA_SMALL_TILES), ...wgmmaSplits(k, facts)] : [])];
  if (mmaAsync(k, facts)) out.push(...MMA_TILES.slice(0, 2).map((t) => mmaConfig(k, facts, t, 2)), mmaConfig(k, facts, MMA_TILES[0], 4));
  return [...out, ...splitCandidates(k, facts)];
}

// ---- configs and geometry ----------------------------------------------------------------

/** The heuristic configuration of a kernel (used when nothing was tuned). */
export function defaultConfig(k: Kernel, facts: GpuFacts): GpuConfig {
  switch (k.kind) {
    case 'elementwise':
      return { kind: 'elementwise', block: 256, vec: pickVec(k, k.domain.length <= 1) };
    case 'reduce':
      return defaultRow(k, facts);
    case 'matmul':
      return defaultMatmul(k, facts);
    default:
      return k.kind satisfies never;
  }
}

/** Configurations worth timing for a kernel (the default first, no duplicates). */
export function candidateConfigs(k: Kernel, facts: GpuFacts): GpuConfig[] {
  let all: GpuConfig[];
  if (k.kind === 'elementwise') {
    const vec = pickVec(k, k.domain.length <= 1);
    all = [128, 256, 512].flatMap((block) => (vec > 1 ? [vec, 1] : [1]).map((v) => ({ kind: 'elementwise' as const, block, vec: v })));
  } else if (k.kind === 'reduce') all = rowCandidates(k, facts);
  else all = matmulCandidates(k, facts);
  const seen = new Set<string>();
  return [defaultConfig(k, facts), ...all].filter((c) => {
    const key = JSON.stringify(c);
    return !seen.has(key) && seen.add(key) !== undefined;
  });
}

/** Bytes of dynamic shared memory a matmul configuration uses. */
export function matmulSharedBytes(k: Kernel, c: MatmulConfig): number {
  if (c.variant === 'int') return 0;
  const staged = 4 * c.bm * (c.bn + 4); // the C tile, staged for the epilogue
  if (c.variant === 'wgmma') return Math.max(c.stages * wgmmaStageBytes(c) + 1024, staged); // +1024: the ring is aligned to the swizzle atom
  if (c.variant === 'simt') return Math.max(4 * SIMT_BK * (c.bm + 4 + c.bn + 4), staged);
  if (c.variant === 'tf32') {
    const t = tf32Tiles(k, c);
    return Math.max(4 * c.stages * (t.aTile + t.bTile), staged);
  }
  const l = mmaLayout(k);
  const stages = (c as MmaConfig).stages;
  const aTile = l.a === 'm' ? MMA_BK * (c.bm + MMA_PAD) : c.bm * (MMA_BK + MMA_PAD);
  const bTile = l.b === 'n' ? MMA_BK * (c.bn + MMA_PAD) : c.bn * (MMA_BK + MMA_PAD);
  return Math.max(2 * stages * (aTile + bTile), staged);
}

/**
 * The TF32 kernel's shared tiles (in floats): operand layouts for 4-float chunks, row strides
 * (`ldA`, `ldB`: K-major rows of TF32_BK + TF32_PAD_K, M/N-major rows of bm|bn + TF32_PAD_MN;
 * element-loaded operands are stored K-major) and elements per stage.
 */
export function tf32Tiles(k: Kernel, c: Tf32Config): { layout: MmaLayout; ldA: number; ldB: number; aTile: number; bTile: number } {
  const layout = mmaLayout(k, 4);
  const ldA = layout.a === 'm' ? c.bm + TF32_PAD_MN : TF32_BK + TF32_PAD_K;
  const ldB = layout.b === 'n' ? c.bn + TF32_PAD_MN : TF32_BK + TF32_PAD_K;
  return { layout, ldA, ldB, aTile: layout.a === 'm' ? TF32_BK * ldA : c.bm * ldA, bTile: layout.b === 'n' ? TF32_BK * ldB : c.bn * ldB };
}

/** Threads per block of a matmul configuration. */
export function matmulThreads(c: MatmulConfig): number {
  if (c.variant === 'wgmma') return 128 * (c.bm / 64);
  return c.variant === 'mma' || c.variant === 'tf32' ? 32 * c.warpsM * c.warpsN : 256;
}

/** Bytes of one wgmma pipeline stage: the A tile (bm×64) and the B tile (bn×64), 16-bit. */
export function wgmmaStageBytes(c: WgmmaConfig): number {
  return (c.bm + c.bn) * WGMMA_BK * 2;
}

/**
 * Why the wgmma variant cannot run kernel `k` with `c` under `facts`, or undefined when it
 * can: an sm_90a target, f16/bf16 operands with A's K contiguous and B's N or K contiguous
 * (in 16-byte chunks, so K, and N for an N-contiguous B, are multiples of 8), and a ring that
 * fits in shared memory. Any M (dynamic too), N and K: edge tiles are zero-filled.
 */
export function wgmmaProblem(k: Kernel, c: WgmmaConfig, facts: GpuFacts): string | undefined {
  if (k.kind !== 'matmul' || !k.matmul) return 'not a matmul kernel';
  if (facts.arch !== 90 || !facts.archSpecific) return `needs the sm_90a target (got sm_${facts.arch}${facts.archSpecific ? 'a' : ''})`;
  if (facts.wgmma === false) return 'turned off (KILN_CUDA_WGMMA=0)';
  const dt = matmulDType(k);
  if (dt !== 'float16' && dt !== 'bfloat16') return `needs float16 or bfloat16 operands (got ${dt})`;
  if (c.bm !== 64 && c.bm !== 128) return `bm must be 64 or 128 (got ${c.bm})`;
  if (c.bn !== 128 && c.bn !== 192 && c.bn !== 256) return `bn must be 128, 192 or 256 (got ${c.bn})`;
  if (!Number.isInteger(c.stages) || c.stages < 3) return `stages must be an integer >= 3 (got ${c.stages})`;
  if (c.split !== undefined && (!Number.isInteger(c.split) || c.split < 2)) return `split must be an integer >= 2 (got ${c.split})`;
  if (c.split !== undefined && !k.domain.slice(0, -2).every(isStatic)) return 'split-K needs a static batch (its parts share grid.z with it)';
  const l = mmaLayout(k);
  if (l.a !== 'k') return `needs A with K contiguous and 16-byte aligned rows (A's layout is '${l.a}')`;
  if (l.b === 'scalar') return "needs B with N or K contiguous and 16-byte aligned rows (B's layout is 'scalar')";
  const bytes = matmulSharedBytes(k, c);
  if (bytes > MAX_BLOCK_SHARED) return `needs ${bytes} bytes of shared memory (at most ${MAX_BLOCK_SHARED}): fewer stages`;
  return undefined;
}

/** The launch geometry a configuration implies. */
export function geometry(k: Kernel, c: GpuConfig): Geometry {
  switch (c.kind) {
    case 'elementwise':
      return { grid: [cdiv(dimProd(k.domain), c.block * c.vec)], block: [c.block], sharedBytes: 0 };
    case 'reduce': {
      const { rows } = rowShape(k);
      return { grid: [cdiv(rows, c.threads >= 64 ? 1 : c.block / c.threads)], block: [c.block], sharedBytes: rowSharedBytes(k, c) };
    }
    case 'matmul': {
      // A split-K matmul's own kernel is the combine: a thread per output element.
      if (splitOf(c)) return { grid: [cdiv(dimProd(k.domain), SPLIT_COMBINE_BLOCK)], block: [SPLIT_COMBINE_BLOCK], sharedBytes: 0 };
      const r = k.domain.length;
      const batch = dimProd(k.domain.slice(0, r - 2));
      const grid = [cdiv(k.domain[r - 2], c.bm), cdiv(k.domain[r - 1], c.bn), cdiv(batch, 1)];
      return { grid, block: [matmulThreads(c)], sharedBytes: matmulSharedBytes(k, c) };
    }
    default:
      return c satisfies never;
  }
}

/** True when `c` is a valid configuration for `k` (a tuning table from a bundle is data: check it). */
export function configFits(k: Kernel, c: GpuConfig, facts: GpuFacts): boolean {
  if (c.kind === 'matmul' && c.variant === 'wgmma') return k.kind === 'matmul' && wgmmaProblem(k, c, facts) === undefined;
  return candidateConfigs(k, facts).some((x) => JSON.stringify(x) === JSON.stringify(c));
}

/** The parts of a two-level configuration (a split reduction or a split-K matmul), else undefined. */
export function splitOf(c: GpuConfig): number | undefined {
  if (c.kind === 'reduce' || (c.kind === 'matmul' && (c.variant === 'mma' || c.variant === 'wgmma'))) return c.split && c.split > 1 ? c.split : undefined;
  return undefined;
}

/** Elements of a two-level kernel's partials: one per part of every row, or per part of every matmul output. */
export function partialsElems(k: Kernel, c: GpuConfig): Dim {
  const parts = splitOf(c) ?? 1;
  return dimMul(c.kind === 'matmul' ? dimProd(k.domain) : rowShape(k).rows, parts);
}

/**
 * The launch of a two-level kernel's first kernel. A split reduction: a block per part of
 * every row (block rows), or for a thread per row, the row blocks once per part
 * (part-major). A split-K matmul: the matmul's tiles with grid.z = batch × parts (the part
 * is the fastest-varying: z = b·parts + part).
 */
export function partGeometry(k: Kernel, c: RowConfig | MmaConfig | WgmmaConfig): Geometry {
  if (c.kind === 'matmul') {
    const r = k.domain.length;
    const batch = dimProd(k.domain.slice(0, r - 2));
    const grid = [cdiv(k.domain[r - 2], c.bm), cdiv(k.domain[r - 1], c.bn), cdiv(dimMul(batch, c.split ?? 1), 1)];
    return { grid, block: [matmulThreads(c)], sharedBytes: matmulSharedBytes(k, c) };
  }
  const { rows } = rowShape(k);
  const blocks = c.threads === 1 && isStatic(rows) ? Math.ceil(rows / c.block) : rows; // split only when static
  return { grid: [cdiv(dimMul(blocks, c.split ?? 1), 1)], block: [c.block], sharedBytes: 0 };
}

/**
 * The plan for the CUDA target: the CPU plan's steps with each kernel's geometry. A split
 * reduction or a split-K matmul becomes two steps (`<kernel>__part`, then `<kernel>`) sharing
 * a temp buffer of partials, passed to both as their last pointer; temps' lifetimes follow
 * the new steps.
 */
export function gpuPlan(plan: LaunchPlan, kernels: readonly Kernel[], configs: readonly GpuConfig[]): LaunchPlan {
  const buffers: PlanBuffer[] = [...plan.buffers];
  const steps: PlanStep[] = [];
  plan.steps.forEach((s, i) => {
    const k = kernels[i];
    const c = configs[i];
    const g = geometry(k, c);
    if (splitOf(c) && (c.kind === 'reduce' || (c.kind === 'matmul' && (c.variant === 'mma' || c.variant === 'wgmma')))) {
      const id = buffers.length;
      buffers.push({ id, dtype: partialsDType(k), elems: dimToJSON(partialsElems(k, c)), role: 'temp', first: 0, last: 0 });
      const pg = partGeometry(k, c);
      steps.push({ ...s, kernel: `${s.kernel}__part`, buffers: [...s.buffers, id], grid: pg.grid, block: pg.block, sharedBytes: pg.sharedBytes });
      steps.push({ ...s, buffers: [...s.buffers, id], grid: g.grid, block: g.block, sharedBytes: g.sharedBytes });
    } else steps.push({ ...s, grid: g.grid, block: g.block, sharedBytes: g.sharedBytes });
  });
  if (steps.length === plan.steps.length) return { ...plan, steps };
  // Lifetimes by step index again: only temps share arena space.
  const end = steps.length - 1;
  const lives = buffers.map((b) => (b.role === 'temp' ? { first: Infinity, last: -1 } : { first: 0, last: end }));
  steps.forEach((st, i) =>
    st.buffers.forEach((id) => {
      if (buffers[id].role !== 'temp') return;
      lives[id].first = Math.min(lives[id].first, i);
      lives[id].last = Math.max(lives[id].last, i);
    }),
  );
  return { ...plan, buffers: buffers.map((b, i) => ({ ...b, first: lives[i].first, last: lives[i].last })), steps };
}
