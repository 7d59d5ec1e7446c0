import {
  bf16Bits,
  bf16FromBits,
  decodeStorage,
  encodeStorage,
  f16Bits,
  f16FromBits,
  promoteTypes,
  resultType,
  roundTo,
  type DType,
} from '../lib/ir/dtype';

describe('float16 rounding', () => {
  it('encodes well-known values', () => {
    expect(f16Bits(1)).toBe(0x3c00);
    expect(f16Bits(-2)).toBe(0xc000);
    expect(f16Bits(65504)).toBe(0x7bff);
    expect(f16Bits(0.1)).toBe(0x2e66);
    expect(f16Bits(-0)).toBe(0x8000);
    expect(f16Bits(0)).toBe(0);
    expect(f16Bits(Infinity)).toBe(0x7c00);
    expect(f16Bits(-Infinity)).toBe(0xfc00);
    expect(f16Bits(NaN)).toBe(0x7e00);
    expect(f16FromBits(0x7e00)).toBeNaN();
  });

  it('overflows to infinity at the rounding threshold', () => {
    expect(roundTo('float16', 65519.99)).toBe(65504);
    expect(roundTo('float16', 65520)).toBe(Infinity); // tie goes to even: 2^16 → inf
    expect(roundTo('float16', -65520)).toBe(-Infinity);
    expect(roundTo('float16', 1e10)).toBe(Infinity);
  });

  it('handles subnormals with ties to even', () => {
    const tiny = 2 ** -24;
    expect(f16Bits(tiny)).toBe(0x0001);
    expect(roundTo('float16', 2 ** -25)).toBe(0); // tie → even (0)
    expect(roundTo('float16', 3 * 2 ** -25)).toBe(2 * tiny); // tie between 1 and 2 → 2
    expect(roundTo('float16', 2 ** -25 * 1.0001)).toBe(tiny);
    expect(f16Bits(1023 * tiny)).toBe(0x03ff);
    expect(f16Bits(2 ** -14)).toBe(0x0400);
    expect(roundTo('float16', -(2 ** -26))).toBe(-0);
    expect(Object.is(roundTo('float16', -(2 ** -26)), -0)).toBe(true);
  });

  it('rounds ties to even in the normal range', () => {
    expect(roundTo('float16', 1 + 2 ** -11)).toBe(1);
    expect(roundTo('float16', 1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9);
    expect(roundTo('float16', 1 + 2 ** -11 + 2 ** -40)).toBe(1 + 2 ** -10);
  });

  it('rounds directly from float64 (no double rounding through float32)', () => {
    const x = 1 + 2 ** -11 + 2 ** -40; // float32 would first drop 2^-40 and produce a tie
    expect(Math.fround(x)).toBe(1 + 2 ** -11);
    expect(f16Bits(x)).toBe(0x3c01);
    expect(bf16Bits(1 + 2 ** -8 + 2 ** -30)).toBe(0x3f81);
  });

  it('round-trips every bit pattern and rounds every midpoint to even', () => {
    for (let b = 0; b < 0x7c00; b++) {
      for (const s of [0, 0x8000]) {
        const v = f16FromBits(b | s);
        expect(f16Bits(v)).toBe(b | s);
      }
      if (b + 1 < 0x7c00) {
        const mid = (f16FromBits(b) + f16FromBits(b + 1)) / 2;
        const want = b % 2 === 0 ? b : b + 1;
        if (f16Bits(mid) !== want) throw new Error(`midpoint after ${b.toString(16)}`);
      }
    }
  });
});

describe('bfloat16 rounding', () => {
  it('encodes well-known values, subnormals and overflow', () => {
    expect(bf16Bits(1)).toBe(0x3f80);
    expect(bf16Bits(-1.5)).toBe(0xbfc0);
    expect(bf16Bits(NaN)).toBe(0x7fc0);
    expect(bf16Bits(2 ** -133)).toBe(0x0001);
    expect(roundTo('bfloat16', 2 ** -134)).toBe(0);
    expect(roundTo('bfloat16', 3.39e38)).toBe(bf16FromBits(0x7f7f));
    expect(roundTo('bfloat16', 3.4e38)).toBe(Infinity);
    expect(roundTo('bfloat16', 1 + 2 ** -8)).toBe(1);
    expect(roundTo('bfloat16', 1 + 3 * 2 ** -8)).toBe(1 + 2 ** -6);
  });

  it('matches the integer rounding trick on float32 inputs', () => {
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    let seed = 12345;
    for (let i = 0; i < 20000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      u[0] = seed;
      if (Number.isNaN(f[0])) continue;
      const bits = u[0];
      const ref = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
      expect(bf16Bits(f[0])).toBe(ref);
    }
  });

  it('round-trips every finite bit pattern', () => {
    for (let b = 0; b < 0x7f80; b++) expect(bf16Bits(bf16FromBits(b))).toBe(b);
  });
});

describe('int32 and bool conversion', () => {
  it('truncates toward zero and wraps', () => {
    expect(roundTo('int32', 2.9)).toBe(2);
    expect(roundTo('int32', -2.9)).toBe(-2);
    expect(roundTo('int32', 2 ** 31)).toBe(-(2 ** 31));
    expect(roundTo('int32', 2 ** 32 + 5)).toBe(5);
    expect(roundTo('int32', NaN)).toBe(0);
  });
  it('maps nonzero (and NaN) to true', () => {
    expect(roundTo('bool', 0)).toBe(0);
    expect(roundTo('bool', -0.5)).toBe(1);
    expect(roundTo('bool', NaN)).toBe(1);
  });
  it('encodes and decodes storage', () => {
    const vals = [0, 1.5, -2.25, 65504, 1e-3];
    for (const d of ['float32', 'float16', 'bfloat16', 'int32', 'bool'] as DType[]) {
      const dec = decodeStorage(d, encodeStorage(d, vals));
      expect([...dec]).toEqual(vals.map((v) => roundTo(d, v)));
    }
  });
});

describe('promotion', () => {
  it('promotes tensor dtypes like torch.promote_types', () => {
    const cases: [DType, DType, DType][] = [
      ['bool', 'bool', 'bool'],
      ['bool', 'int32', 'int32'],
      ['int32', 'float16', 'float16'],
      ['int32', 'bfloat16', 'bfloat16'],
      ['float16', 'float32', 'float32'],
      ['float16', 'bfloat16', 'float32'],
      ['bfloat16', 'float32', 'float32'],
      ['bool', 'float16', 'float16'],
    ];
    for (const [a, b, r] of cases) {
      expect(promoteTypes(a, b)).toBe(r);
      expect(promoteTypes(b, a)).toBe(r);
    }
  });
  it('lets scalars raise the category only', () => {
    expect(resultType(['int32', 2])).toBe('int32');
    expect(resultType(['int32', 2.5])).toBe('float32');
    expect(resultType(['float16', 2.5])).toBe('float16');
    expect(resultType(['bfloat16', 3])).toBe('bfloat16');
    expect(resultType(['bool', 1])).toBe('int32');
    expect(resultType(['bool', true])).toBe('bool');
    expect(resultType(['bool', 0.5])).toBe('float32');
    expect(resultType(['float16', 'int32', 1.5])).toBe('float16');
  });
  it('ranks 0-d tensors between dimensioned tensors and numbers (torch.result_type)', () => {
    const zero = (dtype: DType) => ({ dtype, ndim: 0 });
    const dims = (dtype: DType) => ({ dtype, ndim: 2 });
    // a 0-d tensor lifts the category only, never the width within one
    expect(resultType([dims('float16'), zero('float32')])).toBe('float16');
    expect(resultType([dims('bfloat16'), zero('float32')])).toBe('bfloat16');
    expect(resultType([zero('float32'), dims('float16')])).toBe('float16');
    expect(resultType([dims('int32'), zero('float32')])).toBe('float32');
    expect(resultType([dims('int32'), zero('float16')])).toBe('float16'); // its own dtype, not the default
    expect(resultType([dims('bool'), zero('int32')])).toBe('int32');
    expect(resultType([dims('float32'), zero('int32')])).toBe('float32');
    // among 0-d tensors (and against numbers) the usual rules apply
    expect(resultType([zero('float16'), zero('float32')])).toBe('float32');
    expect(resultType([zero('float16'), zero('bfloat16')])).toBe('float32');
    expect(resultType([zero('int32'), 2.5])).toBe('float32');
    expect(resultType([zero('float16'), 2.5])).toBe('float16');
    expect(resultType([zero('bool'), 1])).toBe('int32');
    // a 0-d float lifts int ahead of a float number; a plain DType is a dimensioned tensor
    expect(resultType([dims('int32'), zero('float16'), 2.5])).toBe('float16');
    expect(resultType(['int32', zero('float16')])).toBe('float16');
    expect(resultType([{ dtype: 'float16', ndim: 1 }, zero('float32')])).toBe('float16');
  });
});
