/**
 * The Hopper matmul (sm_90a only, see docs/CUDA.md, "wgmma"): f16/bf16 with
 * f32 accumulators on warpgroup MMA, `wgmma.mma_async.m64n{bn}k16`, operands read by the
 * tensor cores straight from shared memory through matrix descriptors.
 *
 * - A block is bm/64 consumer warpgroups (128 threads each); warpgroup w computes rows
 *   64w..64w+63 of the bm×bn tile, all warpgroups share the B tile.
 * - K advances in 64-wide tiles (one 128-byte row of 16-bit elements: the 128B swizzle
 *   width) through a `stages`-deep ring filled by every thread with 16-byte `cp.async.cg`
 *   copies, written in the 128B-swizzle pattern (16-byte chunk c of a 128-byte row r sits
 *   at chunk c ^ (r % 8); the ring is 1024-byte aligned so the pattern is the address's).
 * - Blocks take tiles in groups of 8 tile rows, column-major within a group, so that the
 *   blocks of a wave share operand panels in L2 (`wgmmaTileOf`).
 * - A (K contiguous) and B with K contiguous are K-major tiles [rows][64]; B with N
 *   contiguous is MN-major: 64-column atoms [64 k][64 n], read with the transpose bit.
 * - Per tile: wait for its copies, `fence.proxy.async` (cp.async writes are generic-proxy,
 *   wgmma reads through the async proxy), a barrier, refill the slot that the MMAs two
 *   tiles back have finished with, then 4 wgmmas, commit, and wait until at most one
 *   group is in flight: loads run `stages - 2` tiles ahead while the tensor cores work.
 * - The accumulators (bn/2 floats per thread) go to shared memory by the ISA's fragment
 *   layout and the mma variant's staged epilogue runs on them (bias, activation, casts).
 *
 * The index math is also written out as plain functions (`wgmma*` below) that a test checks
 * against the PTX ISA's canonical layouts, since it cannot run without a GPU.
 */
import { ITEMSIZE } from '../ir';
import { divisible, matmulDType, mmaLayout, matmulThreads, splitOf, SPLIT_COMBINE_BLOCK, wgmmaStageBytes, WGMMA_BK, type WgmmaConfig } from '../passes/gpu';
import { indent, unroll, type CudaExprs } from './cuda-exprs';
import { partialStores, prologue, splitCombineBody, stagedEpilogue, type SplitRole } from './cuda-matmul';

/** Bytes of a 128B-swizzle atom: 8 rows of 128 bytes. */
const ATOM = 1024;
/** Tile rows per group of the block order. */
const GROUP_M = 8;
/** Bytes of one MN-major B column block: 64 k-rows of 64 n-columns. */
const MN_BLOCK = WGMMA_BK * 128;

/** The 128B swizzle (CUTLASS's Swizzle<3,4,3>) on an offset from a 1024-byte aligned base. */
export function wgmmaSwizzle(offset: number): number {
  return offset ^ (((offset >> 7) & 7) << 4);
}

/** Byte offset of 16-byte chunk `chunk` (8 elements along K) of row `row` in a K-major tile. */
export function wgmmaKMajorChunk(row: number, chunk: number): number {
  return row * 128 + ((chunk ^ (row & 7)) << 4);
}

/** Byte offset of 16-byte chunk `chunk` (8 elements along N) of k-row `kr` in the MN-major B tile. */
export function wgmmaMnMajorChunk(kr: number, chunk: number): number {
  return (chunk >> 3) * MN_BLOCK + kr * 128 + (((chunk & 7) ^ (kr & 7)) << 4);
}

/** Descriptor fields (bytes) of one wgmma operand: start address, leading and stride byte offsets. */
export interface WgmmaDesc {
  readonly start: number;
  readonly lbo: number;
  readonly sbo: number;
}

/** The 64-bit matrix descriptor: 14-bit address, LBO and SBO in 16-byte units, swizzle mode 1 (128B) in bits 62-63. */
export function wgmmaDescriptor(d: WgmmaDesc): bigint {
  const enc = (x: number): bigint => BigInt((x & 0x3ffff) >> 4);
  return enc(d.start) | (enc(d.lbo) << 16n) | (enc(d.sbo) << 32n) | (1n << 62n);
}

/**
 * The descriptors of k-step `kk` (0..3) of a stage, as offsets from the stage's A and B
 * tiles: A rows of warpgroup `wg` (K-major), B K-major (`k`) or MN-major (`n`).
 */
export function wgmmaDescs(wg: number, kk: number, b: 'k' | 'n'): { a: WgmmaDesc; b: WgmmaDesc } {
  const a = { start: wg * 64 * 128 + kk * 32, lbo: 16, sbo: ATOM }; // LBO unused by K-major swizzled layouts
  const bd = b === 'k' ? { start: kk * 32, lbo: 16, sbo: ATOM } : { start: kk * 16 * 128, lbo: MN_BLOCK, sbo: ATOM };
  return { a, b: bd };
}

/** Output (row, col) within a warpgroup's 64×N tile of accumulator register `j` of thread `t` (0..127). */
export function wgmmaAccCoord(t: number, j: number): { row: number; col: number } {
  const warp = t >> 5;
  const lane = t & 31;
  const q = j & 3;
  return { row: warp * 16 + (lane >> 2) + 8 * (q >> 1), col: 8 * (j >> 2) + 2 * (lane & 3) + (q & 1) };
}

/** The tile (row, column) block `pid` (row-major over a tilesM × tilesN grid) computes: the generated code's order. */
export function wgmmaTileOf(pid: number, tilesM: number, tilesN: number): { tm: number; tn: number } {
  const group = Math.floor(pid / (GROUP_M * tilesN));
  const first = group * GROUP_M;
  const size = Math.min(tilesM - first, GROUP_M);
  const inGroup = pid % (GROUP_M * tilesN);
  return { tm: first + (inGroup % size), tn: Math.floor(inGroup / size) };
}

/** The kernel body and block size. */
export function wgmmaKernel(x: CudaExprs, c: WgmmaConfig, role: SplitRole = 'whole'): { body: string[]; threads: number } {
  if ((role !== 'whole') !== (splitOf(c) !== undefined)) throw new Error(`cuda: wgmma role '${role}' does not fit ${JSON.stringify(c)}`);
  if (role === 'final') return { body: splitCombineBody(x, c), threads: SPLIT_COMBINE_BLOCK };
  const split = role === 'part' ? c.split : undefined;
  const { k } = x;
  const it = x.it;
  const dtype = matmulDType(k);
  if ((dtype !== 'float16' && dtype !== 'bfloat16') || ITEMSIZE[dtype] !== 2) throw new Error(`cuda: wgmma needs 16-bit operands, got ${dtype}`);
  const ptx = dtype === 'bfloat16' ? 'bf16' : 'f16';
  const layout = mmaLayout(k);
  if (layout.a !== 'k' || (layout.b !== 'k' && layout.b !== 'n')) throw new Error(`cuda: wgmma needs A K-contiguous and B N- or K-contiguous (got ${layout.a}, ${layout.b})`);
  const bl = layout.b;
  const NT = matmulThreads(c);
  const S = c.stages;
  const P = S - 2; // tiles loading ahead: one slot computing, one possibly still read by the previous MMAs
  const aBytes = c.bm * WGMMA_BK * 2;
  const stage = wgmmaStageBytes(c);
  const nAcc = c.bn / 2;
  // Tiles in groups of GROUP_M tile rows, column by column within a group (a bijection of
  // the grid): blocks running together share A and B panels in L2 (Triton's grouped order).
  const origin = [
    'const int tiles_m = gridDim.x, tiles_n = gridDim.y, pid = blockIdx.y * tiles_m + blockIdx.x; // launch order',
    `const int group = pid / (${GROUP_M} * tiles_n), first_m = group * ${GROUP_M}, group_m = min(tiles_m - first_m, ${GROUP_M});`,
    `const int in_group = pid % (${GROUP_M} * tiles_n);`,
    `const ${it} m0 = (${it})(first_m + in_group % group_m) * ${c.bm}, n0 = (${it})(in_group / group_m) * ${c.bn};`,
  ];
  const { lines, aStride, bStride } = prologue(x, c, origin, split);
  const [sAm] = aStride;
  const [sBk, sBn] = bStride;
  const copies = (count: number, body: string[]): string[] => [
    unroll,
    `for (int c0 = 0; c0 < ${count}; c0 += ${NT}) {`,
    '  const int c = c0 + tid;',
    ...indent(body),
    '}',
  ];
  // Edge tiles (M, N or K not a multiple of the tile): chunks past the end are zero-filled
  // (cp.async with source size 0, from the operand's first element). A size the tiles divide
  // exactly gets no test at all.
  const r = k.domain.length;
  const edge = { m: !divisible(k.domain[r - 2], c.bm), n: !divisible(k.domain[r - 1], c.bn), k: !divisible(k.matmul!.k, WGMMA_BK) };
  const copy = (dst: string, operand: string, at: string, tests: string[]): string[] =>
    tests.length === 0
      ? [`kiln_cp_async16(${dst}, ${operand} + ${at}, true);`]
      : [`const bool ok = ${tests.join(' && ')};`, `kiln_cp_async16(${dst}, ${operand} + (ok ? ${at} : 0), ok);`];
  const within = (cond: boolean, test: string): string[] => (cond ? [test] : []);
  const loadB =
    bl === 'k'
      ? copies(c.bn * 8, [
          'const int row = c / 8, ch = c % 8;',
          ...copy('b + row * 128 + ((ch ^ (row % 8)) * 16)', 'B', `(${it})(n0 + row) * ${sBn} + k0 + ch * 8`, [...within(edge.n, 'n0 + row < N'), ...within(edge.k, 'k0 + ch * 8 < K')]),
        ])
      : copies(WGMMA_BK * (c.bn / 8), [
          `const int kr = c / ${c.bn / 8}, ch = c % ${c.bn / 8};`,
          ...copy(`b + (ch / 8) * ${MN_BLOCK} + kr * 128 + (((ch % 8) ^ (kr % 8)) * 16)`, 'B', `(${it})(k0 + kr) * ${sBk} + n0 + ch * 8`, [
            ...within(edge.k, 'k0 + kr < K'),
            ...within(edge.n, 'n0 + ch * 8 < N'),
          ]),
        ]);
  // K tiles of this block: all of them, or (split-K's part kernel) its part's: equal parts
  // of whole tiles, the last one shorter.
  const KTall = edge.k ? `(K + ${WGMMA_BK - 1}) / ${WGMMA_BK}` : `K / ${WGMMA_BK}`;
  const kTiles = split
    ? [`const ${it} KTall = ${KTall}, kpp = (KTall + ${split - 1}) / ${split}, kb = part * kpp;`, `const ${it} KT = KTall - kb < kpp ? (KTall > kb ? KTall - kb : 0) : kpp;`]
    : [`const ${it} KT = ${KTall};`];
  const kAt = (t: string): string => (split ? `(kb + ${t}) * ${WGMMA_BK}` : `${t} * ${WGMMA_BK}`);
  const descs = [0, 1, 2, 3].map((kk) => wgmmaDescs(0, kk, bl));
  const regs = Array.from({ length: nAcc }, (_, i) => `%${i}`).join(', ');
  const asm =
    `"{\\n.reg .pred p;\\nsetp.ne.b32 p, %${nAcc + 2}, 0;\\n` +
    `wgmma.mma_async.sync.aligned.m64n${c.bn}k16.f32.${ptx}.${ptx} {${regs}}, %${nAcc}, %${nAcc + 1}, p, 1, 1, 0, ${bl === 'n' ? 1 : 0};\\n}\\n"`;
  const outs = Array.from({ length: nAcc }, (_, i) => `"+f"(d[${i}])`).join(', ');
  lines.push(
    `const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, warp = (tid % 128) / 32;`,
    'KILN_DYNAMIC_SMEM(kiln_smem);',
    '// The ring starts on a 1024-byte boundary: the 128B swizzle is a function of the address.',
    `uint8_t* ring = reinterpret_cast<uint8_t*>(kiln_smem) + ((${ATOM}u - (kiln_smem_addr(kiln_smem) & ${ATOM - 1}u)) & ${ATOM - 1}u);`,
    'const uint32_t ring0 = kiln_smem_addr(ring);',
    `float d[${nAcc}];`,
    unroll,
    `for (int i = 0; i < ${nAcc}; i++) d[i] = 0.0f;`,
    '/* Matrix descriptor: address, LBO and SBO in 16-byte units (bits 0, 16, 32), 128B swizzle (bit 62). */',
    'auto desc = [](uint32_t addr, uint32_t lbo, uint32_t sbo) -> uint64_t {',
    '  return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);',
    '};',
    `auto load = [&](int s, ${it} k0) {`,
    `  uint8_t* a = ring + s * ${stage};`,
    `  uint8_t* b = a + ${aBytes};`,
    ...indent(
      copies(c.bm * 8, [
        'const int row = c / 8, ch = c % 8;',
        ...copy('a + row * 128 + ((ch ^ (row % 8)) * 16)', 'A', `(${it})(m0 + row) * ${sAm} + k0 + ch * 8`, [...within(edge.m, 'm0 + row < M'), ...within(edge.k, 'k0 + ch * 8 < K')]),
      ]),
    ),
    ...indent(loadB),
    '};',
    ...kTiles,
    unroll,
    `for (int s = 0; s < ${P}; s++) {`,
    `  if (s < KT) load(s, ${kAt(`(${it})s`)});`,
    '  kiln_cp_commit();',
    '}',
    '#pragma unroll 1',
    `for (${it} kt = 0; kt < KT; kt++) {`,
    `  kiln_cp_wait<${P - 1}>(); // tile kt has landed (this thread's copies)`,
    '  asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); // ... and is visible to the async proxy',
    '  __syncthreads(); // every thread\'s copies; every warpgroup is past the MMAs of tile kt - 2',
    `  const ${it} pf = kt + ${P};`,
    `  if (pf < KT) load((int)(pf % ${S}), ${kAt('pf')});`,
    '  kiln_cp_commit();',
    `  const uint32_t sa = ring0 + (uint32_t)(kt % ${S}) * ${stage} + wg * ${64 * 128}, sb = ring0 + (uint32_t)(kt % ${S}) * ${stage} + ${aBytes};`,
    '  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");',
    ...descs.flatMap((dd) => [
      '  {',
      `    const uint64_t da = desc(sa + ${dd.a.start}, ${dd.a.lbo}, ${dd.a.sbo}), db = desc(sb + ${dd.b.start}, ${dd.b.lbo}, ${dd.b.sbo});`,
      `    asm volatile(${asm}`,
      `      : ${outs}`,
      '      : "l"(da), "l"(db), "r"(1));',
      '  }',
    ]),
    '  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");',
    '  asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); // the MMAs of tile kt - 1 are done',
    '}',
    'asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");',
    'kiln_cp_wait<0>();',
    '__syncthreads(); // every warpgroup is done with the ring: C is staged in the same shared memory',
    'float* sC = reinterpret_cast<float*>(kiln_smem);',
    '/* The m64nNk16 accumulator layout: warp w of the warpgroup holds rows 16w..16w+15; register 4i+q is',
    '   row lane/4 + 8*(q/2), column 8i + 2*(lane%4) + q%2 (the mma.m16n8 layout, repeated along N). */',
    unroll,
    `for (int i = 0; i < ${c.bn / 8}; i++) {`,
    `  const int r0 = wg * 64 + warp * 16 + lane / 4, c0 = i * 8 + (lane % 4) * 2;`,
    `  sC[r0 * ${c.bn + 4} + c0] = d[4 * i]; sC[r0 * ${c.bn + 4} + c0 + 1] = d[4 * i + 1];`,
    `  sC[(r0 + 8) * ${c.bn + 4} + c0] = d[4 * i + 2]; sC[(r0 + 8) * ${c.bn + 4} + c0 + 1] = d[4 * i + 3];`,
    '}',
    ...(split ? partialStores(x, c, NT) : stagedEpilogue(x, c, NT)),
  );
  return { body: lines, threads: NT };
}
