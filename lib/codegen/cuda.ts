/**
 * The CUDA backend: a small subclass of the C-style renderer (kernel qualifiers, CUDA math
 * names, `long long` indices) plus the CUDA-only kernel templates — elementwise kernels
 * with exact grids and 16-byte vector loads/stores, row kernels (a thread, a warp or a
 * block per row, warp-shuffle and shared-memory reductions, rows kept in registers when
 * they fit) — and the matmul kernels of cuda-matmul.ts. `renderCuda` writes one
 * translation unit per program, every kernel written to the parameter ABI of
 * lib/runtime/cuda.ts. Launch decisions come from lib/passes/gpu.ts. See docs/CUDA.md.
 */
import { dimProd, isStatic, ITEMSIZE, type DType } from '../ir';
import { dependsOn, type Kernel, type Program } from '../passes';
import { defaultConfig, laneAccess, partialsDType, rowShape, splitOf, stageLoads, type ElementwiseConfig, type GpuConfig, type GpuFacts, type RowConfig } from '../passes/gpu';
import { CStyleRenderer, shapeText } from './cstyle';
import { CUDA_HELPERS } from './cuda-prelude';
import { CudaExprs, delinearize, domVar, indent, unroll } from './cuda-exprs';
import { matmulKernel, type SplitRole } from './cuda-matmul';
import { wgmmaKernel } from './cuda-wgmma';

/** Renders kernels as CUDA C `__global__` functions (kiln's parameter ABI). */
export class CudaRenderer extends CStyleRenderer {
  readonly kernelPrefix = 'extern "C" __global__ void';
  override readonly math = { EXP: 'expf', LOG: 'logf', SQRT: 'sqrtf', SIN: 'sinf', COS: 'cosf', TANH: 'tanhf', ERF: 'erff', ERFC: 'erfcf', ABS: 'fabsf' };
  override readonly indexType: string = 'long long';

  constructor(
    readonly symbols: readonly string[],
    readonly facts: GpuFacts,
  ) {
    super();
  }

  /** `extern "C" __global__ void __launch_bounds__(B) NAME(T* p0, const T* p1, …, long long S_s0, …) { … }` */
  renderKernel(k: Kernel, config: GpuConfig = defaultConfig(k, this.facts), name = k.name): string {
    if (splitOf(config)) {
      // Two kernels: the partials of every part, then the combine and the stores (RowConfig.split, MmaConfig.split).
      return [this.#render(k, config, `${name}__part`, 'part'), this.#render(k, config, name, 'final')].join('\n');
    }
    return this.#render(k, config, name, 'whole');
  }

  #render(k: Kernel, config: GpuConfig, name: string, role: SplitRole): string {
    const params = k.params.map((p, i) => `${p.out ? '' : 'const '}${this.storage[p.dtype]}* ${this.restrict} p${i}`);
    if (role !== 'whole') params.push(`${role === 'part' ? '' : 'const '}${this.storage[partialsDType(k)]}* ${this.restrict} pp`);
    const syms = this.symbols.map((s) => `long long ${this.symName(s)}`);
    const x = new CudaExprs(this, k, k.kind === 'matmul' ? 'acc_e' : 'acc');
    let body: string[];
    let threads: number;
    switch (config.kind) {
      case 'elementwise':
        body = elementwiseBody(x, config);
        threads = config.block;
        break;
      case 'reduce':
        body = rowBody(x, config, role);
        threads = config.block;
        break;
      case 'matmul':
        ({ body, threads } = config.variant === 'wgmma' ? wgmmaKernel(x, config, role) : matmulKernel(x, config, this.facts, role));
        break;
      default:
        return config satisfies never;
    }
    const used = this.symbols.map((s) => `(void)${this.symName(s)};`).join(' ');
    return [
      `/* ${name}: ${role === 'part' ? 'partials of a ' : role === 'final' && k.kind === 'matmul' ? 'split-K combine and epilogue of a ' : ''}${k.kind} over ${shapeText(k.domain)}${k.kind === 'reduce' ? `, reducing dims ${k.reduced.flatMap((r, d) => (r ? [d] : [])).join(',')}` : ''}; ${JSON.stringify(config)} */`,
      `${this.kernelPrefix} __launch_bounds__(${threads}, 1) ${name}(${[...params, ...syms].join(', ')}) {`,
      ...(used ? [`  ${used}`] : []),
      ...body.map((l) => `  ${l}`),
      '}',
    ].join('\n');
  }
}

/** The unsigned type that moves `bytes` bytes in one access. */
function wordOf(bytes: number): string {
  const t = { 1: 'unsigned char', 2: 'unsigned short', 4: 'unsigned int', 8: 'uint2', 16: 'uint4' }[bytes];
  if (!t) throw new Error(`cuda: no ${bytes}-byte access`);
  return t;
}

/** `alignas(16) T name[vec]; *(W*)name = *(const W*)(ptr);` — one vector load into a lane array. */
function vectorLoad(x: CudaExprs, name: string, dtype: DType, ptr: string, vec: number): string {
  const w = wordOf(ITEMSIZE[dtype] * vec);
  return `alignas(16) ${x.r.storage[dtype]} ${name}[${vec}]; *reinterpret_cast<${w}*>(${name}) = *reinterpret_cast<const ${w}*>(${ptr});`;
}


/**
 * Lane statements for values `values` (a thread's `vec` consecutive elements of the last
 * dim, lane j at `i<last> = base + j`): vector loads before the lane loop, per-lane values,
 * stores and `extra` statements inside it, vector stores after it. `vectorOk` false renders
 * every access per lane.
 */
function laneBlock(x: CudaExprs, values: readonly number[], stores: Kernel['stores'], base: string, vec: number, vectorOk: boolean, suffix = '', extra: readonly string[] = []): string[] {
  const { k, r } = x;
  const last = k.domain.length - 1;
  const pre: string[] = [];
  const post: string[] = [];
  const lanes = vec > 1;
  const j = lanes ? 'j' : '0';
  const redirected: number[] = [];
  for (const i of values) {
    const n = k.nodes[i];
    if (n.k !== 'load' || x.over.has(i) || !vectorOk || !lanes || laneAccess(n.view, vec) !== 'vector') continue;
    const arr = `L${i}${suffix}`;
    pre.push(vectorLoad(x, arr, n.dtype, `p${n.param} + ${x.indexWith(n.view, base)}`, vec));
    x.over.set(i, r.load(n.dtype, arr, j));
    redirected.push(i);
  }
  const body = values.flatMap((i) => x.statement(i));
  for (const [si, s] of stores.entries()) {
    const p = k.params[s.param];
    if (vectorOk && lanes && laneAccess(s.view, vec) === 'vector') {
      const arr = `S${si}${suffix}`;
      pre.push(`alignas(16) ${r.storage[p.dtype]} ${arr}[${vec}];`);
      body.push(`${arr}[j] = ${x.stored(s.value, p.dtype)};`);
      const w = wordOf(ITEMSIZE[p.dtype] * vec);
      post.push(`*reinterpret_cast<${w}*>(p${s.param} + ${x.indexWith(s.view, base)}) = *reinterpret_cast<const ${w}*>(${arr});`);
    } else body.push(x.storeLine(s));
  }
  body.push(...extra);
  for (const i of redirected) x.over.delete(i);
  if (!lanes) return [`const ${x.it} ${domVar(last)} = ${base};`, ...body];
  return [...pre, unroll, `for (int j = 0; j < ${vec}; j++) {`, `  const ${x.it} ${domVar(last)} = ${base} + j;`, ...indent(body), '}', ...post];
}

/** Body of an elementwise kernel: a thread per `vec` consecutive elements of the last dim. */
export function elementwiseBody(x: CudaExprs, c: ElementwiseConfig): string[] {
  const { k, r } = x;
  const rank = k.domain.length;
  const it = x.it;
  const n = r.dim(dimProd(k.domain));
  const values = x.closure(k.stores.map((s) => s.value));
  const lines = [`const ${it} t = (${it})blockIdx.x * ${c.block} + threadIdx.x;`];
  if (rank === 0) return [...lines, 'if (t >= 1) return;', ...values.flatMap((i) => x.statement(i)), ...k.stores.map((s) => x.storeLine(s))];
  const last = rank - 1;
  const laneDep = (i: number): boolean => k.deps[i][last];
  const dims = k.domain.map((_, d) => d);
  if (c.vec === 1) return [...lines, `if (t >= ${n}) return;`, ...delinearize(x, 't', dims), ...values.flatMap((i) => x.statement(i)), ...k.stores.map((s) => x.storeLine(s))];
  lines.push(`const ${it} e = t * ${c.vec};`, `if (e >= ${n}) return;`);
  lines.push(...delinearize(x, 'e', dims, (d) => (d === last ? 'ib' : domVar(d))));
  lines.push(...values.filter((i) => !laneDep(i)).flatMap((i) => x.statement(i)));
  const lane = values.filter(laneDep);
  const full = laneBlock(x, lane, k.stores, 'ib', c.vec, true);
  const total = dimProd(k.domain);
  if (rank > 1 || (isStatic(total) && total % c.vec === 0)) return [...lines, ...full];
  // A rank-1 domain whose length may not divide by vec: the last thread takes lanes one by one.
  const tail = [...lane.flatMap((i) => x.statement(i)), ...k.stores.map((s) => x.storeLine(s))];
  return [
    ...lines,
    `if (e + ${c.vec} <= ${n}) {`,
    ...indent(full),
    '} else {',
    `  for (${it} ${domVar(last)} = ib; ${domVar(last)} < ${n}; ${domVar(last)}++) {`,
    ...indent(tail, '    '),
    '  }',
    '}',
  ];
}

/** How one reduction stage accumulates (mirrors the C++ backend's `reduction` in loops.ts). */
interface Reducer {
  accType: string;
  init: string;
  /** Two partial accumulators (or an accumulator and a value) combined. */
  combine: (a: string, b: string) => string;
  /** The accumulator combined with one element's value. */
  step: (acc: string, v: string) => string;
  result: (acc: string) => string;
}

function reducer(op: 'sum' | 'max', dtype: DType, r: CStyleRenderer): Reducer {
  const float = dtype !== 'int32' && dtype !== 'bool';
  if (op === 'sum') {
    const add = (a: string, b: string): string => `${a} + ${b}`;
    if (float) return { accType: 'float', init: '0.0f', combine: add, step: add, result: (a) => r.round(dtype, a) };
    return { accType: 'unsigned int', init: '0u', combine: add, step: (a, v) => `${a} + (unsigned int)${v}`, result: (a) => `(int32_t)${a}` };
  }
  if (dtype === 'bool') return { accType: 'int', init: '0', combine: (a, b) => `${a} | ${b}`, step: (a, v) => `${a} | (int)${v}`, result: (a) => `(${a} != 0)` };
  const mx = float ? (a: string, b: string): string => `kiln_max_nan(${a}, ${b})` : (a: string, b: string): string => `(${b} > ${a} ? ${b} : ${a})`;
  return { accType: float ? 'float' : 'int', init: float ? '(-INFINITY)' : '(-2147483647 - 1)', combine: mx, step: mx, result: (a) => a };
}

/**
 * Body of a row kernel (see docs/CUDA.md, "Row kernels"): rows are the kept dims, a row's
 * elements the reduced dims. `threads` threads share a row; each takes chunks of `vec`
 * consecutive elements; with `cache` the loads that reduction stages read are kept in
 * registers, so the input is read once. Per stage: a thread's partial, then a warp
 * butterfly (every lane gets the result) and, for block rows, a pass over the warps'
 * partials in shared memory, in the same order in every thread (deterministic).
 */
export function rowBody(x: CudaExprs, c: RowConfig, role: SplitRole = 'whole'): string[] {
  const { k, r } = x;
  const it = x.it;
  const dims = k.domain.map((_, d) => d);
  const outer = dims.filter((d) => !k.reduced[d]);
  const red = dims.filter((d) => k.reduced[d]);
  const last = k.domain.length - 1;
  const { rows, len } = rowShape(k);
  const T = c.threads;
  const lastRed = red.length > 0 && red[red.length - 1] === last;
  const lanes = T > 1 && lastRed; // elements of a chunk are consecutive along the last dim
  const V = lanes ? c.vec : 1;
  const inner = (i: number): boolean => red.some((d) => k.deps[i][d]);
  const emitted = new Set<number>();
  const outerValues = (roots: number[]): string[] =>
    x
      .closure(roots)
      .filter((i) => !inner(i) && !emitted.has(i) && emitted.add(i) !== undefined)
      .flatMap((i) => x.statement(i));
  const innerValues = (roots: number[]): number[] => x.closure(roots).filter(inner);

  const lines: string[] = [];
  const P = c.split ?? 1;
  if (role === 'part' && T === 1) {
    // Part-major: the row blocks of part 0, then of part 1, … (a column's partials are `rows` apart).
    const nb = Math.ceil((rows as number) / c.block);
    lines.push(`const ${it} part = (${it})blockIdx.x / ${nb};`, `const ${it} row = ((${it})blockIdx.x % ${nb}) * ${c.block} + threadIdx.x;`, `if (row >= ${r.dim(rows)}) return;`);
  } else if (role === 'part') lines.push(`const ${it} row = (${it})blockIdx.x / ${P};`, `const ${it} part = (${it})blockIdx.x % ${P};`, 'const int tid = threadIdx.x;');
  else if (T === 1) lines.push(`const ${it} row = (${it})blockIdx.x * ${c.block} + threadIdx.x;`, `if (row >= ${r.dim(rows)}) return;`);
  else if (T === 32) lines.push(`const ${it} row = (${it})blockIdx.x * ${c.block / 32} + threadIdx.x / 32;`, 'const int tid = threadIdx.x % 32;', `if (row >= ${r.dim(rows)}) return;`);
  else lines.push(`const ${it} row = blockIdx.x;`, 'const int tid = threadIdx.x;');
  lines.push(...delinearize(x, 'row', outer));
  // A part of a split row: elements [q_lo, q_hi), a multiple of the lane count apart.
  const seg = (isStatic(len) ? Math.ceil(len / P / V) : 1) * V;
  if (role === 'part') lines.push(`const ${it} q_lo = part * ${seg};`, `const ${it} q_hi = q_lo + ${seg} < ${r.dim(len)} ? q_lo + ${seg} : ${r.dim(len)};`);

  const lenC = r.dim(len);
  const inRegs = c.cache === 'registers' && T > 1 && isStatic(len);
  const inShared = c.cache === 'shared' && T >= 64 && isStatic(len);
  const chunks = inRegs ? Math.ceil(len / (T * V)) : 0;
  const full = chunks > 0 && isStatic(len) && len % (T * V) === 0;
  const redCoords = (q: string): string[] => delinearize(x, q, red, (d) => (lanes && d === last ? 'ib' : domVar(d)));
  const cachedLoads = inRegs || inShared ? stageLoads(k) : [];
  const laneOf = lanes && V > 1 ? 'j' : '0';
  /**
   * Where cached load i's element of lane `lane` lives. In shared memory lane j of every
   * chunk sits in plane j (index j·len/V + q0/V): consecutive threads touch consecutive
   * words, so the block reads and writes its rows without bank conflicts.
   */
  const slot = (i: number, lane: string): string => {
    if (inRegs) return `c${i}[ch * ${V} + ${lane}]`;
    return V > 1 ? `c${i}[${lane} * ${(len as number) / V} + q0 / ${V}]` : `c${i}[q0]`;
  };
  const cached = (i: number): string => slot(i, laneOf);

  /** This thread's elements of the row: values, stores and `extra` per element. */
  const rowLoop = (values: number[], stores: Kernel['stores'], extra: string[], suffix: string): string[] => {
    for (const i of cachedLoads) x.over.set(i, cached(i));
    const element = lanes ? laneBlock(x, values, stores, 'ib', V, true, suffix, extra) : [...values.flatMap((i) => x.statement(i)), ...stores.map((s) => x.storeLine(s)), ...extra];
    for (const i of cachedLoads) x.over.delete(i);
    return elementLoop(element);
  };
  /** The loop over this thread's elements (chunks of V) around `body`. */
  const elementLoop = (body: string[]): string[] => {
    if (T === 1 && role === 'part') {
      // Bounds known only at run time: unrolled by 4 so that four loads are in flight per thread (the sum stays in order).
      return ['#pragma unroll 4', `for (${it} q = q_lo; q < q_hi; q++) {`, ...indent([...redCoords('q'), ...body]), '}'];
    }
    if (T === 1) return [`for (${it} q = 0; q < ${lenC}; q++) {`, ...indent([...redCoords('q'), ...body]), '}'];
    if (chunks > 0) {
      const inside = [...redCoords('q0'), ...body];
      const guarded = full ? inside : [`if (q0 < ${lenC}) {`, ...indent(inside), '}'];
      return [unroll, `for (int ch = 0; ch < ${chunks}; ch++) {`, `  const int q0 = (ch * ${T} + tid) * ${V};`, ...indent(guarded), '}'];
    }
    const [lo, hi] = role === 'part' ? ['q_lo + ', 'q_hi'] : ['', lenC];
    return [`for (${it} q0 = ${lo}(${it})tid * ${V}; q0 < ${hi}; q0 += ${T * V}) {`, ...indent([...redCoords('q0'), ...body]), '}'];
  };

  // Keep the row's stage loads in registers or shared memory: read once, chunk by chunk.
  if (cachedLoads.length) {
    if (inRegs) for (const i of cachedLoads) lines.push(`${r.compute[k.nodes[i].dtype]} c${i}[${chunks * V}];`);
    else {
      lines.push('KILN_DYNAMIC_SMEM(kiln_smem);');
      cachedLoads.forEach((i, j) => lines.push(`${r.compute[k.nodes[i].dtype]}* c${i} = reinterpret_cast<${r.compute[k.nodes[i].dtype]}*>(reinterpret_cast<unsigned char*>(kiln_smem) + ${4 * (len as number) * j});`));
    }
    const body: string[] = lanes && V === 1 ? [`const ${it} ${domVar(last)} = ib;`] : [];
    for (const i of cachedLoads) {
      const n = k.nodes[i];
      if (n.k !== 'load') continue;
      if (V > 1 && laneAccess(n.view, V) === 'vector') {
        body.push(vectorLoad(x, `L${i}`, n.dtype, `p${n.param} + ${x.indexWith(n.view, 'ib')}`, V));
        body.push(unroll, `for (int j = 0; j < ${V}; j++) ${slot(i, 'j')} = ${r.load(n.dtype, `L${i}`, 'j')};`);
      } else if (V > 1) {
        body.push(unroll, `for (int j = 0; j < ${V}; j++) {`, `  const ${it} ${domVar(last)} = ib + j;`, `  ${slot(i, 'j')} = ${x.expr(i)};`, '}');
      } else body.push(`${slot(i, '0')} = ${x.expr(i)};`);
    }
    lines.push(...elementLoop(body));
  }

  k.stages.forEach((s, j) => {
    const red0 = reducer(s.op, s.dtype, r);
    const acc = `acc${j}`;
    lines.push(...outerValues([s.src]));
    lines.push(`${red0.accType} ${acc} = ${red0.init};`);
    if (role === 'final') {
      // The row's partials, combined in part order (every thread the same way after the reduce below).
      const at = T === 1 ? `pp[q * ${r.dim(rows)} + row]` : `pp[row * ${P} + q]`;
      const part = red0.accType === 'unsigned int' ? `(unsigned int)${at}` : at;
      lines.push(`for (int q = ${T === 1 ? '0' : 'tid'}; q < ${P}; q += ${T}) ${acc} = ${red0.combine(acc, part)};`);
    } else lines.push(...rowLoop(innerValues([s.src]), [], [`${acc} = ${red0.step(acc, x.ref(s.src))};`], `_s${j}`));
    if (T > 1) {
      // Every lane shuffles unconditionally (the partner's value first, then the combine, which may branch).
      lines.push(unroll, `for (int o = 16; o > 0; o >>= 1) {`, `  const ${red0.accType} other = __shfl_xor_sync(0xffffffffu, ${acc}, o);`, `  ${acc} = ${red0.combine(acc, 'other')};`, '}');
    }
    if (T > 32) {
      const w = T / 32;
      lines.push(
        `__shared__ ${red0.accType} red${j}[${w}];`,
        `if (tid % 32 == 0) red${j}[tid / 32] = ${acc};`,
        '__syncthreads();',
        `${acc} = red${j}[0];`,
        `for (int w = 1; w < ${w}; w++) ${acc} = ${red0.combine(acc, `red${j}[w]`)};`,
      );
    }
    const partial = red0.accType === 'unsigned int' ? `(int)${acc}` : acc;
    if (role === 'part' && T === 1) lines.push(`pp[part * ${r.dim(rows)} + row] = ${partial};`);
    else if (role === 'part') lines.push(`if (tid == 0) pp[blockIdx.x] = ${partial};`);
    else lines.push(`const ${r.compute[s.dtype]} a${j} = ${red0.result(acc)};`);
  });
  if (role === 'part') return lines;

  const isInnerStore = (s: Kernel['stores'][number]): boolean => inner(s.value) || red.some((d) => dependsOn(s.view)[d]);
  const innerStores = k.stores.filter(isInnerStore);
  const rowStores = k.stores.filter((s) => !isInnerStore(s));
  lines.push(...outerValues(k.stores.map((s) => s.value)));
  if (rowStores.length) {
    const st = rowStores.map((s) => x.storeLine(s));
    lines.push(...(T > 1 ? ['if (tid == 0) {', ...indent(st), '}'] : st));
  }
  if (innerStores.length) lines.push(...rowLoop(innerValues(innerStores.map((s) => s.value)), innerStores, [], '_o'));
  return lines;
}

/** The CUDA translation unit of a program: the helpers, then every kernel with its configuration. */
export function renderCuda(program: Program, facts: GpuFacts, configs?: readonly GpuConfig[]): string {
  const r = new CudaRenderer(program.plan.symbols, facts);
  const kernels = program.kernels.map((k, i) => r.renderKernel(k, configs?.[i] ?? defaultConfig(k, facts)));
  return [CUDA_HELPERS, ...kernels].join('\n') + '\n';
}

/** One kernel rendered under a configuration and a name of its own. */
export interface KernelVariant {
  readonly kernel: Kernel;
  readonly config: GpuConfig;
  readonly name: string;
}

/** Kernel variants of one program (its symbols), without the helpers. */
export function renderCudaKernels(symbols: readonly string[], facts: GpuFacts, variants: readonly KernelVariant[]): string[] {
  const r = new CudaRenderer(symbols, facts);
  return variants.map((v) => r.renderKernel(v.kernel, v.config, v.name));
}

/** Several kernel variants in one unit (the autotuner compiles every candidate at once). */
export function renderCudaVariants(symbols: readonly string[], facts: GpuFacts, variants: readonly KernelVariant[]): string {
  return [CUDA_HELPERS, ...renderCudaKernels(symbols, facts, variants)].join('\n') + '\n';
}
