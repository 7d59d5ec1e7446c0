/**
 * The C++ backend: a small subclass of the C-style renderer (parallel loops through kiln's
 * thread pool, OpenMP SIMD pragmas, plain `static` kernels) and `renderCpp`, which writes
 * one translation unit holding every kernel, an exported entry per kernel, and `kiln_run`,
 * which launches them in plan order.
 */
import { dimEq, dimProd, isStatic, type Dim } from '../ir';
import { isContiguous, type Program } from '../passes';
import { CStyleRenderer, shapeText } from './cstyle';
import { GEMM_PRELUDE, matmulBody, packSlotOf, type ColumnDemand, type PackSlotInfo } from './gemm';
import { columnDemand, elementwiseBody, KernelExprs, PARALLEL_MIN_WORK, rowBody, type LoopDialect, type LoopVar, type Reduction } from './loops';
import { C_HELPERS } from './prelude';
import type { Kernel } from '../passes';

/** Element-steps a parallel chunk does at least (half the threshold: 2 chunks pay). */
const CHUNK_MIN_WORK = PARALLEL_MIN_WORK / 2;

/** Renders kernels as C++17 functions; parallel loops run on kiln's thread pool (CPP_HEADER). */
export class CppRenderer extends CStyleRenderer implements LoopDialect {
  readonly kernelPrefix = 'static void';

  constructor(readonly symbols: readonly string[]) {
    super();
  }

  /** Iterations of a loop whose iterations do `inner` element-steps each, for a chunk to pay. */
  #minChunk(inner: Dim): string {
    if (isStatic(inner)) return `${Math.max(1, Math.ceil(CHUNK_MIN_WORK / Math.max(1, inner)))}`;
    return `kiln_max64(1, ${CHUNK_MIN_WORK} / kiln_max64(1, ${this.dim(inner)}))`;
  }

  parallelLoops(vars: readonly LoopVar[], inner: Dim, body: string[], simd: boolean): string[] {
    const n = dimProd(vars.map((v) => v.extent));
    const work = dimProd([n, inner]);
    if (isStatic(work) && work < PARALLEL_MIN_WORK) {
      let lines = body;
      vars.forEach((_, j) => {
        const d = vars.length - 1 - j;
        const pragma = simd && d === vars.length - 1 ? [this.simd()] : [];
        lines = [...pragma, `for (int64_t ${vars[d].name} = 0; ${vars[d].name} < ${this.dim(vars[d].extent)}; ${vars[d].name}++) {`, ...lines.map((l) => `  ${l}`), '}'];
      });
      return lines;
    }
    const head = `kiln_par_for(${this.dim(n)}, ${this.#minChunk(inner)}, [&](int64_t lo_, int64_t hi_) {`;
    if (vars.length === 1) {
      const v = vars[0].name;
      return [head, ...(simd ? [`  ${this.simd()}`] : []), `  for (int64_t ${v} = lo_; ${v} < hi_; ${v}++) {`, ...body.map((l) => `    ${l}`), '  }', '});'];
    }
    // Several loops run as one flattened loop (as OpenMP's collapse did).
    const coords: string[] = [];
    let innerN: Dim = 1;
    for (let d = vars.length - 1; d >= 0; d--) {
      const q = innerN === 1 ? 'f_' : `(f_ / ${this.dim(innerN)})`;
      coords.unshift(`    const int64_t ${vars[d].name} = ${d === 0 ? q : `${q} % ${this.dim(vars[d].extent)}`};`);
      innerN = dimProd([innerN, vars[d].extent]);
    }
    return [head, '  for (int64_t f_ = lo_; f_ < hi_; f_++) {', ...coords, ...body.map((l) => `    ${l}`), '  }', '});'];
  }

  parallelReduce(v: LoopVar, inner: Dim, acc: string, red: Reduction, body: (lo: string, hi: string) => string[]): string[] | undefined {
    const work = dimProd([v.extent, inner]);
    if (isStatic(work) && work < PARALLEL_MIN_WORK) return undefined;
    const vars = red.vars(acc);
    const part = (name: string): string => `${name}_part[c_]`;
    return [
      '{',
      `  const int64_t n_ = ${this.dim(v.extent)}, nch_ = kiln_reduce_chunks(n_, ${this.#minChunk(inner)});`,
      ...vars.map(([t, name]) => `  ${t} ${name}_part[KILN_REDUCE_CHUNKS];`),
      '  kiln_par_n(nch_, kiln_nt(), [&](int64_t c_) {',
      ...vars.map(([t, name]) => `    ${t} ${name} = ${name === acc ? red.init : '0'};`),
      ...body('c_ * n_ / nch_', '(c_ + 1) * n_ / nch_').map((l) => `    ${l}`),
      ...vars.map(([, name]) => `    ${part(name)} = ${name};`),
      '  });',
      '  for (int64_t c_ = 0; c_ < nch_; c_++) {',
      ...red.combine(acc, part).map((l) => `    ${l}`),
      '  }',
      '}',
    ];
  }

  simd(extra = ''): string {
    return `#pragma omp simd ${extra}`.trimEnd();
  }

  /**
   * `static void NAME(T* p0, const T* p1, …, const int64_t* syms) { … }`; a matmul with a
   * pack slot also takes `float* pk, int64_t pk_state` (see gemm.ts).
   */
  renderKernel(k: Kernel, fn = k.name, slot?: PackSlotInfo, demand?: ColumnDemand): string {
    const params = k.params.map((p, i) => `${p.out ? '' : 'const '}${this.storage[p.dtype]}* ${this.restrict} p${i}`);
    const extra = slot ? [`float* ${this.restrict} pk`, 'int64_t pk_state'] : [];
    const syms = this.symbols.map((s, j) => `  const int64_t ${this.symName(s)} = syms[${j}]; (void)${this.symName(s)};`);
    const x = new KernelExprs(this, k);
    const body = k.kind === 'matmul' ? matmulBody(x, this.simd(), slot, demand) : k.kind === 'reduce' ? rowBody(x, this) : elementwiseBody(x, this);
    return [
      `/* ${k.name}: ${k.kind} over ${shapeText(k.domain)}${k.kind === 'reduce' ? `, reducing dims ${k.reduced.flatMap((r, d) => (r ? [d] : [])).join(',')}` : ''} */`,
      `${this.kernelPrefix} ${fn}(${[...params, `const int64_t* ${this.restrict} syms`, ...extra].join(', ')}) {`,
      ...syms,
      ...body.map((l) => `  ${l}`),
      '}',
    ].join('\n');
  }
}

const CPP_HEADER = String.raw`// Generated by kiln. One translation unit: all kernels of a program and its entry points.
#include <stdint.h>
#include <stdlib.h>
/* kiln's thread pool, handed over by the addon when it loads the library (native/cpu.cc):
   parallel_for(n, nt, fn, ctx) runs fn(ctx, i) for every i < n on the calling thread and up
   to nt - 1 workers, and waits only for chunks that workers started. Without it (the library
   loaded by something else) everything runs on the calling thread. */
struct kiln_runtime_v1 {
  int32_t version, threads;
  void (*parallel_for)(int64_t n, int32_t nt, void (*fn)(void*, int64_t), void* ctx);
};
static const kiln_runtime_v1* kiln_rt = 0;
extern "C" void kiln_set_runtime(const void* rt) {
  const kiln_runtime_v1* r = (const kiln_runtime_v1*)rt;
  if (r != 0 && r->version >= 1) kiln_rt = r;
}
static int kiln_threads = 0;
static inline int kiln_nt(void) { return kiln_threads > 0 ? kiln_threads : (kiln_rt ? kiln_rt->threads : 1); }
static inline long long kiln_min64(long long a, long long b) { return a < b ? a : b; }
static inline long long kiln_max64(long long a, long long b) { return a > b ? a : b; }
/* f(i) for every i in [0, n), on up to nt threads. */
template <typename F>
static inline void kiln_par_n(int64_t n, int nt, F f) {
  if (n <= 1 || nt <= 1 || kiln_rt == 0) {
    for (int64_t i = 0; i < n; i++) f(i);
    return;
  }
  kiln_rt->parallel_for(n, nt, [](void* c, int64_t i) { (*(F*)c)(i); }, (void*)&f);
}
/* f(lo, hi) over chunks of [0, n) of at least min_chunk (a multiple of 16 when larger), about four per thread. */
template <typename F>
static inline void kiln_par_for(int64_t n, int64_t min_chunk, F f) {
  const int nt = kiln_nt();
  if (nt <= 1 || kiln_rt == 0 || n < 2 * min_chunk) {
    if (n > 0) f((int64_t)0, n);
    return;
  }
  int64_t ch = (n + 4 * nt - 1) / (4 * nt);
  if (ch < min_chunk) ch = min_chunk;
  if (ch > 16) ch = (ch + 15) & ~(int64_t)15;
  const int64_t nch = (n + ch - 1) / ch;
  kiln_par_n(nch, nt, [&](int64_t c) { f(c * ch, c == nch - 1 ? n : (c + 1) * ch); });
}
/* Row kernels whose rows are dynamic or long keep a row's values here between their loops
   (per thread, grow-only, at most 8 arrays). */
struct kiln_rowbufs_t {
  void* p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t n[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  ~kiln_rowbufs_t() { for (int i = 0; i < 8; i++) free(p[i]); }
};
static inline void* kiln_rowbuf(int slot, int64_t bytes) {
  static thread_local kiln_rowbufs_t b;
  if (bytes > b.n[slot]) {
    free(b.p[slot]);
    b.n[slot] = (bytes + 4095) & ~(int64_t)4095;
    b.p[slot] = aligned_alloc(64, (size_t)b.n[slot]);
  }
  return b.p[slot];
}
/* Chunks of a whole-tensor reduction: from its size only, so the partial sums combine in
   the same order at any thread count. */
#define KILN_REDUCE_CHUNKS 64
static inline int64_t kiln_reduce_chunks(int64_t n, int64_t min_chunk) {
  return kiln_max64(1, kiln_min64(KILN_REDUCE_CHUNKS, n / kiln_max64(1, min_chunk)));
}
`;

/** One program of a translation unit and the name of its run entry. */
export interface CppUnitEntry {
  readonly program: Program;
  /** Name of the program's run function; its kernels are prefixed with it unless it is `kiln_run`. */
  readonly entry: string;
}

/** The pack slots of a program: matmuls whose B operand is an input or a constant (gemm.ts). */
function packSlots(program: Program): Map<Kernel, PackSlotInfo & { readonly index: number; readonly buffer: number }> {
  const stable = (buf: number): boolean => ['input', 'const'].includes(program.plan.buffers[buf]?.role);
  const slots = new Map<Kernel, PackSlotInfo & { index: number; buffer: number }>();
  for (const k of program.kernels) {
    const info = packSlotOf(k, stable);
    if (info) slots.set(k, { ...info, index: slots.size, buffer: k.params[k.matmul!.b.param].buf });
  }
  return slots;
}

/**
 * The columns of each matmul's output that the program reads, where that is less than all:
 * the output is a temp read by one row kernel only, which loads it through its plain view
 * in the first segment of its rows and nowhere else (loops.ts, columnDemand), and both
 * kernels see it with the same rows and columns. The scores of a causal attention, read
 * below the diagonal only by their softmax.
 */
function columnDemands(program: Program, r: CppRenderer): Map<Kernel, ColumnDemand> {
  const out = new Map<Kernel, ColumnDemand>();
  for (const mk of program.kernels) {
    if (mk.kind !== 'matmul' || mk.params.filter((p) => p.out).length !== 1 || mk.stores.length !== 1 || !isContiguous(mk.stores[0].view)) continue;
    const buf = mk.params[mk.stores[0].param].buf;
    if (program.plan.buffers[buf]?.role !== 'temp') continue;
    const readers = program.kernels.filter((k) => k !== mk && k.params.some((p) => p.buf === buf));
    if (readers.length !== 1) continue;
    const [rk] = readers;
    const [m, n] = [mk.domain.length, rk.domain.length];
    const same = n >= 2 && dimEq(rk.domain[n - 1], mk.domain[m - 1]) && dimEq(rk.domain[n - 2], mk.domain[m - 2]) && dimEq(dimProd(rk.domain.slice(0, -2)), dimProd(mk.domain.slice(0, -2)));
    const param = rk.params.findIndex((p) => p.buf === buf);
    const demand = same && !rk.params[param].out ? columnDemand(new KernelExprs(r, rk), param) : undefined;
    if (demand) out.set(mk, demand);
  }
  return out;
}

/**
 * Several programs in one translation unit (one compile for many: tests and batch builds).
 * Each program gets `<entry>(void** bufs, const int64_t* syms)` and per kernel
 * `<prefix>k_<name>(void** bufs, const int64_t* syms)` with bufs = that step's buffers (and
 * for a kernel with a pack slot `<prefix>kp_<name>`, the same with bufs[params] = a packed
 * copy of B and syms[nsym] = its state).
 * With packed weights: `<entry>_pack_slots(void** out, const int64_t* cap)` writes the slot
 * count to ((int64_t*)out[0])[0] and, for up to cap[0] slots, (plan buffer id, bytes, 0)
 * after it; `<entry>_packed(bufs, syms)` runs like `<entry>` with bufs[nbuf + s] = slot s's
 * packed copy and syms[nsym + s] = its state (0 none, 1 pack now, 2 packed), where nbuf
 * and nsym are the plan's buffer and symbol counts.
 */
export function renderCppUnit(units: readonly CppUnitEntry[]): string {
  const parts = [CPP_HEADER, C_HELPERS];
  if (units.some((u) => u.program.kernels.some((k) => k.kind === 'matmul'))) parts.push(GEMM_PRELUDE);
  for (const { program, entry } of units) {
    const r = new CppRenderer(program.plan.symbols);
    const prefix = entry === 'kiln_run' ? '' : `${entry}_`;
    const slots = packSlots(program);
    const nbuf = program.plan.buffers.length;
    const nsym = program.plan.symbols.length;
    /** A kernel's call arguments: its buffers, syms, and for a pack slot the packed copy and state (`pk`, or none). */
    const args = (k: Kernel, buf: (i: number) => string, pk?: readonly [string, string]): string => {
      const slot = slots.has(k) ? (pk ?? ['nullptr', '0']) : [];
      return [...k.params.map((p, i) => `(${p.out ? '' : 'const '}${r.storage[p.dtype]}*)${buf(i)}`), 'syms', ...slot].join(', ');
    };
    const demands = columnDemands(program, r);
    for (const k of program.kernels) parts.push(r.renderKernel(k, prefix + k.name, slots.get(k), demands.get(k)));
    const entries = program.kernels.flatMap((k) => {
      const slot = slots.get(k);
      const step = (name: string, pk?: readonly [string, string]): string =>
        `extern "C" void ${prefix || 'kiln_'}${name}_${k.name}(void** bufs, const int64_t* syms) { ${prefix + k.name}(${args(k, (i) => `bufs[${i}]`, pk)}); }`;
      // With a pack slot also `kp_<name>`: bufs[params] = the packed copy, syms[nsym] = its state
      // (the profile times weight GEMMs as kiln_run_packed runs them).
      return [step('k'), ...(slot ? [step('kp', [`(float*)bufs[${k.params.length}]`, `syms[${nsym}]`])] : [])];
    });
    const run = (packed: boolean): string[] =>
      program.kernels.map((k) => {
        const slot = slots.get(k);
        const pk = packed && slot ? ([`(float*)bufs[${nbuf + slot.index}]`, `syms[${nsym + slot.index}]`] as const) : undefined;
        return `  ${prefix + k.name}(${args(k, (i) => `bufs[${k.params[i].buf}]`, pk)});`;
      });
    parts.push(entries.join('\n'), [`extern "C" void ${entry}(void** bufs, const int64_t* syms) {`, '  (void)bufs; (void)syms;', ...run(false), '}'].join('\n'));
    const info = [...slots.values()].flatMap((s) => [s.buffer, s.bytes, 0]);
    parts.push(
      [
        `extern "C" void ${entry}_pack_slots(void** out, const int64_t* cap) {`,
        `  static const int64_t slots[] = {${[slots.size, ...info].join(', ')}};`,
        `  int64_t* o = (int64_t*)out[0];`,
        `  o[0] = slots[0];`,
        `  for (int64_t i = 1; i < 1 + 3 * kiln_min64(slots[0], cap[0]); i++) o[i] = slots[i];`,
        '}',
      ].join('\n'),
    );
    if (slots.size) parts.push([`extern "C" void ${entry}_packed(void** bufs, const int64_t* syms) {`, ...run(true), '}'].join('\n'));
  }
  parts.push(`extern "C" void kiln_set_threads(void** bufs, const int64_t* ints) { (void)bufs; kiln_threads = (int)ints[0]; }`);
  return parts.join('\n') + '\n';
}

/**
 * The whole program as one C++ translation unit. Entry points (C ABI):
 * `kiln_run(void** bufs, const int64_t* syms)` runs every step (bufs[i] = plan buffer i);
 * `kiln_k_<name>(void** bufs, const int64_t* syms)` runs one kernel with bufs = that step's buffers;
 * `kiln_set_threads(void**, const int64_t* ints)` sets the thread count (ints[0], 0 = all cores).
 */
export function renderCpp(program: Program): string {
  return renderCppUnit([{ program, entry: 'kiln_run' }]);
}

/**
 * The compiler flag that lets generated code use each x86-64 ISA feature kiln tracks (names
 * as /proc/cpuinfo spells them; the tracked list is `TRACKED_FEATURES` in
 * runtime/toolchain.ts). The code is compiled for exactly the tracked features the bundle's
 * target names, so a host whose CPU has them all can run it (`checkTarget`).
 */
export const X64_ISA_FLAGS: Readonly<Record<string, string>> = {
  sse4_2: '-msse4.2',
  avx: '-mavx',
  avx2: '-mavx2',
  fma: '-mfma',
  f16c: '-mf16c',
  avx512f: '-mavx512f',
  avx512bw: '-mavx512bw',
  avx512vl: '-mavx512vl',
  avx512_vnni: '-mavx512vnni',
  avx512_bf16: '-mavx512bf16',
};

/** aarch64: the `-march=armv8-a` extension for each tracked feature beyond it (asimd is part of armv8-a). */
export const ARM64_ISA_EXTENSIONS: Readonly<Record<string, string>> = { sve: '+sve' };

/**
 * The instruction-set flags for code that may use exactly `features` (ISA features as
 * /proc/cpuinfo spells them: the bundle target's) on `arch` (`process.arch` spelling).
 * x64: `-march=x86-64` plus one flag per tracked feature listed (`X64_ISA_FLAGS`, in that
 * table's order); arm64: `-march=armv8-a[+sve]`; both with `-mtune=native`, which schedules
 * for this CPU without adding an instruction. Any other architecture: `-march=native`, as
 * before (kiln tracks none of its features). Features of another architecture, or untracked
 * ones, add nothing.
 */
export function isaFlags(features: readonly string[], arch: string = process.arch): string[] {
  if (!Array.isArray(features)) throw new TypeError('isaFlags/cppFlags: pass the ISA features the code may use (the bundle target\'s, e.g. cpuInfo().features)');
  const have = new Set(features);
  const listed = (table: Readonly<Record<string, string>>) => Object.keys(table).filter((f) => have.has(f)).map((f) => table[f]);
  if (arch === 'x64') return ['-march=x86-64', ...listed(X64_ISA_FLAGS), '-mtune=native'];
  if (arch === 'arm64') return [`-march=armv8-a${listed(ARM64_ISA_EXTENSIONS).join('')}`, '-mtune=native'];
  return ['-march=native'];
}

/**
 * Compiler flags for the generated C++: the instruction set of `features` on `arch`
 * (`isaFlags`: the features the bundle's target names, no more, so that every host the target
 * guard accepts can run it; tuned for the building CPU), OpenMP SIMD pragmas, position
 * independent, and strict IEEE arithmetic (no -ffast-math, no FMA contraction) so that NaN,
 * infinities and per-op rounding match the reference interpreter.
 */
export function cppFlags(features: readonly string[], arch: string = process.arch): string[] {
  // -fno-math-errno and -fno-trapping-math let GCC inline sqrtf, if-convert the branch-free
  // helpers and vectorize. They are not value-neutral in general: with them GCC folds
  // (float)(int32_t)trunc(x) into trunc(x), which keeps -0 (kiln_f2i adds +0.0 against it,
  // prelude.ts), and vectorizes powf(x, 0.5f) as sqrt, which differs at -0 and -inf (pow by the
  // number 0.5 is SQRT from trace time, lib/tensor/ops.ts; kiln_powf spells out a 0.5 that
  // only simplification makes constant). With
  // those two handled, every program of the codegen tests on NaN, ±inf, ±0 and huge inputs gives
  // the same bits with and without the flags, once SIMD reductions are left out (a vectorized
  // sum adds in another order: a different rounding, the same semantics).
  // -fopenmp-simd: the SIMD pragmas only; threads come from kiln's pool, not libgomp.
  return ['-O3', ...isaFlags(features, arch), '-fopenmp-simd', '-fPIC', '-shared', '-std=c++17', '-ffp-contract=off', '-fno-math-errno', '-fno-trapping-math', '-w'];
}
