/**
 * Element types: sizes, promotion (PyTorch's rules restricted to kiln's five dtypes) and
 * exact rounding from float64 into each type. The interpreter computes in float64 and
 * rounds every node's result with `roundTo`, so these functions define kiln's numerics.
 */
import { ArgumentError } from '../util/errors';

// Bound once: under Jest's vm sandbox every global lookup (Math, Infinity) costs about a
// microsecond, which dominated the per-element rounding loops below.
const { fround } = Math;
const INF = Number.POSITIVE_INFINITY;
const NAN = Number.NaN;

/** The element types kiln supports. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'bool';

/** All dtypes, in a fixed order (used for validation and tests). */
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int32', 'bool'];

/** Typed array that stores a tensor of the dtype: f16/bf16 are raw bits in a Uint16Array. */
export type Storage = Float32Array | Uint16Array | Int32Array | Uint8Array;

/** Short names used by the printer and in kernel names. */
export const DTYPE_SHORT: { readonly [D in DType]: string } = {
  float32: 'f32',
  float16: 'f16',
  bfloat16: 'bf16',
  int32: 'i32',
  bool: 'bool',
};

/** Bytes per element. */
export const ITEMSIZE: { readonly [D in DType]: number } = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int32: 4,
  bool: 1,
};

/** True for a string naming one of kiln's dtypes. */
export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

/** Throws ArgumentError unless `x` names a dtype. */
export function checkDType(x: unknown, what = 'dtype'): DType {
  if (!isDType(x)) {
    throw new ArgumentError('KILN_BAD_DTYPE', `${what} must be one of ${DTYPES.join(', ')}; got ${JSON.stringify(x)}`);
  }
  return x;
}

/** Floating-point dtypes. */
export function isFloat(d: DType): boolean {
  return d === 'float32' || d === 'float16' || d === 'bfloat16';
}

/** Promotion category: bool < int < float. */
type Category = 0 | 1 | 2;
function category(d: DType): Category {
  return d === 'bool' ? 0 : d === 'int32' ? 1 : 2;
}

/**
 * The dtype two tensors promote to (torch.promote_types): bool < int32 < floats; mixing
 * float16 with bfloat16 gives float32, and float32 wins over both half types.
 */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  const ca = category(a);
  const cb = category(b);
  if (ca !== cb) return ca > cb ? a : b;
  // Two different floats: f32 wins; f16 with bf16 has no common half type.
  return 'float32';
}

/** A JS number used as an operand: integral values count as ints, others as floats. */
export function scalarCategory(x: number | boolean): Category {
  if (typeof x === 'boolean') return 0;
  return Number.isInteger(x) ? 1 : 2;
}

/** A tensor operand as promotion sees it: its dtype and its number of dims. */
export interface TensorType {
  readonly dtype: DType;
  readonly ndim: number;
}

/** One operand of `resultType`: a dimensioned tensor's dtype, a tensor with its rank, or a JS number. */
export type PromotionOperand = DType | TensorType | number | boolean;

/** The default dtype of a JS number's category (PyTorch's wrapped numbers). */
const SCALAR_DTYPE: readonly DType[] = ['bool', 'int32', 'float32'];

/** `lower` (a lower-priority class of operands) only counts when its category is higher. */
function combine(higher: DType | undefined, lower: DType | undefined): DType | undefined {
  if (higher === undefined) return lower;
  if (lower === undefined) return higher;
  return category(lower) > category(higher) ? lower : higher;
}

/**
 * Result dtype of an op over tensors and scalars (torch.result_type). Operands form three
 * priority classes — dimensioned tensors, zero-dim tensors, JS numbers — and each class
 * promotes among itself (a number contributes the default dtype of its category: int32
 * for integral values, float32 otherwise, bool for booleans). A lower class only matters
 * when its category (bool < int < float) is higher than every higher class's, and then its
 * own dtype wins: `int32 + 2.5 → float32`, `float16 + 2.5 → float16`, `float16[3] ·
 * float32[] → float16`, `int32[3] + float16[] → float16`, `bool + 1 → int32`. A plain
 * DType operand counts as a dimensioned tensor.
 */
export function resultType(operands: readonly PromotionOperand[]): DType {
  let dim: DType | undefined;
  let zero: DType | undefined;
  let wrapped: DType | undefined;
  for (const o of operands) {
    if (typeof o === 'number' || typeof o === 'boolean') {
      const d = SCALAR_DTYPE[scalarCategory(o)];
      wrapped = wrapped === undefined ? d : promoteTypes(wrapped, d);
    } else if (typeof o === 'string' || o.ndim > 0) {
      const d = typeof o === 'string' ? o : o.dtype;
      dim = dim === undefined ? d : promoteTypes(dim, d);
    } else zero = zero === undefined ? o.dtype : promoteTypes(zero, o.dtype);
  }
  const r = combine(dim, combine(zero, wrapped));
  if (r === undefined) throw new ArgumentError('KILN_BAD_ARGUMENT', 'resultType needs at least one operand');
  return r;
}

// ---------------------------------------------------------------------------------------
// Rounding. Binary float formats are described by mantissa bits and the exponent range of
// normal numbers; one routine rounds a float64 into any of them, round-to-nearest-even,
// directly from float64 (going through float32 first would round twice).

interface FloatFormat {
  readonly mant: number; // explicit mantissa bits
  readonly minExp: number; // exponent of the smallest normal number
  readonly maxExp: number; // exponent of the largest finite number
}
const F16: FloatFormat = { mant: 10, minExp: -14, maxExp: 15 };
const BF16: FloatFormat = { mant: 7, minExp: -126, maxExp: 127 };

// Scratch views to read a double's exponent bits and a float32's bits (buffers, not state:
// no value survives a call).
const scratchF64 = new Float64Array(1);
const scratchU32 = new Uint32Array(scratchF64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // high word index
const scratchF32 = new Float32Array(1);
const scratchF32Bits = new Uint32Array(scratchF32.buffer);
// 2^k for k in [-1100, 1100]: exact powers without Math.pow in the hot loops.
const POW2 = Float64Array.from({ length: 2201 }, (_, i) => 2 ** (i - 1100));

/** Unbiased exponent of a positive finite double (subnormal doubles report -1023). */
function exponentOf(a: number): number {
  scratchF64[0] = a;
  return ((scratchU32[HI] >>> 20) & 0x7ff) - 1023;
}

function roundFormat(x: number, f: FloatFormat): number {
  const a = x < 0 ? -x : x;
  if (!(a > 0) || a === INF) return x; // NaN, ±0, ±inf are their own rounding
  let e = exponentOf(a);
  if (e > f.maxExp) return x > 0 ? INF : -INF;
  if (e < f.minExp) e = f.minExp; // subnormal range: fixed quantum
  // Adding c = q·2^52 (q: spacing of representable values near a; a < c) makes the FPU,
  // which rounds to nearest even, drop every bit below q.
  const c = POW2[e - f.mant + 52 + 1100];
  const r = a + c - c;
  if (r >= POW2[f.maxExp + 1 + 1100]) return x > 0 ? INF : -INF;
  return x < 0 ? -r : r;
}

/** Round to float16, nearest-even, with subnormals and overflow to ±inf. */
export function roundF16(x: number): number {
  return roundFormat(x, F16);
}

/** Round to bfloat16, nearest-even, with subnormals and overflow to ±inf. */
export function roundBF16(x: number): number {
  return roundFormat(x, BF16);
}

/** int32 conversion: truncate toward zero, wrap modulo 2^32 (NaN and ±inf give 0). */
export function roundI32(x: number): number {
  return x | 0;
}

/** The value `x` becomes when stored in `dtype`. */
export function roundTo(dtype: DType, x: number): number {
  switch (dtype) {
    case 'float32':
      return fround(x);
    case 'float16':
      return roundF16(x);
    case 'bfloat16':
      return roundBF16(x);
    case 'int32':
      return x | 0;
    case 'bool':
      return x !== 0 ? 1 : 0; // NaN counts as true, as in C and PyTorch
    default:
      return dtype satisfies never;
  }
}

/** Round every element of `a` to `dtype`, in place; returns `a`. */
export function roundArray(dtype: DType, a: Float64Array): Float64Array {
  const n = a.length;
  switch (dtype) {
    case 'float32':
      for (let i = 0; i < n; i++) a[i] = fround(a[i]);
      break;
    case 'float16':
      for (let i = 0; i < n; i++) a[i] = roundFormat(a[i], F16);
      break;
    case 'bfloat16':
      for (let i = 0; i < n; i++) a[i] = roundFormat(a[i], BF16);
      break;
    case 'int32':
      for (let i = 0; i < n; i++) a[i] = a[i] | 0;
      break;
    case 'bool':
      for (let i = 0; i < n; i++) a[i] = a[i] !== 0 ? 1 : 0;
      break;
    default:
      return dtype satisfies never;
  }
  return a;
}

function fromBits(bits: number, f: FloatFormat, expBits: number): number {
  const expMask = (1 << expBits) - 1;
  const sign = (bits >>> (expBits + f.mant)) & 1 ? -1 : 1;
  const ef = (bits >>> f.mant) & expMask;
  const m = bits & ((1 << f.mant) - 1);
  if (ef === expMask) return m ? NAN : sign * INF;
  if (ef === 0) return sign * m * 2 ** (f.minExp - f.mant);
  return sign * (2 ** f.mant + m) * 2 ** (ef - 1 + f.minExp - f.mant);
}

/** float16 bit pattern of `x` (rounded nearest-even). NaN encodes as 0x7e00. */
export function f16Bits(x: number): number {
  const r = roundFormat(x, F16);
  if (r !== r) return 0x7e00;
  // r is exact in float32, whose bits map onto float16's field by field.
  scratchF32[0] = r;
  const b = scratchF32Bits[0];
  const sign = (b >>> 16) & 0x8000;
  const e = (b >>> 23) & 0xff;
  if (e === 0xff) return sign | 0x7c00;
  if (e >= 113) return sign | ((e - 112) << 10) | ((b & 0x7fffff) >>> 13); // normal: e-127+15 ≥ 1
  return sign | ((r < 0 ? -r : r) * 16777216); // subnormal or zero: a multiple of 2^-24
}
/** Value of a float16 bit pattern. */
export function f16FromBits(bits: number): number {
  return fromBits(bits, F16, 5);
}
/** bfloat16 bit pattern of `x` (rounded nearest-even). NaN encodes as 0x7fc0. */
export function bf16Bits(x: number): number {
  const r = roundFormat(x, BF16);
  if (r !== r) return 0x7fc0;
  scratchF32[0] = r; // exact: bfloat16 is float32 with the low 16 bits zero
  return scratchF32Bits[0] >>> 16;
}
/** Value of a bfloat16 bit pattern. */
export function bf16FromBits(bits: number): number {
  return fromBits(bits, BF16, 8);
}

// Decoding tables for the 2-byte floats, built on first use (pure functions of the format).
let f16Table: Float64Array | undefined;
let bf16Table: Float64Array | undefined;
function buildTable(decode: (bits: number) => number): Float64Array {
  const t = new Float64Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = decode(i);
  return t;
}
function table(dtype: 'float16' | 'bfloat16'): Float64Array {
  if (dtype === 'float16') return (f16Table ??= buildTable(f16FromBits));
  return (bf16Table ??= buildTable(bf16FromBits));
}

/** A zero-filled storage array of `n` elements. */
export function allocStorage(dtype: DType, n: number): Storage {
  switch (dtype) {
    case 'float32':
      return new Float32Array(n);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'bool':
      return new Uint8Array(n);
    default:
      return dtype satisfies never;
  }
}

/** Encode float64 values into `dtype` storage, rounding each value as `roundTo` does. */
export function encodeStorage(dtype: DType, values: ArrayLike<number>): Storage {
  const n = values.length;
  const out = allocStorage(dtype, n);
  switch (dtype) {
    case 'float16':
      for (let i = 0; i < n; i++) out[i] = f16Bits(values[i]);
      break;
    case 'bfloat16':
      for (let i = 0; i < n; i++) out[i] = bf16Bits(values[i]);
      break;
    case 'bool':
      for (let i = 0; i < n; i++) out[i] = values[i] !== 0 ? 1 : 0;
      break;
    case 'float32':
    case 'int32':
      out.set(values); // converts as an indexed store does: rounds (f32) or wraps (i32); a plain copy from a Float32Array
      break;
    default:
      return dtype satisfies never;
  }
  return out;
}

/** Decode storage into float64 values. */
export function decodeStorage(dtype: DType, s: Storage): Float64Array {
  if (dtype === 'float16' || dtype === 'bfloat16') {
    const t = table(dtype);
    const out = new Float64Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = t[s[i]];
    return out;
  }
  return Float64Array.from(s);
}

/** True if `s` is the storage array type of `dtype`. */
export function isStorageOf(dtype: DType, s: unknown): s is Storage {
  switch (dtype) {
    case 'float32':
      return s instanceof Float32Array;
    case 'float16':
    case 'bfloat16':
      return s instanceof Uint16Array;
    case 'int32':
      return s instanceof Int32Array;
    case 'bool':
      return s instanceof Uint8Array;
    default:
      return dtype satisfies never;
  }
}
