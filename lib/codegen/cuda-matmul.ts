/**
 * Matmul kernels for the CUDA backend (see docs/CUDA.md, "Matmul"):
 *
 * - f16/bf16: tensor cores through `mma.sync.aligned.m16n8k16` (f32 accumulators). A block
 *   computes a bm×bn tile with warpsM×warpsN warps; K advances in 32-wide tiles staged in
 *   shared memory, rows padded by 8 elements so that `ldmatrix` (plain or `.trans`, by the
 *   operand's layout) reads without bank conflicts. When both operands arrive in 16-byte
 *   chunks (a contiguous, aligned K, M or N) tiles stream with `cp.async` through a
 *   `stages`-deep ring; otherwise elements are loaded synchronously (any strides).
 * - f32 with the `tf32` option (sm_80+): the same kernel on TF32 tensor cores,
 *   `mma.sync.aligned.m16n8k8` with operands rounded by `cvt.rna.tf32.f32`; 4-byte elements
 *   (16-byte chunks of 4 floats), K tiles of 16, fragments read from shared memory with 64-
 *   and 32-bit loads (no ldmatrix: it moves 16-bit pairs), conflict-free (TF32_PAD_*).
 * - f32: CUDA cores, bm×bn tiles of 256 threads, each thread a (bm/16)×(bn/16) register
 *   tile interleaved by 16 (conflict-free shared reads, coalesced epilogue), explicit fmaf.
 * - int32: one thread per output, products and sums wrapping modulo 2^32.
 * - split-K (f16/bf16, `MmaConfig.split`, too few output tiles to fill the GPU): the
 *   tensor-core kernel as `<name>__part`, each block one tile over one part of K, storing its
 *   f32 accumulators as partials; then `<name>`, a thread per output element adding its
 *   partials in part order and running the epilogue.
 *
 * - f16/bf16 on Hopper warpgroup MMA (sm_90a, the default there where the shape allows): cuda-wgmma.ts.
 *
 * The fused elementwise epilogue (bias, activation, residual, casts) runs on each
 * accumulator with the output coordinates bound, through the kernel's views.
 */
import { dimProd } from '../ir';
import { idim, indexOf, ivar, type View } from '../passes';
import { MMA_BK, MMA_PAD, matmulDType, matmulThreads, mmaLayout, SIMT_BK, SPLIT_COMBINE_BLOCK, TF32_BK, tf32Tiles, type GpuFacts, type MmaConfig, type MmaLayout, type SimtConfig, type Tf32Config } from '../passes/gpu';
import { delinearize, indent, unroll, type CudaExprs } from './cuda-exprs';


/** Which kernel of a two-level (split) configuration: all of it, the partials, or the combine. */
export type SplitRole = 'whole' | 'part' | 'final';

/**
 * Shared prologue: sizes, batch coordinates, operand base pointers, tile origin (`m0`, `n0`:
 * the block's linear index, columns fastest, unless `origin` gives the lines that define them). With
 * `split` parts of K, grid.z is batch × parts: `bz` and `part` come from it.
 */
export function prologue(x: CudaExprs, cfg: { bm: number; bn: number }, origin?: string[], split?: number): { lines: string[]; aStride: [string, string]; bStride: [string, string] } {
  const { k, r } = x;
  const it = x.it;
  const mm = k.matmul!;
  const rank = k.domain.length;
  const batch = k.domain.slice(0, rank - 2).map((_, d) => d);
  const a = mm.a.view[0];
  const b = mm.b.view[0];
  const vars = [...batch.map((d) => ivar(`i${d}`)), idim(0), idim(0)];
  const base = (v: View): string => r.index(indexOf([v], vars).index);
  const pa = k.params[mm.a.param];
  const pb = k.params[mm.b.param];
  const lines = [
    `const ${it} M = ${r.dim(k.domain[rank - 2])}, N = ${r.dim(k.domain[rank - 1])}, K = ${r.dim(mm.k)};`,
    ...(split ? [`const ${it} bz = blockIdx.z / ${split}, part = blockIdx.z % ${split};`] : [`const ${it} bz = blockIdx.z;`]),
    ...(batch.length ? delinearize(x, 'bz', batch) : ['(void)bz;']),
    `const ${r.storage[pa.dtype]}* __restrict__ A = p${mm.a.param} + ${base(a)};`,
    `const ${r.storage[pb.dtype]}* __restrict__ B = p${mm.b.param} + ${base(b)};`,
    // Row tiles on grid.x (no practical limit), column tiles on grid.y; blocks take tiles in
    // launch order, columns fastest: pid = blockIdx.x + blockIdx.y·gridDim.x.
    ...(origin ?? [
      `const ${it} pid = (${it})blockIdx.y * gridDim.x + blockIdx.x;`,
      `const ${it} m0 = pid / gridDim.y * ${cfg.bm}, n0 = pid % gridDim.y * ${cfg.bn};`,
    ]),
  ];
  return {
    lines,
    aStride: [r.dim(a.strides[rank - 2]), r.dim(a.strides[rank - 1])],
    bStride: [r.dim(b.strides[rank - 2]), r.dim(b.strides[rank - 1])],
  };
}

/** The epilogue for one accumulator `acc_e` at output (row, col), bounds-checked. */
function epilogue(x: CudaExprs, row: string, col: string): string[] {
  const { k } = x;
  const rank = k.domain.length;
  const values = x.closure(k.stores.map((s) => s.value));
  return [
    `const ${x.it} i${rank - 2} = ${row};`,
    `const ${x.it} i${rank - 1} = ${col};`,
    `if (i${rank - 2} < M && i${rank - 1} < N) {`,
    ...indent([...values.flatMap((i) => x.statement(i)), ...k.stores.map((s) => x.storeLine(s))]),
    '}',
  ];
}

/**
 * The epilogue over a bm×bn accumulator tile staged in shared memory (`sC`, row stride
 * bn+4): consecutive threads take consecutive columns (coalesced loads and stores), and
 * the epilogue's code appears once instead of once per register of the tile.
 */
export function stagedEpilogue(x: CudaExprs, c: { bm: number; bn: number }, threads: number): string[] {
  return [
    '__syncthreads();',
    '#pragma unroll 1',
    `for (int e = threadIdx.x; e < ${c.bm * c.bn}; e += ${threads}) {`,
    `  const float acc_e = sC[(e / ${c.bn}) * ${c.bn + 4} + e % ${c.bn}];`,
    ...indent(epilogue(x, `m0 + e / ${c.bn}`, `n0 + e % ${c.bn}`)),
    '}',
  ];
}

/**
 * The body and block size of a matmul kernel; for a split-K configuration, of its `part`
 * (the tiles over one part of K, partials out) or `final` kernel (the combine).
 */
export function matmulKernel(x: CudaExprs, c: MmaConfig | Tf32Config | SimtConfig, facts: GpuFacts, role: SplitRole = 'whole'): { body: string[]; threads: number } {
  if ((role !== 'whole') !== (c.variant === 'mma' && (c.split ?? 1) > 1)) throw new Error(`cuda: matmul role '${role}' does not fit ${JSON.stringify(c)}`);
  if (role === 'final') return { body: splitCombineBody(x, c as MmaConfig), threads: SPLIT_COMBINE_BLOCK };
  switch (c.variant) {
    case 'mma':
    case 'tf32':
      return { body: mmaBody(x, c, facts, role === 'part' ? (c as MmaConfig).split : undefined), threads: matmulThreads(c) };
    case 'simt':
      return { body: simtBody(x, c), threads: matmulThreads(c) };
    case 'int':
      return { body: intBody(x, c), threads: matmulThreads(c) };
    default:
      return c satisfies never;
  }
}

/**
 * Split-K's combine (`MmaConfig.split`): a thread per output element (`t`, the domain's
 * linear index) adds its partials `pp[q·numel + t]` for q = 0, 1, … in that order — a fixed
 * order, so every run gives the same bits — and runs the fused epilogue once on the sum.
 */
export function splitCombineBody(x: CudaExprs, c: { readonly split?: number }): string[] {
  const { k, r } = x;
  const it = x.it;
  const numel = r.dim(dimProd(k.domain));
  const values = x.closure(k.stores.map((s) => s.value));
  return [
    `const ${it} t = (${it})blockIdx.x * ${SPLIT_COMBINE_BLOCK} + threadIdx.x;`,
    `if (t >= ${numel}) return;`,
    ...delinearize(x, 't', k.domain.map((_, d) => d)),
    'float acc_e = 0.0f;',
    unroll,
    `for (int q = 0; q < ${c.split}; q++) acc_e += pp[(long long)q * ${numel} + t];`,
    ...values.flatMap((i) => x.statement(i)),
    ...k.stores.map((s) => x.storeLine(s)),
  ];
}

/**
 * f16/bf16 on tensor cores, and f32 on TF32 tensor cores (`tf32`): the same tiles, loaders,
 * cp.async ring and staged epilogue; elements of 2 or 4 bytes (`E`, `V` per 16-byte chunk),
 * and each its own fragment loads and MMA (`compute`). With `split` (split-K's part kernel)
 * a block covers K tiles [kb, kb + KT) of its part and stores its tile of float32 partials
 * (`pp`, part-major: [part][batch][M][N]) instead of running the epilogue.
 */
function mmaBody(x: CudaExprs, c: MmaConfig | Tf32Config, facts: GpuFacts, split?: number): string[] {
  const { k } = x;
  const it = x.it;
  const tf32 = c.variant === 'tf32';
  const dtype = matmulDType(k);
  if (tf32 && (dtype !== 'float32' || facts.arch < 80)) throw new Error('cuda: the TF32 matmul needs float32 operands and sm_80');
  if (!tf32 && dtype === 'float32') throw new Error('cuda: the mma.sync matmul needs float16 or bfloat16 operands');
  const tiles = tf32 ? tf32Tiles(k, c) : undefined;
  const layout = tiles?.layout ?? mmaLayout(k);
  const mma = dtype === 'bfloat16' ? 'kiln_mma_bf16' : 'kiln_mma_f16';
  const async = c.stages > 1;
  if (async && (facts.arch < 80 || layout.a === 'scalar' || layout.b === 'scalar')) throw new Error('cuda: a cp.async matmul needs sm_80 and chunked operands');
  const NT = matmulThreads(c);
  const BK = tf32 ? TF32_BK : MMA_BK;
  const E = tf32 ? 'float' : 'uint16_t'; // shared-memory element
  const V = tf32 ? 4 : 8; // elements per 16-byte chunk
  const zero = tf32 ? '0.0f' : '(uint16_t)0';
  const WTM = c.bm / c.warpsM;
  const WTN = c.bn / c.warpsN;
  const MI = WTM / 16;
  const NI = WTN / 8;
  // Shared tiles: A as [bm][BK+pad] (K-major) or [BK][bm+pad]; B as [bn][BK+pad] or [BK][bn+pad].
  const ldA = tiles?.ldA ?? (layout.a === 'm' ? c.bm + MMA_PAD : BK + MMA_PAD);
  const ldB = tiles?.ldB ?? (layout.b === 'n' ? c.bn + MMA_PAD : BK + MMA_PAD);
  const aTile = layout.a === 'm' ? BK * ldA : c.bm * ldA;
  const bTile = layout.b === 'n' ? BK * ldB : c.bn * ldB;
  const { lines, aStride, bStride } = prologue(x, c, undefined, split);
  const [sAm, sAk] = aStride;
  const [sBk, sBn] = bStride;
  lines.push(
    'const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;',
    `const int wm = warp / ${c.warpsN}, wn = warp % ${c.warpsN};`,
    'KILN_DYNAMIC_SMEM(kiln_smem);',
    `${E}* sA = reinterpret_cast<${E}*>(kiln_smem);`,
    `${E}* sB = sA + ${c.stages * aTile};`,
    `float acc[${MI}][${NI}][4];`,
    unroll,
    `for (int mi = 0; mi < ${MI}; mi++)`,
    `  ${unroll}`,
    `  for (int ni = 0; ni < ${NI}; ni++) acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;`,
  );
  // An element-loaded operand: its 16-bit bits as they are, or as a float for TF32 (a 16-bit operand widened as it loads).
  const element = (ptr: string, param: number, at: string): string => (tf32 ? x.r.load(k.params[param].dtype, ptr, at) : `${ptr}[${at}]`);
  const chunkCopy = (dst: string, src: string, ok: string): string =>
    async ? `kiln_cp_async16(${dst}, ${src}, ${ok});` : `{ const uint4 z = {0u, 0u, 0u, 0u}; *reinterpret_cast<uint4*>(${dst}) = ${ok} ? *reinterpret_cast<const uint4*>(${src}) : z; }`;
  /** A loop over `count` work items, `NT` threads at a time. */
  const spread = (count: number, body: string[]): string[] => [
    count / NT > 4 ? '#pragma unroll 4' : unroll, // element loaders: bounded register use
    `for (int c0 = 0; c0 < ${count}; c0 += ${NT}) {`,
    '  const int c = c0 + tid;',
    ...(count % NT === 0 ? indent(body) : [`  if (c < ${count}) {`, ...indent(body, '    '), '  }']),
    '}',
  ];
  // Tile loaders: (stage s, k origin k0).
  const loadA: string[] = [`auto loadA = [&](int s, ${it} k0) {`, `  ${E}* dst = sA + s * ${aTile};`];
  if (layout.a === 'k') {
    loadA.push(
      ...indent(
        spread(c.bm * (BK / V), [
          `const int row = c / ${BK / V}, kc = (c % ${BK / V}) * ${V};`,
          `const ${it} gm = m0 + row, gk = k0 + kc;`,
          'const bool ok = gm < M && gk < K;',
          chunkCopy(`dst + row * ${ldA} + kc`, `A + (ok ? gm * ${sAm} + gk : 0)`, 'ok'),
        ]),
      ),
    );
  } else if (layout.a === 'm') {
    loadA.push(
      ...indent(
        spread(BK * (c.bm / V), [
          `const int kr = c / ${c.bm / V}, mc = (c % ${c.bm / V}) * ${V};`,
          `const ${it} gm = m0 + mc, gk = k0 + kr;`,
          'const bool ok = gm < M && gk < K;',
          chunkCopy(`dst + kr * ${ldA} + mc`, `A + (ok ? gm + gk * ${sAk} : 0)`, 'ok'),
        ]),
      ),
    );
  } else {
    const mFast = sAm === '1';
    loadA.push(
      ...indent(
        spread(c.bm * BK, [
          mFast ? `const int row = c % ${c.bm}, kk = c / ${c.bm};` : `const int row = c / ${BK}, kk = c % ${BK};`,
          `const ${it} gm = m0 + row, gk = k0 + kk;`,
          `dst[row * ${ldA} + kk] = (gm < M && gk < K) ? ${element('A', k.matmul!.a.param, `gm * ${sAm} + gk * ${sAk}`)} : ${zero};`,
        ]),
      ),
    );
  }
  loadA.push('};');
  const loadB: string[] = [`auto loadB = [&](int s, ${it} k0) {`, `  ${E}* dst = sB + s * ${bTile};`];
  if (layout.b === 'n') {
    loadB.push(
      ...indent(
        spread(BK * (c.bn / V), [
          `const int kr = c / ${c.bn / V}, nc = (c % ${c.bn / V}) * ${V};`,
          `const ${it} gk = k0 + kr, gn = n0 + nc;`,
          'const bool ok = gk < K && gn < N;',
          chunkCopy(`dst + kr * ${ldB} + nc`, `B + (ok ? gk * ${sBk} + gn : 0)`, 'ok'),
        ]),
      ),
    );
  } else if (layout.b === 'k') {
    loadB.push(
      ...indent(
        spread(c.bn * (BK / V), [
          `const int nr = c / ${BK / V}, kc = (c % ${BK / V}) * ${V};`,
          `const ${it} gn = n0 + nr, gk = k0 + kc;`,
          'const bool ok = gn < N && gk < K;',
          chunkCopy(`dst + nr * ${ldB} + kc`, `B + (ok ? gn * ${sBn} + gk : 0)`, 'ok'),
        ]),
      ),
    );
  } else {
    const nFast = sBn === '1';
    loadB.push(
      ...indent(
        spread(c.bn * BK, [
          nFast ? `const int nr = c % ${c.bn}, kk = c / ${c.bn};` : `const int nr = c / ${BK}, kk = c % ${BK};`,
          `const ${it} gn = n0 + nr, gk = k0 + kk;`,
          `dst[nr * ${ldB} + kk] = (gn < N && gk < K) ? ${element('B', k.matmul!.b.param, `gk * ${sBk} + gn * ${sBn}`)} : ${zero};`,
        ]),
      ),
    );
  }
  loadB.push('};');
  // One stage of MMAs: BK/16 k-steps, fragments by ldmatrix.
  const aFrag =
    layout.a === 'm'
      ? `kiln_ldsm_x4_t(af[mi], a_s + (kk + (lane / 16) * 8 + lane % 8) * ${ldA} + mrow + ((lane / 8) % 2) * 8);`
      : `kiln_ldsm_x4(af[mi], a_s + (mrow + lane % 16) * ${ldA} + kk + (lane / 16) * 8);`;
  const bFrag =
    layout.b === 'n'
      ? `kiln_ldsm_x4_t(t4, b_s + (kk + ((lane / 8) % 2) * 8 + lane % 8) * ${ldB} + ncol + (lane / 16) * 8);`
      : `kiln_ldsm_x4(t4, b_s + (ncol + (lane / 16) * 8 + lane % 8) * ${ldB} + kk + ((lane / 8) % 2) * 8);`;
  const compute = tf32 ? tf32Compute(c, layout, { BK, ldA, ldB, aTile, bTile }) : [
    'auto compute = [&](int s) {',
    `  const uint16_t* a_s = sA + s * ${aTile};`,
    `  const uint16_t* b_s = sB + s * ${bTile};`,
    `  ${unroll}`,
    `  for (int kk = 0; kk < ${BK}; kk += 16) {`,
    `    uint32_t af[${MI}][4], bf[${NI}][2];`,
    `    ${unroll}`,
    `    for (int mi = 0; mi < ${MI}; mi++) {`,
    `      const int mrow = wm * ${WTM} + mi * 16;`,
    `      ${aFrag}`,
    '    }',
    `    ${unroll}`,
    `    for (int ni = 0; ni < ${NI}; ni += 2) {`,
    `      const int ncol = wn * ${WTN} + ni * 8;`,
    '      uint32_t t4[4];',
    `      ${bFrag}`,
    '      bf[ni][0] = t4[0]; bf[ni][1] = t4[1]; bf[ni + 1][0] = t4[2]; bf[ni + 1][1] = t4[3];',
    '    }',
    `    ${unroll}`,
    `    for (int mi = 0; mi < ${MI}; mi++)`,
    `      ${unroll}`,
    `      for (int ni = 0; ni < ${NI}; ni++) ${mma}(acc[mi][ni], af[mi], bf[ni]);`,
    '  }',
    '};',
  ];
  lines.push(...loadA, ...loadB, ...compute);
  // K tiles of this block: all of them, or its part's (equal parts of whole tiles, the last one shorter).
  if (split) {
    lines.push(
      `const ${it} KTall = (K + ${BK - 1}) / ${BK}, kpp = (KTall + ${split - 1}) / ${split}, kb = part * kpp;`,
      `const ${it} KT = KTall - kb < kpp ? (KTall > kb ? KTall - kb : 0) : kpp;`,
    );
  } else lines.push(`const ${it} KT = (K + ${BK - 1}) / ${BK};`);
  const kAt = (t: string): string => (split ? `(kb + ${t}) * ${BK}` : `${t} * ${BK}`);
  if (async) {
    const S = c.stages;
    lines.push(
      unroll,
      `for (int s = 0; s < ${S - 1}; s++) {`,
      `  if (s < KT) { loadA(s, ${kAt(`(${it})s`)}); loadB(s, ${kAt(`(${it})s`)}); }`,
      '  kiln_cp_commit();',
      '}',
      `for (${it} kt = 0; kt < KT; kt++) {`,
      `  kiln_cp_wait<${S - 2}>();`,
      '  __syncthreads();',
      `  const ${it} pf = kt + ${S - 1};`,
      `  if (pf < KT) { loadA((int)(pf % ${S}), ${kAt('pf')}); loadB((int)(pf % ${S}), ${kAt('pf')}); }`,
      '  kiln_cp_commit();',
      `  compute((int)(kt % ${S}));`,
      '}',
      'kiln_cp_wait<0>();',
    );
  } else {
    lines.push(`for (${it} kt = 0; kt < KT; kt++) {`, '  __syncthreads();', `  loadA(0, ${kAt('kt')}); loadB(0, ${kAt('kt')});`, '  __syncthreads();', '  compute(0);', '}');
  }
  lines.push(
    '__syncthreads(); // every warp is done with the tiles: C is staged in the same shared memory',
    'float* sC = reinterpret_cast<float*>(kiln_smem);',
    'const int g = lane / 4, tq = lane % 4;',
    unroll,
    `for (int mi = 0; mi < ${MI}; mi++) {`,
    `  ${unroll}`,
    `  for (int ni = 0; ni < ${NI}; ni++) {`,
    `    const int r0 = wm * ${WTM} + mi * 16 + g, c0 = wn * ${WTN} + ni * 8 + tq * 2;`,
    `    sC[r0 * ${c.bn + 4} + c0] = acc[mi][ni][0]; sC[r0 * ${c.bn + 4} + c0 + 1] = acc[mi][ni][1];`,
    `    sC[(r0 + 8) * ${c.bn + 4} + c0] = acc[mi][ni][2]; sC[(r0 + 8) * ${c.bn + 4} + c0 + 1] = acc[mi][ni][3];`,
    '  }',
    '}',
    ...(split ? partialStores(x, c, NT) : stagedEpilogue(x, c, NT)),
  );
  return lines;
}

/**
 * Split-K's part kernel stores its staged bm×bn tile (`sC`) of f32 partials at
 * `pp[part·numel + (bz·M + m)·N + n]`, consecutive threads on consecutive columns (coalesced).
 */
export function partialStores(x: CudaExprs, c: { bm: number; bn: number }, threads: number): string[] {
  const numel = x.r.dim(dimProd(x.k.domain));
  return [
    '__syncthreads();',
    `float* __restrict__ P = pp + (long long)part * ${numel} + (long long)bz * M * N;`,
    '#pragma unroll 1',
    `for (int e = threadIdx.x; e < ${c.bm * c.bn}; e += ${threads}) {`,
    `  const ${x.it} gm = m0 + e / ${c.bn}, gn = n0 + e % ${c.bn};`,
    `  if (gm < M && gn < N) P[gm * N + gn] = sC[(e / ${c.bn}) * ${c.bn + 4} + e % ${c.bn}];`,
    '}',
  ];
}

/**
 * One stage of TF32 MMAs: TF32_BK/8 k-steps of m16n8k8. PTX fragments (g = lane/4, t = lane%4):
 * A a0..a3 = (row g, k t), (g+8, t), (g, t+4), (g+8, t+4); B b0, b1 = (k t, col g), (k t+4, g);
 * C as m16n8k16's. MMA k t and t+4 read stored k 2t and 2t+1 of the step (for A and B alike),
 * so K-major operands load both with one 64-bit read; M/N-major ones read 32 bits at a time.
 * Every value is rounded with cvt.rna.tf32.f32. Conflict-free by the TF32_PAD_* row strides.
 */
function tf32Compute(c: Tf32Config, layout: MmaLayout, t: { BK: number; ldA: number; ldB: number; aTile: number; bTile: number }): string[] {
  const WTM = c.bm / c.warpsM;
  const WTN = c.bn / c.warpsN;
  const MI = WTM / 16;
  const NI = WTN / 8;
  const cvt = (v: string): string => `kiln_tf32(__uint_as_float(${v}))`;
  const aFrag =
    layout.a === 'm'
      ? [
          `const float* a0 = a_s + (kk + 2 * t) * ${t.ldA} + r;`,
          `af[mi][0] = kiln_tf32(a0[0]); af[mi][1] = kiln_tf32(a0[8]);`,
          `af[mi][2] = kiln_tf32(a0[${t.ldA}]); af[mi][3] = kiln_tf32(a0[${t.ldA + 8}]);`,
        ]
      : [
          `const uint2 lo = *reinterpret_cast<const uint2*>(a_s + r * ${t.ldA} + kk + 2 * t);`,
          `const uint2 hi = *reinterpret_cast<const uint2*>(a_s + (r + 8) * ${t.ldA} + kk + 2 * t);`,
          `af[mi][0] = ${cvt('lo.x')}; af[mi][1] = ${cvt('hi.x')}; af[mi][2] = ${cvt('lo.y')}; af[mi][3] = ${cvt('hi.y')};`,
        ];
  const bFrag =
    layout.b === 'n'
      ? [`const float* b0 = b_s + (kk + 2 * t) * ${t.ldB} + n;`, `bf[ni][0] = kiln_tf32(b0[0]); bf[ni][1] = kiln_tf32(b0[${t.ldB}]);`]
      : [`const uint2 v = *reinterpret_cast<const uint2*>(b_s + n * ${t.ldB} + kk + 2 * t);`, `bf[ni][0] = ${cvt('v.x')}; bf[ni][1] = ${cvt('v.y')};`];
  return [
    'auto compute = [&](int s) {',
    `  const float* a_s = sA + s * ${t.aTile};`,
    `  const float* b_s = sB + s * ${t.bTile};`,
    '  const int g = lane / 4, t = lane % 4;',
    `  ${unroll}`,
    `  for (int kk = 0; kk < ${t.BK}; kk += 8) {`,
    `    uint32_t af[${MI}][4], bf[${NI}][2];`,
    `    ${unroll}`,
    `    for (int mi = 0; mi < ${MI}; mi++) {`,
    `      const int r = wm * ${WTM} + mi * 16 + g;`,
    ...aFrag.map((l) => `      ${l}`),
    '    }',
    `    ${unroll}`,
    `    for (int ni = 0; ni < ${NI}; ni++) {`,
    `      const int n = wn * ${WTN} + ni * 8 + g;`,
    ...bFrag.map((l) => `      ${l}`),
    '    }',
    `    ${unroll}`,
    `    for (int mi = 0; mi < ${MI}; mi++)`,
    `      ${unroll}`,
    `      for (int ni = 0; ni < ${NI}; ni++) kiln_mma_tf32(acc[mi][ni], af[mi], bf[ni]);`,
    '  }',
    '};',
  ];
}

/** f32 on CUDA cores: shared tiles, an (bm/16)×(bn/16) register tile per thread, interleaved by 16. */
function simtBody(x: CudaExprs, c: SimtConfig): string[] {
  const { k, r } = x;
  const it = x.it;
  const TM = c.bm / 16;
  const TN = c.bn / 16;
  const BK = SIMT_BK;
  const ldA = c.bm + 4;
  const ldB = c.bn + 4;
  const { lines, aStride, bStride } = prologue(x, c);
  const [sAm, sAk] = aStride;
  const [sBk, sBn] = bStride;
  const pa = k.params[k.matmul!.a.param];
  const pb = k.params[k.matmul!.b.param];
  const tile = (n: number, body: string[]): string[] => [unroll, `for (int e0 = 0; e0 < ${n}; e0 += 256) {`, '  const int e = e0 + tid;', ...indent(body), '}'];
  lines.push(
    'const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;',
    'KILN_DYNAMIC_SMEM(kiln_smem);',
    'float* sA = reinterpret_cast<float*>(kiln_smem);',
    `float* sB = sA + ${BK * ldA};`,
    `float acc[${TM}][${TN}];`,
    unroll,
    `for (int i = 0; i < ${TM}; i++)`,
    `  ${unroll}`,
    `  for (int j = 0; j < ${TN}; j++) acc[i][j] = 0.0f;`,
    `for (${it} k0 = 0; k0 < K; k0 += ${BK}) {`,
    ...indent(
      tile(c.bm * BK, [
        sAm === '1' ? `const int mm = e % ${c.bm}, kk = e / ${c.bm};` : `const int mm = e / ${BK}, kk = e % ${BK};`,
        `const ${it} gm = m0 + mm, gk = k0 + kk;`,
        `sA[kk * ${ldA} + mm] = (gm < M && gk < K) ? ${r.load(pa.dtype, 'A', `gm * ${sAm} + gk * ${sAk}`)} : 0.0f;`,
      ]),
    ),
    ...indent(
      tile(c.bn * BK, [
        sBn === '1' || sBk !== '1' ? `const int nn = e % ${c.bn}, kk = e / ${c.bn};` : `const int nn = e / ${BK}, kk = e % ${BK};`,
        `const ${it} gn = n0 + nn, gk = k0 + kk;`,
        `sB[kk * ${ldB} + nn] = (gn < N && gk < K) ? ${r.load(pb.dtype, 'B', `gk * ${sBk} + gn * ${sBn}`)} : 0.0f;`,
      ]),
    ),
    '  __syncthreads();',
    `  ${unroll}`,
    `  for (int kk = 0; kk < ${BK}; kk++) {`,
    `    float a[${TM}], b[${TN}];`,
    `    ${unroll}`,
    `    for (int i = 0; i < ${TM}; i++) a[i] = sA[kk * ${ldA} + ty + 16 * i];`,
    `    ${unroll}`,
    `    for (int j = 0; j < ${TN}; j++) b[j] = sB[kk * ${ldB} + tx + 16 * j];`,
    `    ${unroll}`,
    `    for (int i = 0; i < ${TM}; i++)`,
    `      ${unroll}`,
    `      for (int j = 0; j < ${TN}; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);`,
    '  }',
    '  __syncthreads();',
    '}',
    'float* sC = reinterpret_cast<float*>(kiln_smem);',
    unroll,
    `for (int i = 0; i < ${TM}; i++)`,
    `  ${unroll}`,
    `  for (int j = 0; j < ${TN}; j++) sC[(ty + 16 * i) * ${c.bn + 4} + tx + 16 * j] = acc[i][j];`,
    ...stagedEpilogue(x, c, 256),
  );
  return lines;
}

/** int32: a thread per output, exact wrapping arithmetic. */
function intBody(x: CudaExprs, c: SimtConfig): string[] {
  const { lines, aStride, bStride } = prologue(x, c);
  const [sAm, sAk] = aStride;
  const [sBk, sBn] = bStride;
  const it = x.it;
  lines.push(
    `const ${it} row = m0 + threadIdx.x / ${c.bn}, col = n0 + threadIdx.x % ${c.bn};`,
    'unsigned int s = 0u;',
    `if (row < M && col < N) for (${it} kk = 0; kk < K; kk++) s += (unsigned int)A[row * ${sAm} + kk * ${sAk}] * (unsigned int)B[kk * ${sBk} + col * ${sBn}];`,
    'const int acc_e = (int)s;',
    ...epilogue(x, 'row', 'col'),
  );
  return lines;
}
