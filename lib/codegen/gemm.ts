/**
 * Matmul kernels for the CPU, in the Goto/BLIS design: the K×N operand is packed into
 * NR-wide panels and the M×K operand into MR-tall, k-major panels (contiguous, 64-byte aligned,
 * f16/bf16 converted to float while packing, any strides or broadcast batch dims read
 * through the operand's view), and a 6×16 register-tiled micro-kernel (12 AVX2 FMA
 * accumulators) multiplies one panel pair. A is packed once per call, before the threads
 * split the work (packing it per N block read it from L3 again for every block). B panels
 * are either packed per work unit and K block (an L2-sized block), or come pre-packed:
 * a matmul whose B operand is a program input or constant gets a *pack slot*, and the
 * runtime hands the same packed copy back while the same immutable tensor is passed (see
 * lib/runtime/cpu.ts). Threads take (batch, N block, M chunk) units. The fused elementwise
 * epilogue runs on each finished row of a unit (up to 256 columns) while it is in L2. int32 matmuls take a
 * simple exact loop (wrapping products, like the interpreter's Math.imul).
 */
import { dimProd, isStatic, type Dim } from '../ir';
import type { IExpr, Kernel, View } from '../passes';
import type { CStyleRenderer } from './cstyle';
import type { KernelExprs } from './loops';

/** The blocked GEMM driver and micro-kernel (C++ text), emitted once per unit that needs it. */
export const GEMM_PRELUDE = String.raw`#include <immintrin.h>
#define KILN_MR 6
#define KILN_NR 16
#define KILN_KC 256
static inline int64_t kiln_min(int64_t a, int64_t b) { return a < b ? a : b; }
/* jend(batch, row) for a matmul whose every column is read (see kiln_gemm's jend). */
struct kiln_all_cols {
  int64_t operator()(int64_t, int64_t) const { return INT64_MAX; }
};

/* n contiguous elements of storage kind KIND (0 float32, 1 float16, 2 bfloat16) as floats. */
static inline void kiln_row_f32(int kind, const void* src, float* __restrict__ dst, int64_t n) {
  if (kind == 0) {
    memcpy(dst, src, (size_t)n * 4);
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

/* Grow-only, 64-byte aligned scratch memory of the calling thread (slot 0: A panels, 1: a B block, 2: C tiles). */
struct kiln_scratch_t {
  float* p[3] = {nullptr, nullptr, nullptr};
  int64_t n[3] = {0, 0, 0};
  ~kiln_scratch_t() { for (int i = 0; i < 3; i++) free(p[i]); }
};
static float* kiln_scratch(int slot, int64_t floats) {
  static thread_local kiln_scratch_t s;
  if (floats > s.n[slot]) {
    free(s.p[slot]);
    const int64_t n = (floats + 1023) & ~(int64_t)1023;
    s.p[slot] = (float*)aligned_alloc(64, (size_t)n * 4);
    s.n[slot] = n;
  }
  return s.p[slot];
}

/* C[R x NR] (row stride ldc, 32-byte aligned) = (first ? 0 : C) + A.B; A: a kc x MR panel, k-major (R rows used), B: a kc x NR panel. */
template <int R>
static inline void kiln_micro(int64_t kc, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, int64_t ldc, int first) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0[R], acc1[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b + p * KILN_NR), b1 = _mm256_load_ps(b + p * KILN_NR + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      const __m256 av = _mm256_broadcast_ss(a + p * KILN_MR + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) {
    if (!first) {
      acc0[r] = _mm256_add_ps(acc0[r], _mm256_load_ps(c + r * ldc));
      acc1[r] = _mm256_add_ps(acc1[r], _mm256_load_ps(c + r * ldc + 8));
    }
    _mm256_store_ps(c + r * ldc, acc0[r]);
    _mm256_store_ps(c + r * ldc + 8, acc1[r]);
  }
#else
  float acc[R][KILN_NR] = {{0}};
  for (int64_t p = 0; p < kc; p++)
    for (int r = 0; r < R; r++)
      for (int j = 0; j < KILN_NR; j++) acc[r][j] += a[p * KILN_MR + r] * b[p * KILN_NR + j];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < KILN_NR; j++) c[r * ldc + j] = (first ? 0.0f : c[r * ldc + j]) + acc[r][j];
#endif
}

/* The micro-kernel for the last, partial MR panel of M. */
static void kiln_micro_tail(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int first) {
  switch (rows) {
    case 5: kiln_micro<5>(kc, a, b, c, ldc, first); break;
    case 4: kiln_micro<4>(kc, a, b, c, ldc, first); break;
    case 3: kiln_micro<3>(kc, a, b, c, ldc, first); break;
    case 2: kiln_micro<2>(kc, a, b, c, ldc, first); break;
    default: kiln_micro<1>(kc, a, b, c, ldc, first); break;
  }
}

/* Packed B, per batch: K blocks of KC rows; in the block at row pc (kc rows), panel j (NR
   columns, zero past N) is kc x NR floats at pc * NP + j * NR * kc, NP = NR * ceil(N / NR). */
template <typename LB>
static inline void kiln_pack_b_panel(float* __restrict__ dst, int64_t pc, int64_t kc, int64_t j0, int64_t N, LB& lb, int64_t b_rs, int64_t b_cs, int64_t ob,
                                     const void* b_raw, int b_kind) {
  const int64_t b_size = b_kind == 0 ? 4 : 2, nr = kiln_min(KILN_NR, N - j0);
  if (b_cs == 1 && nr == KILN_NR) { /* rows contiguous: NR elements per k */
    for (int64_t p = 0; p < kc; p++) kiln_row_f32(b_kind, (const char*)b_raw + b_size * (ob + (pc + p) * b_rs + j0), dst + p * KILN_NR, KILN_NR);
  } else if (b_rs == 1) { /* columns contiguous along k (a transposed operand, e.g. K^T in attention) */
    int64_t p0 = 0;
#if defined(__AVX2__)
    if (b_kind == 0 && nr == KILN_NR) { /* 8x8 transposes: 8 k values of 8 columns per step */
      const float* src = (const float*)b_raw + ob + j0 * b_cs + pc;
      for (; p0 + 8 <= kc; p0 += 8)
        for (int64_t jh = 0; jh < KILN_NR; jh += 8) {
          __m256 r0 = _mm256_loadu_ps(src + (jh + 0) * b_cs + p0), r1 = _mm256_loadu_ps(src + (jh + 1) * b_cs + p0);
          __m256 r2 = _mm256_loadu_ps(src + (jh + 2) * b_cs + p0), r3 = _mm256_loadu_ps(src + (jh + 3) * b_cs + p0);
          __m256 r4 = _mm256_loadu_ps(src + (jh + 4) * b_cs + p0), r5 = _mm256_loadu_ps(src + (jh + 5) * b_cs + p0);
          __m256 r6 = _mm256_loadu_ps(src + (jh + 6) * b_cs + p0), r7 = _mm256_loadu_ps(src + (jh + 7) * b_cs + p0);
          const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
          const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5), t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
          const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
          const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE), u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
          float* d = dst + p0 * KILN_NR + jh;
          _mm256_storeu_ps(d + 0 * KILN_NR, _mm256_permute2f128_ps(u0, u4, 0x20));
          _mm256_storeu_ps(d + 1 * KILN_NR, _mm256_permute2f128_ps(u1, u5, 0x20));
          _mm256_storeu_ps(d + 2 * KILN_NR, _mm256_permute2f128_ps(u2, u6, 0x20));
          _mm256_storeu_ps(d + 3 * KILN_NR, _mm256_permute2f128_ps(u3, u7, 0x20));
          _mm256_storeu_ps(d + 4 * KILN_NR, _mm256_permute2f128_ps(u0, u4, 0x31));
          _mm256_storeu_ps(d + 5 * KILN_NR, _mm256_permute2f128_ps(u1, u5, 0x31));
          _mm256_storeu_ps(d + 6 * KILN_NR, _mm256_permute2f128_ps(u2, u6, 0x31));
          _mm256_storeu_ps(d + 7 * KILN_NR, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
#endif
    for (int64_t j = 0; j < KILN_NR && p0 < kc; j++) {
      const int64_t at = ob + (j0 + j) * b_cs + pc;
      for (int64_t p = p0; p < kc; p++) dst[p * KILN_NR + j] = j < nr ? lb(at + p) : 0.0f;
    }
  } else {
    for (int64_t p = 0; p < kc; p++) {
      const int64_t at = ob + (pc + p) * b_rs + j0 * b_cs;
      for (int64_t j = 0; j < KILN_NR; j++) dst[p * KILN_NR + j] = j < nr ? lb(at + j * b_cs) : 0.0f;
    }
  }
}

/* Packed A, per batch: K blocks; in the block at row pc, panel i (MR rows; rows past M are
   not written and never read) is kc x MR floats, k-major (the MR values of one k share a
   cache line or two: the micro-kernel's broadcasts read one stream), at pc * MP + i * MR * kc. */
template <typename LA>
static inline void kiln_pack_a_panel(float* __restrict__ dst, int64_t pc, int64_t kc, int64_t i0, int64_t M, LA& la, int64_t a_rs, int64_t a_cs, int64_t oa,
                                     const void* a_raw, int a_kind) {
  const int64_t a_size = a_kind == 0 ? 4 : 2, mr = kiln_min(KILN_MR, M - i0);
  int64_t p0 = 0;
#if defined(__AVX2__)
  if (a_kind == 0 && a_cs == 1 && mr == KILN_MR) { /* 8x8 transposes of 6 rows and 2 zero rows: 8 k values per step */
    const float* src = (const float*)a_raw + oa + i0 * a_rs + pc;
    const __m256 r6 = _mm256_setzero_ps(), r7 = r6;
    for (; p0 + 8 <= kc; p0 += 8) {
      const __m256 r0 = _mm256_loadu_ps(src + 0 * a_rs + p0), r1 = _mm256_loadu_ps(src + 1 * a_rs + p0), r2 = _mm256_loadu_ps(src + 2 * a_rs + p0);
      const __m256 r3 = _mm256_loadu_ps(src + 3 * a_rs + p0), r4 = _mm256_loadu_ps(src + 4 * a_rs + p0), r5 = _mm256_loadu_ps(src + 5 * a_rs + p0);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5), t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE), u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      const __m256 o[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20), _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                           _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31), _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
      float* d = dst + p0 * KILN_MR;
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) {
        _mm_storeu_ps(d + i * KILN_MR, _mm256_castps256_ps128(o[i]));
        _mm_storel_pi((__m64*)(d + i * KILN_MR + 4), _mm256_extractf128_ps(o[i], 1));
      }
    }
  }
#endif
  if (p0 >= kc) return;
  float row[KILN_KC];
  for (int64_t r = 0; r < mr; r++) {
    const int64_t at = oa + (i0 + r) * a_rs + pc * a_cs;
    if (a_cs == 1) {
      kiln_row_f32(a_kind, (const char*)a_raw + a_size * (at + p0), row, kc - p0);
      for (int64_t p = p0; p < kc; p++) dst[p * KILN_MR + r] = row[p - p0];
    } else {
      for (int64_t p = p0; p < kc; p++) dst[p * KILN_MR + r] = la(at + p * a_cs);
    }
  }
}

/*
 * Batched C = A.B; epi(batch, row, col0, ncols, const float* c) receives each finished tile row.
 * a_raw / b_raw are the operands' storage and a_kind / b_kind its kind (0 float32, 1 float16,
 * 2 bfloat16) for the contiguous fast paths; la / lb read any element otherwise.
 * bpk: B pre-packed (nbb batches: 1 when B is the same for every batch, else nb), or null;
 * bpk_state 1 packs B into bpk first (the first call with this B), 2 uses bpk as it is.
 * jend(batch, row): columns from there on are never read (affine in row; a causal softmax
 * reads its scores below the diagonal only): tiles wholly past it are not computed and the
 * epilogue stops there, so C holds nothing there.
 */
template <typename LA, typename OA, typename LB, typename OB, typename EPI, typename JE = kiln_all_cols>
static void kiln_gemm(int64_t nb, int64_t M, int64_t N, int64_t K, LA la, int64_t a_rs, int64_t a_cs, OA offa, const void* a_raw, int a_kind,
                      LB lb, int64_t b_rs, int64_t b_cs, OB offb, const void* b_raw, int b_kind, EPI epi,
                      float* bpk = nullptr, int64_t bpk_state = 0, int64_t nbb = 1, JE jend = JE()) {
  if (nb <= 0 || M <= 0 || N <= 0) return;
  if (bpk_state != 1 && bpk_state != 2) bpk = nullptr;
  else bpk = (float*)(((uintptr_t)bpk + 63) & ~(uintptr_t)63); /* the slot has 64 spare bytes */
  const int nt = kiln_nt();
  const int64_t npan = (N + KILN_NR - 1) / KILN_NR, mpan = (M + KILN_MR - 1) / KILN_MR;
  const int64_t NP = npan * KILN_NR, MP = mpan * KILN_MR, KK = K > 0 ? K : 1;
  const int64_t nk = (KK + KILN_KC - 1) / KILN_KC;
  /* Units: (batch, N block, M chunk). N blocks of 16 panels shrink (to 4) until each thread
     has about eight (a worker that starts late, or is descheduled, leaves less imbalance); M chunks of at most 24
     panels (144 rows) keep a chunk's A block and C tiles in L2, more when threads are idle. */
  int64_t ucols = 16;
  while (ucols > 4 && nb * ((npan + ucols - 1) / ucols) < 8 * nt) ucols /= 2;
  const int64_t nblk = (npan + ucols - 1) / ucols;
  int64_t mch = (mpan + 23) / 24;
  while (mch < mpan && nb * nblk * mch < 2 * nt) mch++;
  const int64_t mcp = (mpan + mch - 1) / mch;
  mch = (mpan + mcp - 1) / mcp;
  const int64_t units = nb * nblk * mch;
  const double flops = 2.0 * (double)nb * (double)M * (double)N * (double)K;
  float* apk = kiln_scratch(0, nb * MP * KK); /* the caller's scratch, shared by the team */
  const int64_t apanels = nb * nk * mpan, bpanels = bpk != nullptr && bpk_state == 1 ? nbb * nk * npan : 0;
  const int pnt = nt > 1 && units > 1 && flops > 4e6 ? nt : 1; /* threads that pay */
  /* Phase 1: A panels (and B into its pack slot on the slot's first call), then the units;
     kiln_par_n returns when every chunk is done, so each phase sees the previous one's data.
     Panels are claimed in runs of about a quarter of a thread's share: one panel is a few
     hundred bytes in attention's small GEMMs, less work than claiming it. */
  const int64_t arun = (apanels + 4 * pnt - 1) / (4 * pnt), brun = (bpanels + 4 * pnt - 1) / (4 * pnt);
  kiln_par_n((apanels + arun - 1) / arun, pnt, [&](int64_t g) {
    for (int64_t t = g * arun, te = kiln_min(apanels, t + arun); t < te; t++) {
      const int64_t bi = t / (nk * mpan), kb = (t / mpan) % nk, ip = t % mpan;
      const int64_t pc = kb * KILN_KC, kc = kiln_min(KILN_KC, K - pc);
      kiln_pack_a_panel(apk + bi * MP * KK + pc * MP + ip * KILN_MR * kc, pc, kc, ip * KILN_MR, M, la, a_rs, a_cs, offa(bi), a_raw, a_kind);
    }
  });
  if (bpanels > 0) kiln_par_n((bpanels + brun - 1) / brun, pnt, [&](int64_t g) {
    for (int64_t t = g * brun, te = kiln_min(bpanels, t + brun); t < te; t++) {
      const int64_t bi = t / (nk * npan), kb = (t / npan) % nk, jp = t % npan;
      const int64_t pc = kb * KILN_KC, kc = kiln_min(KILN_KC, K - pc);
      kiln_pack_b_panel(bpk + bi * NP * KK + pc * NP + jp * KILN_NR * kc, pc, kc, jp * KILN_NR, N, lb, b_rs, b_cs, offb(bi), b_raw, b_kind);
    }
  });
  const int64_t ldc = ucols * KILN_NR;
  kiln_par_n(units, pnt, [&](int64_t u) {
    float* cc = kiln_scratch(2, mcp * KILN_MR * ldc); /* this thread's */
    float* bp = bpk != nullptr ? nullptr : kiln_scratch(1, KILN_KC * ldc);
    const int64_t bi = u / (nblk * mch), jb = (u / mch) % nblk, mb = u % mch;
    const int64_t jp0 = jb * ucols, jp1 = kiln_min(npan, jp0 + ucols);
    const int64_t ip0 = mb * mcp, ip1 = kiln_min(mpan, ip0 + mcp);
    const float* ab = apk + bi * MP * KK;
    for (int64_t kb = 0; kb < nk; kb++) {
      const int64_t pc = kb * KILN_KC, kc = kiln_min(KILN_KC, K - pc);
      const float* bb;
      if (bpk != nullptr) {
        bb = bpk + (nbb > 1 ? bi : 0) * NP * KK + pc * NP + jp0 * KILN_NR * kc;
      } else {
        for (int64_t jp = jp0; jp < jp1; jp++)
          kiln_pack_b_panel(bp + (jp - jp0) * KILN_NR * kc, pc, kc, jp * KILN_NR, N, lb, b_rs, b_cs, offb(bi), b_raw, b_kind);
        bb = bp;
      }
      for (int64_t jp = jp0; jp < jp1; jp++) {
        const float* bpan = bb + (jp - jp0) * KILN_NR * kc;
        /* Prefetch the next B panel into L1 a slice per M panel, while this one is in use; after
           a K block's last panel, a pre-packed B's first panel of the next K block (from DRAM:
           a model's weights pass through once per call). */
        const char* next = (const char*)(bpan + KILN_NR * kc);
        int64_t lines = jp + 1 < jp1 ? kc : 0; /* a panel is kc lines of 16 floats */
        if (jp + 1 == jp1 && bpk != nullptr && kb + 1 < nk) {
          const int64_t kcn = kiln_min(KILN_KC, K - pc - KILN_KC);
          next = (const char*)(bpk + (nbb > 1 ? bi : 0) * NP * KK + (pc + KILN_KC) * NP + jp0 * KILN_NR * kcn);
          lines = kcn;
        }
        const int64_t step = (lines + (ip1 - ip0) - 1) / (ip1 - ip0);
        for (int64_t ip = ip0; ip < ip1; ip++) {
          for (int64_t l = (ip - ip0) * step, le = kiln_min(lines, l + step); l < le; l++) _mm_prefetch(next + l * 64, _MM_HINT_T0);
          const int64_t mr = kiln_min(KILN_MR, M - ip * KILN_MR);
          const int64_t jn0 = jend(bi, ip * KILN_MR), jn1 = jend(bi, ip * KILN_MR + mr - 1);
          if (jp * KILN_NR >= (jn0 > jn1 ? jn0 : jn1)) continue; /* no row of this tile reads it */
          float* c = cc + (ip - ip0) * KILN_MR * ldc + (jp - jp0) * KILN_NR;
          const float* apan = ab + pc * MP + ip * KILN_MR * kc;
          if (mr == KILN_MR) kiln_micro<KILN_MR>(kc, apan, bpan, c, ldc, kb == 0);
          else kiln_micro_tail((int)mr, kc, apan, bpan, c, ldc, kb == 0);
        }
      }
    }
    /* The epilogue, a whole row of the unit at a time (up to 256 columns, from L2): per 16-
       column tile row, a GELU's constants and loop set-up cost as much as its math. */
    const int64_t j0 = jp0 * KILN_NR, nj = kiln_min(N, jp1 * KILN_NR) - j0;
    for (int64_t i = ip0 * KILN_MR, i1 = kiln_min(M, ip1 * KILN_MR); i < i1; i++) {
      const int64_t nji = kiln_min(nj, jend(bi, i) - j0);
      if (nji > 0) epi(bi, i, j0, nji, (const float*)(cc + (i - ip0 * KILN_MR) * ldc));
    }
  });
}

/* Exact int32 matmul: products and sums wrap modulo 2^32. */
template <typename LA, typename OA, typename LB, typename OB, typename EPI>
static void kiln_gemm_i32(int64_t nb, int64_t M, int64_t N, int64_t K, LA la, int64_t a_rs, int64_t a_cs, OA offa, const void*, int,
                          LB lb, int64_t b_rs, int64_t b_cs, OB offb, const void*, int, EPI epi) {
  kiln_par_n(nb * M, (double)nb * M * N * K > 4e6 ? kiln_nt() : 1, [&](int64_t row) {
    const int64_t bi = row / M, i = row % M;
    for (int64_t j = 0; j < N; j++) {
      uint32_t s = 0;
      for (int64_t p = 0; p < K; p++) s += (uint32_t)la(offa(bi) + i * a_rs + p * a_cs) * (uint32_t)lb(offb(bi) + p * b_rs + j * b_cs);
      const int32_t c = (int32_t)s;
      epi(bi, i, j, 1, &c);
    }
  });
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

/**
 * Where a matmul's packed B operand can be kept across calls: the B operand is a float
 * buffer the program does not write (an input or a constant, `stable`) and its sizes
 * (batch dims, K, N) are static; M may be dynamic. `batches` is 1 when B is the same for
 * every batch (all batch strides 0).
 */
export interface PackSlotInfo {
  readonly batches: number;
  /** Bytes of the packed copy (float32 panels, zero-padded to 16 columns), plus 64 for alignment. */
  readonly bytes: number;
}

/** The pack slot of matmul kernel `k`, or undefined (B is computed, int32, or its sizes are symbolic). */
export function packSlotOf(k: Kernel, stable: (buf: number) => boolean): PackSlotInfo | undefined {
  const mm = k.matmul;
  if (k.kind !== 'matmul' || !mm) return undefined;
  const pb = k.params[mm.b.param];
  if (pb.dtype === 'int32' || pb.dtype === 'bool' || !stable(pb.buf)) return undefined;
  const rank = k.domain.length;
  // B's size: batch dims, K and N (M, e.g. a dynamic sequence length, does not matter).
  const dims = [...k.domain.slice(0, rank - 2), k.domain[rank - 1], mm.k];
  if (!dims.every(isStatic)) return undefined;
  const [n, kk] = [k.domain[rank - 1] as number, mm.k as number];
  const view = mm.b.view[0];
  const batches = view.strides.slice(0, rank - 2).every((s) => s === 0) ? 1 : (dimProd(k.domain.slice(0, rank - 2)) as number);
  const bytes = batches * kk * Math.ceil(n / 16) * 16 * 4;
  return bytes > 0 ? { batches, bytes: bytes + 64 } : undefined;
}

/** Columns of a matmul's output that are read: below `end`, an expression of the row index named `row`. */
export interface ColumnDemand {
  readonly row: string;
  readonly end: IExpr;
}

/**
 * The body of a matmul kernel: operand views, the epilogue lambda, the driver call. With a
 * pack slot the kernel has two more parameters, `float* pk` (the packed copy of B) and
 * `int64_t pk_state` (0: no packed copy, 1: pack into pk, 2: pk holds B packed).
 */
export function matmulBody(x: KernelExprs, simd: string, slot?: PackSlotInfo, demand?: ColumnDemand): string[] {
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
  const jend = int ? undefined : demand; // the exact int32 loop computes every column
  const tail = slot || jend ? `, ${slot ? 'pk, pk_state' : 'nullptr, 0'}, ${slot ? slot.batches : 1}${jend ? ', jend' : ''}` : '';
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
    ...(jend ? [`auto jend = [&](int64_t b, int64_t i) -> int64_t { (void)b; const int64_t ${jend.row} = i; return ${r.index(jend.end)}; };`] : []),
    `${int ? 'kiln_gemm_i32' : 'kiln_gemm'}(NB, M, N, K, la, ${r.dim(a.strides[rank - 2])}, ${r.dim(a.strides[rank - 1])}, offa, ${raw(pa.dtype, mm.a.param)}, lb, ${r.dim(b.strides[rank - 2])}, ${r.dim(b.strides[rank - 1])}, offb, ${raw(pb.dtype, mm.b.param)}, epi${tail});`,
  ];
}
