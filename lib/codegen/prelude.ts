/**
 * C helpers every generated translation unit starts with: half-precision conversions
 * (round to nearest even, bit-exact with lib/ir/dtype.ts), int32 arithmetic that wraps
 * like JavaScript's (C's signed overflow is undefined), and the float ops whose NaN and
 * signed-zero behaviour must match the reference interpreter (Math.max, C's pow, ToInt32).
 */

/**
 * `kiln_ipow` with the function qualifier of a prelude (C++ or CUDA): PyTorch's integer pow
 * (`powi` in ATen/native/Pow.h). A non-negative power by squaring in 32-bit arithmetic that
 * wraps (uint32_t: C's signed overflow is undefined), so 2147483647 ** 2 is 1; a negative
 * power is 1 for base 1, ±1 for base -1 by the power's parity, and 0 otherwise (base 0
 * included: no division by zero).
 */
export function intPow(qualifier: string): string {
  return String.raw`/* PyTorch's integer pow: by squaring, wrapping modulo 2^32; a negative power is 1 for
   base 1, +-1 for base -1 (by parity), else 0 (base 0 included). */
${qualifier} int32_t kiln_ipow(int32_t a, int32_t b) {
  if (b < 0) return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;
  uint32_t r = 1u, x = (uint32_t)a;
  for (uint32_t e = (uint32_t)b; e != 0u; e >>= 1) {
    if (e & 1u) r *= x;
    x *= x;
  }
  return (int32_t)r;
}`;
}

/** The helper functions, as C++ source. */
export const C_HELPERS = String.raw`#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>

static inline float kiln_bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t kiln_f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* float16 <-> float. NaN encodes as 0x7e00 like lib/ir/dtype.ts. */
static inline float kiln_h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return kiln_bits_f(sign | 0x7f800000u | (m << 13));
  if (e != 0) return kiln_bits_f(sign | ((e + 112u) << 23) | (m << 13));
  float f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
  return sign ? -f : f;
}
static inline uint16_t kiln_f2h(float f) {
  uint32_t x = kiln_f_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7e00u;
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
  if (ax < 0x38800000u) { /* below 2^-14: a float16 subnormal */
    if (ax < 0x33000000u) return (uint16_t)sign;
    uint32_t shift = 126u - (ax >> 23), mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t r = ax - 0x38000000u, q = r >> 13, rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
  return (uint16_t)(sign | q);
}
static inline float kiln_rh(float f) { return kiln_h2f(kiln_f2h(f)); }

/* bfloat16 <-> float. NaN encodes as 0x7fc0. */
static inline float kiln_b2f(uint16_t b) { return kiln_bits_f((uint32_t)b << 16); }
static inline uint16_t kiln_f2b(float f) {
  uint32_t x = kiln_f_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
static inline float kiln_rb(float f) { return kiln_b2f(kiln_f2b(f)); }
/* int32 -> bfloat16 in one rounding (via float would round twice above 2^24). */
static inline float kiln_i2b(int32_t i) {
  uint32_t a = i < 0 ? 0u - (uint32_t)i : (uint32_t)i;
  if (a < (1u << 24)) return kiln_rb((float)i);
  int drop = 24 - __builtin_clz(a); /* keep 8 significant bits */
  uint32_t q = a >> drop, rem = a & ((1u << drop) - 1u), half = 1u << (drop - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  float r = ldexpf((float)q, drop);
  return i < 0 ? -r : r;
}

/* JavaScript ToInt32: truncate, wrap modulo 2^32, NaN and infinities give 0. */
static inline int32_t kiln_f2i(double x) {
  if (!isfinite(x)) return 0;
  /* + 0.0 turns a -0 from trunc into +0: a value no int has, but -fno-trapping-math lets
     GCC fold (float)(int32_t)t into t itself, and then -0.5 cast to int32 and back was -0. */
  double t = trunc(x) + 0.0;
  if (t >= -2147483648.0 && t < 2147483648.0) return (int32_t)t;
  double m = fmod(t, 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return (int32_t)(uint32_t)m;
}
static inline int32_t kiln_iadd(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static inline int32_t kiln_isub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }
static inline int32_t kiln_imul(int32_t a, int32_t b) { return (int32_t)((uint32_t)a * (uint32_t)b); }
static inline int32_t kiln_ineg(int32_t a) { return (int32_t)(0u - (uint32_t)a); }
static inline int32_t kiln_iabs(int32_t a) { return a < 0 ? kiln_ineg(a) : a; }
${intPow('static inline')}

/* Math.max / Math.min: NaN wins, +0 is above -0. */
static inline float kiln_maxf(float a, float b) {
  return (a != a || b != b) ? a + b : (a > b ? a : (a < b ? b : (signbit(a) ? b : a)));
}
static inline float kiln_minf(float a, float b) {
  return (a != a || b != b) ? a + b : (a < b ? a : (a > b ? b : (signbit(a) ? a : b)));
}
/* C's pow, as PyTorch and numpy compute it: 1 ** y and x ** +-0 are 1 for every x and y,
   NaN included, and (-1) ** +-inf is 1 (JavaScript's Math.pow gives NaN for those). An
   exponent of 0.5 that the compiler can see (a constant after simplification) it would turn
   into sqrt under -fno-math-errno, wrong at -inf and -0: that case is spelled out. */
static inline float kiln_powf(float a, float b) {
  if (b == 0.5f) return a == -INFINITY ? INFINITY : sqrtf(a) + 0.0f;
  return powf(a, b);
}
/*
 * exp, erf, erfc and tanh in branch-free float code the compiler vectorizes (libm's are
 * scalar without -ffast-math: glibc's erfcf costs ~16 ns an element, kiln_erfcf ~1 in a SIMD
 * loop). Measured against double-precision libm over their whole range: exp <= 0.93 ulp,
 * erf <= 2.3 ulp, erfc <= 3.8 ulp (every float; 7.4 without FMA), tanh <= 1.3 ulp; NaN,
 * infinities and subnormal results as IEEE (coefficients: kiln's own least-squares and
 * minimax fits). ulp: 2^(floor(log2 |exact|) - 23), 2^-149 below the normal range.
 */
/* Polynomial steps as fused multiply-adds where the CPU has them (one rounding, half the ops):
   x86 with FMA3, and aarch64, where fused multiply-add is part of the base ISA. */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define KILN_HAS_FMA 1
#define KILN_FMA(a, b, c) fmaf(a, b, c)
#else
#define KILN_FMA(a, b, c) ((a) * (b) + (c))
#endif
/* e^(x + lo), x <= 89 and |lo| small: x + lo = n*ln2 + r, |r| <= ln2/2 (lo joins r after the
   exact Cody-Waite step), e^r by degree-7 Taylor, 2^n applied in two halves (subnormal
   results round once). Below -104 the result is 0, computed from a harmless argument: lanes
   whose product would underflow cost a microcode assist each (masked softmax lanes are
   -inf: that was a third of a causal softmax's time). */
static inline float kiln_exp_parts(float xc, float lo) {
  const int under = xc + lo < -104.0f;
  xc = under ? 0.0f : xc;
  lo = under ? 0.0f : lo;
  const float n = rintf((xc + lo) * 1.44269504088896341f);
  const float r = ((xc - n * 0.693145751953125f) + lo) - n * 1.42860682030941723e-6f;
  /* the high terms as two independent halves (a shorter dependency chain inside tanh and
     softmax loops), the last four by Horner, whose roundings dominate */
  float p = KILN_FMA(KILN_FMA(r, 1.98412698e-4f, 1.38888889e-3f), r * r, KILN_FMA(r, 8.33333333e-3f, 4.16666667e-2f));
  p = KILN_FMA(p, r, 1.66666667e-1f);
  p = KILN_FMA(p, r, 0.5f);
  p = KILN_FMA(p, r, 1.0f);
  p = KILN_FMA(p, r, 1.0f);
  const int32_t ni = (int32_t)n, n1 = ni >> 1, n2 = ni - n1;
  const float y = p * kiln_bits_f((uint32_t)(n1 + 127) << 23) * kiln_bits_f((uint32_t)(n2 + 127) << 23);
  return under ? 0.0f : y;
}
/* e^x */
static inline float kiln_expf(float x) {
  const float xc = x != x ? 0.0f : (x > 89.0f ? 89.0f : x);
  const float y = kiln_exp_parts(xc, 0.0f);
  return x != x ? x : y;
}
/* erf: x*P(x^2) below 1, 1 - e^(-x^2)*Q(1/x) from 1 to 4, +-1 beyond. */
static inline float kiln_erff(float x) {
  const float a = fabsf(x), t = x * x;
  float p = 0.0001807348889997229f;
  p = p * t + -0.0011119937989860773f;
  p = p * t + 0.005544346757233143f;
  p = p * t + -0.027042539790272713f;
  p = p * t + 0.1128813847899437f;
  p = p * t + -0.3761303126811981f;
  p = p * t + 1.128379225730896f;
  const float u = 1.0f / (a < 1.0f ? 1.0f : a);
  float q = 0.03071404993534088f;
  q = q * u + -0.17971311509609222f;
  q = q * u + 0.4382406771183014f;
  q = q * u + -0.5369489192962646f;
  q = q * u + 0.23833385109901428f;
  q = q * u + 0.23039528727531433f;
  q = q * u + -0.3758631646633148f;
  q = q * u + 0.02053586207330227f;
  q = q * u + 0.5617679357528687f;
  q = q * u + 0.00012107837392250076f;
  const float big = a >= 4.0f ? 1.0f : 1.0f - kiln_expf(-(t < 16.0f ? t : 16.0f)) * q; /* no subnormal work past 4 */
  const float y = a < 1.0f ? x * p : (x < 0 ? -big : big);
  return x != x ? x : y;
}
/*
 * erfc(z), z = |x| >= 0: e^(-z^2) * t*S(t) * 2^-64, then scaled by 2^(n+64), with t = 1/(1 + 0.37z)
 * and S a degree-9 polynomial in t (kiln's own minimax fit of erfc(z)*e^(z^2)/t on [0, 10.1],
 * relative error 1.2e-8; erfc(10.1) is 0 in float). -z^2 = -zz - zl exactly (zl by FMA, or
 * with h = z cut to 12 bits so that h^2 is exact: the rounding of z^2 alone would cost z^2
 * ulps in the tail); e^(-z^2) = 2^n * e^r with its own degree-6 minimax polynomial on
 * |r| <= ln2/2. The 2^-64 folded into S keeps 2^(n+64) a normal float down to erfc(10.1), so
 * a subnormal result rounds once, in the last product. Near z = 0 the result moves 3x faster
 * than t does, and t (two roundings) lands within 2^-24 of 1/(1 + 0.37z): with FMA, that
 * error, t*(1+c) = 1/(1 + 0.37z) to first order, is computed exactly and applied through e^'s
 * argument (d ln(t S)/d ln t, linear in t). No exp_parts underflow guard: the clamp keeps
 * n >= -147. erfc(-z) = 2 - erfc(z); NaN propagates.
 */
static inline float kiln_erfcf(float x) {
  const float a = fabsf(x), z = a > 10.1f ? 10.1f : a; /* NaN stays NaN */
#if defined(KILN_HAS_FMA)
  const float zz = z * z, zl = fmaf(z, z, -zz);
#else
  const float h = kiln_bits_f(kiln_f_bits(z) & 0xfffff000u), zz = h * h, zl = (z - h) * (z + h);
#endif
  /* n = rint(-zz/ln2) in the low bits of s (1.5*2^23 + n); r = -zz - zl - n*ln2 (Cody-Waite) */
  const float s = KILN_FMA(zz, -1.44269504088896341f, 12582912.0f), n = s - 12582912.0f;
  float r = KILN_FMA(n, -0.693145751953125f, -zz) - KILN_FMA(n, 1.42860682030941723e-6f, zl);
  const float d = KILN_FMA(0.37f, z, 1.0f), t = 1.0f / d;
#if defined(KILN_HAS_FMA)
  const float c = fmaf(-t, fmaf(0.37f, z, 1.0f - d), fmaf(-t, d, 1.0f)); /* 1 - t*(1 + 0.37z), exact terms */
  r = fmaf(fmaf(2.3631415f, t, 0.6531018f), c, r);
#endif
  float e = KILN_FMA(0.0013843580f, r, 0.0083742114f);
  e = KILN_FMA(e, r, 0.041668005f);
  e = KILN_FMA(e, r, 0.16666430f);
  e = KILN_FMA(e, r, 0.49999994f);
  e = KILN_FMA(e, r, 1.0f);
  e = KILN_FMA(e, r, 1.0f);
  const float k = 0x1p-64f; /* folded into the constants at compile time */
  float q = KILN_FMA(0.008227053f * k, t, 0.018264323f * k);
  q = KILN_FMA(q, t, -0.20294291f * k);
  q = KILN_FMA(q, t, 0.35601395f * k);
  q = KILN_FMA(q, t, -0.17880735f * k);
  q = KILN_FMA(q, t, 0.25475338f * k);
  q = KILN_FMA(q, t, 0.12556210f * k);
  q = KILN_FMA(q, t, 0.20223114f * k);
  q = KILN_FMA(q, t, 0.20790909f * k);
  q = KILN_FMA(q, t, 0.20878923f * k);
  const float y = e * (q * t) * kiln_bits_f((kiln_f_bits(s) + 191u) << 23); /* 2^(n+64) */
  return x < 0 ? 2.0f - y : y;
}
/* tanh: x*T(x^2) below 0.625, 1 - 2/(e^(2|x|)+1) above (+-1 beyond 9). */
static inline float kiln_tanhf(float x) {
  const float a = fabsf(x), t = x * x;
  float p = 0.0021285596303641796f;
  p = p * t + -0.008159180171787739f;
  p = p * t + 0.021691853180527687f;
  p = p * t + -0.05394470691680908f;
  p = p * t + 0.13333183526992798f;
  p = p * t + -0.333333283662796f;
  p = p * t + 1.0f;
  const float e = kiln_expf(2.0f * (a > 9.0f ? 9.0f : a));
  const float big = 1.0f - 2.0f / (e + 1.0f);
  const float y = a < 0.625f ? x * p : (x < 0 ? -big : big);
  return x != x ? x : y;
}
static inline int64_t kiln_clamp_row(int64_t r, int64_t n) { return r < 0 ? 0 : (r >= n ? n - 1 : r); }
`;
