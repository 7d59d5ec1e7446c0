/**
 * C helpers every generated translation unit starts with: half-precision conversions
 * (round to nearest even, bit-exact with lib/ir/dtype.ts), int32 arithmetic that wraps
 * like JavaScript's (C's signed overflow is undefined), and the float ops whose NaN and
 * signed-zero behaviour must match the reference interpreter (Math.max, Math.pow, ToInt32).
 */

/**
 * `kiln_ipow` with the function qualifier of a prelude (C++ or CUDA): Math.pow, then ToInt32.
 * A non-negative power is a product of doubles, exact while the result is below 2^53 (a GPU's
 * pow may be an ulp off there); others go through pow.
 */
export function intPow(qualifier: string): string {
  return String.raw`/* Math.pow, then ToInt32. A non-negative power is a product of doubles, exact while the
   result is below 2^53 (a GPU's pow may be an ulp off there); others go through pow. */
${qualifier} int32_t kiln_ipow(int32_t a, int32_t b) {
  if (b < 0) return kiln_f2i(pow((double)a, (double)b));
  double r = 1.0, x = (double)a;
  for (int32_t e = b; e > 0; e >>= 1) {
    if (e & 1) r *= x;
    x *= x;
  }
  return kiln_f2i(r);
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
  double t = trunc(x);
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
/* Math.pow: x ** NaN is NaN and (+-1) ** +-inf is NaN, unlike C's pow. */
static inline float kiln_powf(float a, float b) {
  if (b != b || ((a == 1.0f || a == -1.0f) && isinf(b))) return NAN;
  return powf(a, b);
}
/*
 * exp, erf, erfc and tanh in branch-free float code the compiler vectorizes (libm's are
 * scalar without -ffast-math: glibc's erfcf costs ~16 ns an element, kiln_erfcf ~2 in a SIMD
 * loop). Measured against double-precision libm over their whole range: exp <= 0.93 ulp,
 * erf <= 2.3 ulp, erfc <= 3.9 ulp, tanh <= 1.3 ulp; NaN, infinities and subnormal results
 * as IEEE (coefficients: kiln's own least-squares fits).
 */
/* Polynomial steps as fused multiply-adds where the CPU has them (one rounding, half the ops). */
#if defined(__FMA__)
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
  /* the high terms as two independent halves (a shorter dependency chain inside erfc, tanh
     and softmax loops), the last four by Horner, whose roundings dominate */
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
 * erfc(z), z >= 0: t*e^(-z^2 + P(t)) with t = 1/(1 + z/2) and P a degree-10 polynomial in
 * t - 0.577 (kiln's own fit of ln(erfc(z)/t) + z^2 on [0, 11]; erfc(11) is 0 in float), one
 * form for the whole range, the tail included. -z^2 = -h^2 - (z-h)(z+h) with h = z cut to 12
 * bits, so that h^2 is exact (the rounding of z^2 alone would cost z^2 ulps in the tail); the
 * rest joins P(t) as the low part of e^'s argument. erfc(-z) = 2 - erfc(z). About 4 ulp.
 */
static inline float kiln_erfcf(float x) {
  const float z = fabsf(x) > 11.0f ? 11.0f : fabsf(x); /* NaN: any value, replaced below */
  const float t = 1.0f / KILN_FMA(0.5f, z, 1.0f), w = t - 0.5769230723381042f, w2 = w * w;
  /* the terms of w^10..w^4 by Estrin (a shorter dependency chain), w^3..w^0 by Horner */
  const float hi = KILN_FMA(KILN_FMA(-0.12938061356544495f, w2, KILN_FMA(0.15279582142829895f, w, 0.12789161503314972f)), w2 * w2,
                            KILN_FMA(KILN_FMA(-0.25171390175819397f, w, -0.04065033793449402f), w2, KILN_FMA(0.29697906970977783f, w, -0.04423556476831436f)));
  float p = KILN_FMA(hi, w, -0.4063851535320282f);
  p = KILN_FMA(p, w, 0.09851798415184021f);
  p = KILN_FMA(p, w, 1.3675241470336914f);
  p = KILN_FMA(p, w, -0.5673654675483704f);
  const float h = kiln_bits_f(kiln_f_bits(z) & 0xfffff000u);
  const float y = t * kiln_exp_parts(-(h * h), p - (z - h) * (z + h));
  return x != x ? x : (x < 0 ? 2.0f - y : y);
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
