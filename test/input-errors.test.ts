/**
 * Plausible input mistakes at the Tensor API's edge: each must be a typed KilnError with a
 * code and a message that names the op and the bad value, never a plain TypeError or a
 * silently wrong result; and the valid inputs next to them must keep working.
 */
import * as kiln from '../lib';
import { trace } from '../lib/tensor/trace';
import { ArgumentError, ShapeError, TraceError } from '../lib/util/errors';

type T = kiln.Tensor;

/** The error `f` throws (fails the test when it throws none). */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

const x = kiln.tensor([1, 2, 3, 4, 5, 6], [2, 3]);

describe('kiln.tensor data', () => {
  test.each([
    ['a BigInt64Array', () => kiln.tensor(new BigInt64Array(2) as never, [2]), /^tensor: data is a BigInt64Array, but kiln has no int64 dtype; .*Array\.from\(ids, Number\)/],
    ['a BigUint64Array', () => kiln.tensor(new BigUint64Array(2) as never, [2], 'int32'), /data is a BigUint64Array/],
    ['a bigint element', () => kiln.tensor([1, 2n] as never, [2], 'int32'), /data\[1\] is the bigint 2n, but kiln has no int64 dtype/],
  ])('%s is ArgumentError KILN_BAD_ARGUMENT', (_name, f, message) => {
    const e = thrown(f);
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_ARGUMENT', message: expect.stringMatching(message) });
  });

  test.each([
    ['past int32 max', [1, 3e9], 1, '3000000000'],
    ['below int32 min', [-3e9, 0], 0, '-3000000000'],
    ['NaN', [0, 0, NaN], 2, 'NaN'],
    ['Infinity', [Infinity], 0, 'Infinity'],
    ['-Infinity in a Float32Array', new Float32Array([1, -Infinity]), 1, '-Infinity'],
    ['2**31 in a Uint32Array', new Uint32Array([2 ** 31]), 0, '2147483648'],
  ])('int32 from a value %s is ArgumentError KILN_SCALAR_OVERFLOW', (_name, data, index, value) => {
    const e = thrown(() => kiln.tensor(data, [data.length], 'int32'));
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_SCALAR_OVERFLOW', message: expect.stringContaining(`tensor: element ${index} is ${value}, which int32 cannot represent`) });
  });

  test('int32 keeps valid values, and truncates fractions toward zero as PyTorch does', async () => {
    await expect(kiln.tensor([1, -2, 2147483647, -2147483648], [4], 'int32').toArray()).resolves.toEqual(new Int32Array([1, -2, 2147483647, -2147483648]));
    await expect(kiln.tensor([1.5, -1.5, 2147483647.5], [3], 'int32').toArray()).resolves.toEqual(new Int32Array([1, -1, 2147483647]));
    await expect(kiln.tensor(new Int32Array([7, -7]), [2], 'int32').toArray()).resolves.toEqual(new Int32Array([7, -7]));
    await expect(kiln.tensor(new Float32Array([3, 4]), [2], 'int32').toArray()).resolves.toEqual(new Int32Array([3, 4]));
    await expect(kiln.tensor(Array.from(new BigInt64Array([5n, 6n]), Number), [2], 'int32').toArray()).resolves.toEqual(new Int32Array([5, 6]));
  });

  test('float32 still takes values int32 could not hold', async () => {
    const a = await kiln.tensor([3e9, NaN, Infinity], [3]).toArray();
    expect([a[0], Number.isNaN(a[1]), a[2]]).toEqual([3e9, true, Infinity]);
  });
});

describe('reshape and expand shapes', () => {
  test.each([
    ['null', () => x.reshape(null as never), /^reshape: dim 0 of the shape is null; each dim must be an integer/],
    ['a string dim', () => x.reshape(['2'] as never), /^reshape: dim 0 of the shape is the string "2"; each dim must be an integer/],
    ['a fractional dim', () => x.reshape([2.5, 2]), /^reshape: dim 0 of the shape is the number 2\.5;/],
    ['NaN as an argument', () => x.reshape(3, NaN), /^reshape: dim 1 of the shape is the number NaN;/],
    ['a fractional expand dim', () => x.expand([2, 3.5]), /^expand: dim 1 of the shape is the number 3\.5;.*x\.expand\(\[2, -1\]\)/],
    ['module-level reshape of undefined dims', () => kiln.reshape(x, [undefined] as never), /^reshape: dim 0 of the shape is undefined;/],
  ])('%s is ArgumentError KILN_BAD_SHAPE, not a TypeError', (_name, f, message) => {
    const e = thrown(f);
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_SHAPE', message: expect.stringMatching(message) });
  });

  test('valid shapes still work: arrays, dims as arguments, -1', () => {
    expect(x.reshape([3, 2]).shape).toEqual([3, 2]);
    expect(x.reshape(6).shape).toEqual([6]);
    expect(x.reshape(-1, 2).shape).toEqual([3, 2]);
    expect(x.reshape([1, 2, 3]).expand([4, -1, 3]).shape).toEqual([4, 2, 3]);
  });

  test('a symbolic dim from x.shape still passes to reshape and expand inside a trace', () => {
    const g = trace((a: T) => a.reshape([a.shape[0], 2, -1]).expand(a.dims[0], 2, 4), [{ shape: [6, 8] }], { dynamic: { 0: [0] } });
    expect(g.outputs[0].shape.map(String)).toEqual(['s0', '2', '4']);
  });
});

describe('dims that are not integers', () => {
  test.each([
    ["softmax('1')", () => x.softmax('1' as never), /^softmax: dim "1" must be an integer \(a string was passed\); shape \[2,3\] takes a dim in \[-2, 1\]/],
    ["squeeze('0')", () => x.squeeze('0' as never), /^squeeze: dim "0" must be an integer/],
    ["cat([x], '0')", () => kiln.cat([x], '0' as never), /^cat: dim "0" must be an integer/],
    ['sum(0.5)', () => x.sum(0.5), /^sum: dim 0\.5 must be an integer \(a number was passed\)/],
  ])('%s is ArgumentError KILN_BAD_ARGUMENT', (_name, f, message) => {
    const e = thrown(f);
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_ARGUMENT', message: expect.stringMatching(message) });
  });

  test('an integer out of range is still ShapeError KILN_DIM_OUT_OF_RANGE, and negative dims still wrap', () => {
    const e = thrown(() => x.softmax(2));
    expect(e).toBeInstanceOf(ShapeError);
    expect(e).toMatchObject({ code: 'KILN_DIM_OUT_OF_RANGE', message: expect.stringMatching(/^softmax: dim 2 is out of range for shape \[2,3\]/) });
    expect(x.sum(-1).shape).toEqual([2]);
    expect(x.squeeze(-1).shape).toEqual([2, 3]);
    expect(kiln.cat([x, x], -1).shape).toEqual([2, 6]);
  });
});

describe('keepdim', () => {
  test.each([
    ['sum', () => x.sum(0, 'yes' as never)],
    ['mean', () => x.mean(0, 1 as never)],
    ['max', () => x.max(0, 'true' as never)],
    ['min', () => kiln.min(x, 1, null as never)],
  ])('%s with a keepdim that is not a boolean is ArgumentError KILN_BAD_ARGUMENT', (name, f) => {
    const e = thrown(f);
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_ARGUMENT', message: expect.stringMatching(new RegExp(`^${name}: keepdim must be true or false, got `)) });
  });

  test('boolean and default keepdim still work', () => {
    expect(x.sum(0, true).shape).toEqual([1, 3]);
    expect(x.mean(1, false).shape).toEqual([2]);
    expect(x.max().shape).toEqual([]);
  });
});

describe('scalar operands', () => {
  test.each([
    ["where(c, 'a', 1)", () => kiln.where(x.gt(2), 'a' as never, 1), /^where: operand must be a kiln Tensor or a number, got the string "a"/],
    ['add(undefined)', () => x.add(undefined as never), /^add: operand must be a kiln Tensor or a number, got undefined/],
    ['mul([2])', () => x.mul([2] as never), /^mul: operand must be a kiln Tensor or a number, got the array \[2\]/],
    ['kiln.sub(x, {})', () => kiln.sub(x, {} as never), /^sub: operand must be a kiln Tensor or a number, got the object \{\}/],
  ])('%s is ArgumentError KILN_BAD_ARGUMENT saying numbers are allowed', (_name, f, message) => {
    const e = thrown(f);
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_ARGUMENT', message: expect.stringMatching(message) });
  });

  test('a dynamic dim used as a scalar operand is TraceError KILN_SYMBOLIC_DIM', () => {
    const e = thrown(() => trace((a: T) => a.mul(a.shape[0]), [{ shape: [4] }], { dynamic: { 0: [0] } }));
    expect(e).toBeInstanceOf(TraceError);
    expect(e).toMatchObject({ code: 'KILN_SYMBOLIC_DIM', message: expect.stringMatching(/^mul: dimension s0 is dynamic inside kiln\.compile and has no numeric value/) });
  });

  test('a static dim inside a trace, numbers and booleans still work as operands', () => {
    const g = trace((a: T) => a.mul(a.shape[1]).add(true), [{ shape: [4, 3] }], { dynamic: { 0: [0] } });
    expect(g.outputs[0].shape.map(String)).toEqual(['s0', '3']);
    expect(kiln.where(x.gt(2), x, 0).shape).toEqual([2, 3]);
  });
});

describe('scaledDotProductAttention options', () => {
  const q = kiln.tensor(new Float32Array(2 * 4), [2, 4]);
  test.each([
    ['a typo (casual)', { casual: true }, /^scaledDotProductAttention: unknown option 'casual'; valid options are 'causal', 'scale'/],
    ["causal: 'yes'", { causal: 'yes' }, /^scaledDotProductAttention: causal must be true or false; got "yes"/],
    ["scale: 'a'", { scale: 'a' }, /^scaledDotProductAttention: scale must be a finite number; got "a"/],
    ['scale: NaN', { scale: NaN }, /scale must be a finite number; got NaN/],
    ['options as a string', 'causal', /options must be an object with 'causal', 'scale', got "causal"/],
  ])('%s is ArgumentError KILN_BAD_OPTION', (_name, opts, message) => {
    const e = thrown(() => kiln.scaledDotProductAttention(q, q, q, opts as never));
    expect(e).toBeInstanceOf(ArgumentError);
    expect(e).toMatchObject({ code: 'KILN_BAD_OPTION', message: expect.stringMatching(message) });
  });

  test('valid options still work', () => {
    for (const opts of [undefined, {}, { causal: true }, { causal: false, scale: 0.5 }, { scale: undefined }]) {
      expect(kiln.scaledDotProductAttention(q, q, q, opts).shape).toEqual([2, 4]);
    }
  });
});
