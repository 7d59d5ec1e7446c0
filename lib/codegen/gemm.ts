/**
 * Matmul kernels for the CPU, in the Goto/BLIS design: the K×N operand is packed into
 * NR-wide panels and the M×K operand into MR-tall panels (contiguous, 64-byte aligned,
 * f16/bf16 converted to float while packing, any strides or broadcast batch dims read
 * through the operand's view), and a 6×16 register-tiled micro-kernel (12 AVX2 FMA
 * accumulators) multiplies one panel pair. Blocks of KC×NC (B) and MC×KC (A) keep the
 * panels in L1/L2 (reading A in place instead of packing it measured 30% slower: its
 * rows, 4 KB apart for K = 1024, collide in L1 sets). Threads take (batch, N block,
 * M chunk) units. The fused elementwise epilogue runs on each finished C tile while it is hot in L1. int32 matmuls take a
 * simple exact loop (wrapping products, like the interpreter's Math.imul).
 */
import { dimProd, type Dim } from '../ir';
import type { View } from '../passes';
import type { CStyleRenderer } from './cstyle';
import type { KernelExprs } from './loops';

/** The blocked GEMM driver and micro-kernel (C++ text), emitted once per unit that needs it. */
export const GEMM_PRELUDE = String.raw`#include <immintrin.h>
#define KILN_MR 6
#define KILN_NR 16
#define KILN_KC 256
#define KILN_MC 72
#define KILN_NC 256
static inline int64_t kiln_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* n contiguous elements of storage kind KIND (0 float32, 1 float16, 2 bfloat16) as floats. */
static inline void kiln_row_f32(int kind, const void* src, float* __restrict__ dst, int64_t n) {
  if (kind == 0) {
    const float* s = (const float*)src;
    for (int64_t i = 0; i < n; i++) dst[i] = s[i];
  } else if (kind == 1) {
    const uint16_t* s = (const uint16_t*)src;
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(s + i)))); /* exact */
#endif
    for (; i < n; i++) dst[i] = kiln_h2f(s[i]);
  } else {
    const uint16_t* s = (const uint16_t*)src;
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_bits_f((uint32_t)s[i] << 16);
  }
}

/* C[MR x NR] (row stride ldc) = (first ? 0 : C) + A (MR rows of kc, row stride lda) . B panel (kc x NR). */
static inline void kiln_micro(int64_t kc, const float* __restrict__ a, int64_t lda, const float* __restrict__ b, float* __restrict__ c, int64_t ldc, int first) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
#define KILN_ROW(r) av = _mm256_broadcast_ss(a##r + p); c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b + p * KILN_NR), b1 = _mm256_load_ps(b + p * KILN_NR + 8);
    __m256 av;
    KILN_ROW(0) KILN_ROW(1) KILN_ROW(2) KILN_ROW(3) KILN_ROW(4) KILN_ROW(5)
  }
#define KILN_STORE(r) \
  if (!first) { c##r##0 = _mm256_add_ps(c##r##0, _mm256_loadu_ps(c + r * ldc)); c##r##1 = _mm256_add_ps(c##r##1, _mm256_loadu_ps(c + r * ldc + 8)); } \
  _mm256_storeu_ps(c + r * ldc, c##r##0); _mm256_storeu_ps(c + r * ldc + 8, c##r##1);
  KILN_STORE(0) KILN_STORE(1) KILN_STORE(2) KILN_STORE(3) KILN_STORE(4) KILN_STORE(5)
#undef KILN_ROW
#undef KILN_STORE
#else
  float acc[KILN_MR][KILN_NR] = {{0}};
  for (int64_t p = 0; p < kc; p++)
    for (int r = 0; r < KILN_MR; r++)
      for (int j = 0; j < KILN_NR; j++) acc[r][j] += a[r * lda + p] * b[p * KILN_NR + j];
  for (int r = 0; r < KILN_MR; r++)
    for (int j = 0; j < KILN_NR; j++) c[r * ldc + j] = (first ? 0.0f : c[r * ldc + j]) + acc[r][j];
#endif
}

/*
 * Batched C = A.B; epi(batch, row, col0, ncols, const float* c) receives each finished tile row.
 * a_raw / b_raw are the operands' storage and a_kind / b_kind its kind (0 float32, 1 float16,
 * 2 bfloat16) for the contiguous fast paths; la / lb read any element otherwise.
 */
template <typename LA, typename OA, typename LB, typename OB, typename EPI>
static void kiln_gemm(int64_t nb, int64_t M, int64_t N, int64_t K, LA la, int64_t a_rs, int64_t a_cs, OA offa, const void* a_raw, int a_kind,
                      LB lb, int64_t b_rs, int64_t b_cs, OB offb, const void* b_raw, int b_kind, EPI epi) {
  const int64_t a_size = a_kind == 0 ? 4 : 2, b_size = b_kind == 0 ? 4 : 2;
  if (nb <= 0 || M <= 0 || N <= 0) return;
  const int nt = kiln_nt();
  /* N blocks small enough that batch x N blocks give each thread 4 units (dynamic balance under load), at least 4 panels wide. */
  int64_t nc = KILN_NC;
  while (nc > 4 * KILN_NR && nb * ((N + nc - 1) / nc) < 4 * nt) nc /= 2;
  const int64_t nblk = (N + nc - 1) / nc, mblk = (M + KILN_MC - 1) / KILN_MC;
  int64_t chunks = 1; /* then split M when threads are still idle */
  while (chunks < mblk && nb * nblk * chunks < 2 * nt) chunks++;
  const int64_t chunk_blocks = (mblk + chunks - 1) / chunks;
  chunks = (mblk + chunk_blocks - 1) / chunk_blocks;
  const int64_t units = nb * nblk * chunks, crow = chunk_blocks * KILN_MC;
  const int64_t nk = K > 0 ? (K + KILN_KC - 1) / KILN_KC : 1;
  const double flops = 2.0 * (double)nb * (double)M * (double)N * (double)K;
#pragma omp parallel num_threads(nt) if (units > 1 && flops > 4e6)
  {
    float* ap = (float*)aligned_alloc(64, sizeof(float) * KILN_MC * KILN_KC);
    float* bp = (float*)aligned_alloc(64, sizeof(float) * KILN_KC * KILN_NC);
    float* cc = (float*)aligned_alloc(64, sizeof(float) * crow * KILN_NC);
#pragma omp for schedule(dynamic)
    for (int64_t u = 0; u < units; u++) {
      const int64_t bi = u / (nblk * chunks), rest = u % (nblk * chunks);
      const int64_t jc = (rest / chunks) * nc, i_lo = (rest % chunks) * crow;
      const int64_t i_hi = kiln_min(M, i_lo + crow), ncur = kiln_min(nc, N - jc);
      const int64_t oa = offa(bi), ob = offb(bi);
      for (int64_t kb = 0; kb < nk; kb++) {
        const int64_t pc = kb * KILN_KC, kc = kiln_min(KILN_KC, K - pc);
        /* Pack B[pc:pc+kc, jc:jc+ncur] into NR-wide panels, zero-padded; contiguous rows are read whole. */
        const int64_t full = b_cs == 1 ? ncur - ncur % KILN_NR : 0;
        for (int64_t p = 0; p < kc && full > 0; p++) {
          const char* src = (const char*)b_raw + b_size * (ob + (pc + p) * b_rs + jc);
          for (int64_t jr = 0; jr < full; jr += KILN_NR) kiln_row_f32(b_kind, src + b_size * jr, bp + jr * kc + p * KILN_NR, KILN_NR);
        }
        for (int64_t jr = full; jr < ncur; jr += KILN_NR) {
          float* dst = bp + jr * kc;
          const int64_t nr = kiln_min(KILN_NR, ncur - jr);
          for (int64_t p = 0; p < kc; p++) {
            const int64_t at = ob + (pc + p) * b_rs + (jc + jr) * b_cs;
            for (int64_t j = 0; j < KILN_NR; j++) dst[p * KILN_NR + j] = j < nr ? lb(at + j * b_cs) : 0.0f;
          }
        }
        for (int64_t ic = i_lo; ic < i_hi; ic += KILN_MC) {
          const int64_t mc = kiln_min(KILN_MC, i_hi - ic);
          /* Pack A[ic:ic+mc, pc:pc+kc] as MR-row panels, each row contiguous, zero rows past M. */
          for (int64_t ir = 0; ir < mc; ir += KILN_MR)
            for (int64_t r = 0; r < KILN_MR; r++) {
              float* dst = ap + (ir + r) * kc;
              const int64_t at = oa + (ic + ir + r) * a_rs + pc * a_cs;
              if (ir + r < mc && a_cs == 1)
                kiln_row_f32(a_kind, (const char*)a_raw + a_size * at, dst, kc);
              else if (ir + r < mc)
                for (int64_t p = 0; p < kc; p++) dst[p] = la(at + p * a_cs);
              else
                for (int64_t p = 0; p < kc; p++) dst[p] = 0.0f;
            }
          for (int64_t jr = 0; jr < ncur; jr += KILN_NR)
            for (int64_t ir = 0; ir < mc; ir += KILN_MR) {
              float* c = cc + (ic - i_lo + ir) * KILN_NC + jr;
              kiln_micro(kc, ap + ir * kc, kc, bp + jr * kc, c, KILN_NC, kb == 0);
              if (kb == nk - 1) {
                const int64_t mr = kiln_min(KILN_MR, mc - ir), nr = kiln_min(KILN_NR, ncur - jr);
                for (int64_t r = 0; r < mr; r++) epi(bi, ic + ir + r, jc + jr, nr, (const float*)(c + r * KILN_NC));
              }
            }
        }
      }
    }
    free(ap);
    free(bp);
    free(cc);
  }
}

/* Exact int32 matmul: products and sums wrap modulo 2^32. */
template <typename LA, typename OA, typename LB, typename OB, typename EPI>
static void kiln_gemm_i32(int64_t nb, int64_t M, int64_t N, int64_t K, LA la, int64_t a_rs, int64_t a_cs, OA offa, const void*, int,
                          LB lb, int64_t b_rs, int64_t b_cs, OB offb, const void*, int, EPI epi) {
#pragma omp parallel for collapse(2) num_threads(kiln_nt()) if ((double)nb * M * N * K > 4e6)
  for (int64_t bi = 0; bi < nb; bi++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        uint32_t s = 0;
        for (int64_t p = 0; p < K; p++) s += (uint32_t)la(offa(bi) + i * a_rs + p * a_cs) * (uint32_t)lb(offb(bi) + p * b_rs + j * b_cs);
        const int32_t c = (int32_t)s;
        epi(bi, i, j, 1, &c);
      }
}
`;

/** Offset of batch `b` (linear over `batch`) in a view whose leading dims are the batch dims. */
function batchOffset(r: CStyleRenderer, v: View, batch: readonly Dim[]): string {
  const terms = batch.map((_, d) => `${coord(r, 'b', batch, d)}*${r.dim(v.strides[d])}`);
  return [r.dim(v.offset), ...terms].join(' + ');
}

/** Coordinate `d` of linear batch index `b`. */
function coord(r: CStyleRenderer, b: string, batch: readonly Dim[], d: number): string {
  const inner = dimProd(batch.slice(d + 1));
  const q = inner === 1 ? b : `(${b} / ${r.dim(inner)})`;
  return d === 0 ? q : `(${q} % ${r.dim(batch[d])})`;
}

/** The body of a matmul kernel: operand views, the epilogue lambda, the driver call. */
export function matmulBody(x: KernelExprs, simd: string): string[] {
  const { k, r } = x;
  const mm = k.matmul!;
  const rank = k.domain.length;
  const batch = k.domain.slice(0, rank - 2);
  const [a, b] = [mm.a.view[0], mm.b.view[0]];
  const pa = k.params[mm.a.param];
  const pb = k.params[mm.b.param];
  const int = pa.dtype === 'int32';
  const elem = int ? 'int32_t' : 'float';
  const raw = (dt: string, param: number): string => `p${param}, ${{ float32: 0, float16: 1, bfloat16: 2 }[dt] ?? -1}`;
  const deps = (i: number): boolean => k.deps[i][rank - 1];
  const values = x.closure(k.stores.map((s) => s.value));
  const row = values.filter((i) => !deps(i)).flatMap((i) => x.statement(i));
  const col = values.filter(deps).flatMap((i) => x.statement(i));
  return [
    `const int64_t NB = ${r.dim(dimProd(batch))}, M = ${r.dim(k.domain[rank - 2])}, N = ${r.dim(k.domain[rank - 1])}, K = ${r.dim(mm.k)};`,
    `auto la = [&](int64_t o) -> ${elem} { return ${r.load(pa.dtype, `p${mm.a.param}`, 'o')}; };`,
    `auto lb = [&](int64_t o) -> ${elem} { return ${r.load(pb.dtype, `p${mm.b.param}`, 'o')}; };`,
    `auto offa = [&](int64_t b) -> int64_t { return ${batchOffset(r, a, batch)}; };`,
    `auto offb = [&](int64_t b) -> int64_t { return ${batchOffset(r, b, batch)}; };`,
    `auto epi = [&](int64_t b, int64_t i, int64_t j0, int64_t nj, const auto* __restrict__ c) {`,
    `  (void)b;`,
    ...batch.map((_, d) => `  const int64_t i${d} = ${coord(r, 'b', batch, d)};`),
    `  const int64_t i${rank - 2} = i;`,
    ...row.map((l) => `  ${l}`),
    `  ${simd}`,
    `  for (int64_t jj = 0; jj < nj; jj++) {`,
    `    const int64_t i${rank - 1} = j0 + jj;`,
    ...col.map((l) => `    ${l}`),
    ...k.stores.map((s) => `    ${x.storeLine(s)}`),
    '  }',
    '};',
    `${int ? 'kiln_gemm_i32' : 'kiln_gemm'}(NB, M, N, K, la, ${r.dim(a.strides[rank - 2])}, ${r.dim(a.strides[rank - 1])}, offa, ${raw(pa.dtype, mm.a.param)}, lb, ${r.dim(b.strides[rank - 2])}, ${r.dim(b.strides[rank - 1])}, offb, ${raw(pb.dtype, mm.b.param)}, epi);`,
  ];
}
