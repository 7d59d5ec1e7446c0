/**
 * The safetensors reader and writer: round trips of every dtype kiln has (with metadata,
 * empty and 0-d tensors), the reference writer's exact bytes, and malformed files, each a
 * FormatError that names the file and the problem. Also: the example weights in the repo
 * are exactly what scripts/make-weights.cjs makes.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import * as kiln from '../lib';
import { decodeSafetensors, encodeSafetensors, MAX_HEADER_BYTES, type SafetensorsEntry } from '../lib/io/safetensors';
import { encodeStorage, type DType } from '../lib/ir/dtype';
import { FormatError } from '../lib/util/errors';

const entry = (dtype: DType, shape: number[], values: number[]): SafetensorsEntry => ({ dtype, shape, data: encodeStorage(dtype, values) });

/** A file from a header object (or text) and raw data bytes, as a careless writer would. */
function file(header: unknown, data: number[] | Uint8Array = [], opts: { length?: bigint } = {}): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const h = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, opts.length ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** The FormatError decoding `bytes` throws. */
function formatError(bytes: Uint8Array): FormatError {
  try {
    decodeSafetensors(bytes, 'bad.safetensors');
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    expect((e as FormatError).message).toContain('bad.safetensors');
    return e as FormatError;
  }
  throw new Error('decodeSafetensors accepted a malformed file');
}

describe('round trips', () => {
  const all = new Map<string, SafetensorsEntry>([
    ['f32', entry('float32', [2, 3], [0, -1.5, 3.25, 1e-30, -0, Infinity])],
    ['f16', entry('float16', [3], [0.1, -65504, 6e-8])],
    ['bf16', entry('bfloat16', [2, 2], [1.0078125, -3e38, 1e-40, NaN])],
    ['i32', entry('int32', [4], [0, -1, 2147483647, -2147483648])],
    ['mask', entry('bool', [5], [1, 0, 0, 1, 1])],
    ['scalar', entry('float32', [], [42])],
    ['empty', entry('int32', [0, 7], [])],
  ]);

  test('every dtype, 0-d and empty tensors, with metadata: same dtypes, shapes and bits', () => {
    const bytes = encodeSafetensors(all, { format: 'pt', 'note "quoted"': 'ünïcode ✓' });
    const back = decodeSafetensors(bytes);
    expect(back.metadata).toEqual({ format: 'pt', 'note "quoted"': 'ünïcode ✓' });
    expect(new Set(back.tensors.keys())).toEqual(new Set(all.keys()));
    for (const [name, want] of all) {
      const got = back.tensors.get(name)!;
      expect(got.dtype).toBe(want.dtype);
      expect(got.shape).toEqual(want.shape);
      expect(got.data.constructor).toBe(want.data.constructor);
      expect(Array.from(got.data)).toEqual(Array.from(want.data)); // bit patterns for f16/bf16
    }
  });

  test('layout: 4-byte dtypes first then by name, header padded with spaces to a multiple of 8', () => {
    const bytes = encodeSafetensors(all);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(header.trimEnd().endsWith('}')).toBe(true);
    expect(/^ *$/.test(header.slice(header.trimEnd().length))).toBe(true);
    expect([...decodeSafetensors(bytes).tensors.keys()]).toEqual(['f32', 'scalar', 'empty', 'i32', 'bf16', 'f16', 'mask']);
  });

  test("the reference writer's bytes for one F32 tensor, and for an empty file with metadata", () => {
    // From the safetensors crate's own serialization tests.
    const one = encodeSafetensors(new Map([['attn.0', entry('float32', [1, 2, 3], [0, 1, 2, 3, 4, 5])]]));
    const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(Array.from(one.subarray(0, 8))).toEqual([64, 0, 0, 0, 0, 0, 0, 0]);
    expect(new TextDecoder().decode(one.subarray(8, 72))).toBe(header);
    expect(Array.from(one.subarray(72, 80))).toEqual([0, 0, 0, 0, 0, 0, 128, 63]);
    expect(one.length).toBe(72 + 24);
    expect(Array.from(encodeSafetensors(new Map()))).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    const meta = encodeSafetensors(new Map(), { framework: 'pt' });
    expect(meta.length).toBe(48);
    expect(new TextDecoder().decode(meta.subarray(8))).toBe('{"__metadata__":{"framework":"pt"}}     ');
  });

  test('names JS objects treat specially survive: integer-like, __proto__, constructor', () => {
    const odd = new Map([
      ['10', entry('int32', [1], [10])],
      ['2', entry('int32', [1], [2])],
      ['__proto__', entry('int32', [1], [3])],
      ['constructor', entry('int32', [1], [4])],
    ]);
    const back = decodeSafetensors(encodeSafetensors(odd)).tensors;
    for (const [k, v] of odd) expect(Array.from(back.get(k)!.data)).toEqual(Array.from(v.data));
  });

  test('decodes from a Buffer that is a slice of a larger pool, at any alignment', () => {
    const bytes = encodeSafetensors(all);
    for (const shift of [0, 1, 3]) {
      const big = Buffer.alloc(bytes.length + 16, 0xee);
      big.set(bytes, shift);
      const got = decodeSafetensors(big.subarray(shift, shift + bytes.length)).tensors.get('f32')!;
      expect(Array.from(got.data)).toEqual(Array.from(all.get('f32')!.data));
    }
  });

  test('public API: saveSafetensors / loadSafetensors with kiln Tensors (f16 and bf16 exact)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-st-'));
    try {
      const path = join(dir, 'w.safetensors');
      const t = {
        w: kiln.tensor([0.5, -2, 3.140625], [3], 'bfloat16'),
        h: kiln.tensor([0.1, 0.2, 0.3, 0.4], [2, 2], 'float16'),
        ids: kiln.tensor([1, 2, 3], [3], 'int32'),
        m: kiln.tensor([true, false], [2], 'bool'),
        x: kiln.tensor([1.5, 2.5], [1, 2]),
      };
      await kiln.saveSafetensors(path, t, { source: 'test' });
      const { tensors, metadata } = await kiln.loadSafetensors(path);
      expect(metadata).toEqual({ source: 'test' });
      expect(Object.keys(tensors).sort()).toEqual(['h', 'ids', 'm', 'w', 'x']);
      for (const [k, v] of Object.entries(t)) {
        expect(tensors[k].dtype).toBe(v.dtype);
        expect(tensors[k].shape).toEqual(v.shape);
        expect(Array.from(await tensors[k].toArray())).toEqual(Array.from(await v.toArray()));
      }
      // Loaded tensors are ordinary tensors.
      expect(Array.from(await tensors.x.mul(2).toArray())).toEqual([3, 5]);
      // In-memory forms agree with the file.
      expect(Buffer.from(kiln.encodeSafetensors(t, { source: 'test' })).equals(readFileSync(path))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the writer refuses what it cannot write', () => {
    expect(() => encodeSafetensors(new Map([['x', { dtype: 'float32', shape: [3], data: new Float32Array(2) }]]))).toThrow(/needs 3 elements/);
    expect(() => encodeSafetensors(new Map([['x', { dtype: 'float16', shape: [2], data: new Float32Array(2) }]]))).toThrow(/2 bytes/);
    expect(() => encodeSafetensors(new Map([['__metadata__', entry('int32', [1], [1])]]))).toThrow(/cannot be named/);
    expect(() => encodeSafetensors(new Map(), { a: 1 as unknown as string })).toThrow(/must be a string/);
    expect(() => kiln.encodeSafetensors({ x: [1, 2] as unknown as kiln.Tensor })).toThrow(kiln.ArgumentError);
  });
});

describe('malformed files are FormatErrors naming the problem', () => {
  const t = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
  const ok = { a: t('F32', [2], [0, 8]) };

  test('a valid baseline decodes', () => {
    expect(decodeSafetensors(file(ok, new Uint8Array(8))).tensors.get('a')!.shape).toEqual([2]);
  });

  test.each([
    ['shorter than 8 bytes', new Uint8Array([1, 0, 0]), /3 bytes long, shorter than the 8-byte header length/],
    ['header length beyond the file', file(ok, new Uint8Array(8), { length: 1000n }), /header length 1000 runs past the end of the file/],
    ['header length beyond 2^53', file(ok, [], { length: 2n ** 63n }), /exceeds the 100000000-byte limit/],
    ['header length over the 100 MB cap', file(ok, [], { length: BigInt(MAX_HEADER_BYTES + 1) }), /exceeds the 100000000-byte limit/],
    ['header length 0', file('', []), /too short/],
    ['header not starting with {', file(' {}'), /must start with '\{'/],
    ['a JSON array', file('[1,2]'), /must start with '\{'/],
    ['truncated JSON', file('{"a": {"dtype": "F32"'), /not valid JSON/],
    ['invalid UTF-8', file('{"x":"y"}').map((b) => (b === 0x78 ? 0xff : b)), /not valid UTF-8/],
    ['trailing garbage after the JSON', file('{}  xx'), /not valid JSON/],
    ['a duplicate tensor name', file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', new Uint8Array(8)), /key "a" more than once/],
    ['a duplicate field', file('{"a":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)), /key "dtype" more than once/],
    ['metadata that is not strings', file({ __metadata__: { n: 3 } }), /__metadata__.n must be a string/],
    ['metadata that is not an object', file({ __metadata__: 'x' }), /__metadata__ must be an object/],
    ['a tensor that is not an object', file({ a: [1] }), /tensor "a" must be an object/],
    ['a missing field', file({ a: { dtype: 'F32', shape: [1] } }), /tensor "a" has no data_offsets/],
    ['an unknown field', file({ a: { ...t('F32', [1], [0, 4]), offsets: [0, 4] } }, new Uint8Array(4)), /unknown field "offsets"/],
    ['an unknown dtype', file({ a: t('F33', [1], [0, 4]) }, new Uint8Array(4)), /unknown dtype "F33"/],
    ['a lower-case dtype', file({ a: t('f32', [1], [0, 4]) }, new Uint8Array(4)), /unknown dtype "f32"/],
    ['a negative dim', file({ a: t('F32', [-1], [0, 4]) }, new Uint8Array(4)), /shape \[-1\]/],
    ['a fractional dim', file({ a: t('F32', [1.5], [0, 4]) }, new Uint8Array(4)), /shape \[1.5\]/],
    ['a shape that is not an array', file({ a: t('F32', 4, [0, 4]) }, new Uint8Array(4)), /shape 4/],
    ['three offsets', file({ a: t('F32', [1], [0, 4, 8]) }, new Uint8Array(8)), /data_offsets \[0,4,8\]/],
    ['end before begin', file({ a: t('F32', [0], [4, 0]) }, new Uint8Array(4)), /end before begin/],
    ['offsets beyond the data', file({ a: t('F32', [2], [0, 8]) }, new Uint8Array(4)), /beyond the end of the data \(4 bytes\)/],
    ['a size that does not match dtype × shape', file({ a: t('F32', [2], [0, 6]) }, new Uint8Array(6)), /F32\[2\], 8 bytes, but data_offsets \[0, 6\] span 6 bytes/],
    ['a huge shape', file({ a: t('F32', [2 ** 30, 2 ** 30, 2 ** 30], [0, 4]) }, new Uint8Array(4)), /too large|span/],
    ['overlapping tensors', file({ a: t('F32', [2], [0, 8]), b: t('F32', [1], [4, 8]) }, new Uint8Array(8)), /overlaps tensor "a"/],
    ['the same bytes twice', file({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [0, 4]) }, new Uint8Array(4)), /overlaps/],
    ['a hole between tensors', file({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [8, 12]) }, new Uint8Array(12)), /bytes 4-8 of the data .* belong to no tensor/],
    ['a hole at the start', file({ a: t('F32', [1], [4, 8]) }, new Uint8Array(8)), /bytes 0-4 of the data/],
    ['trailing bytes after the last tensor', file(ok, new Uint8Array(12)), /last 4 bytes of the data \(from 8 to 12\) belong to no tensor/],
    ['data but no tensors', file({}, new Uint8Array(4)), /last 4 bytes/],
    ['a bool byte that is not 0 or 1', file({ m: t('BOOL', [3], [0, 3]) }, [0, 1, 2]), /holds the byte 2 at element 2/],
  ])('%s', (_what, bytes, message) => {
    const e = formatError(bytes as Uint8Array);
    expect(e.code).toBe('KILN_SAFETENSORS');
    expect(e.message).toMatch(message);
  });

  test('a valid dtype kiln has no type for is its own error', () => {
    const e = formatError(file({ a: t('F64', [1], [0, 8]) }, new Uint8Array(8)));
    expect(e.code).toBe('KILN_SAFETENSORS_DTYPE');
    expect(e.message).toMatch(/tensor "a" has dtype F64, which kiln does not support/);
  });

  test('loadSafetensors names the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-st-'));
    try {
      const path = join(dir, 'broken.safetensors');
      writeFileSync(path, file(ok, new Uint8Array(4)));
      await expect(kiln.loadSafetensors(path)).rejects.toThrow(new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a valid safetensors file: .*beyond the end`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a file that cannot be read or written is a FileError naming the path, the reason and what to do', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-st-'));
    try {
      const missing = join(dir, 'missing.safetensors');
      const read = await kiln.loadSafetensors(missing).catch((e: unknown) => e);
      expect(read).toBeInstanceOf(kiln.FileError);
      expect(read).toBeInstanceOf(kiln.KilnError);
      expect(read).toMatchObject({ code: 'KILN_FILE_READ', systemCode: 'ENOENT', path: missing, message: `cannot read ${missing}: no such file (ENOENT); check the path (a relative one is resolved against ${process.cwd()})` });
      expect((read as Error).cause).toMatchObject({ code: 'ENOENT' });
      await expect(kiln.loadSafetensors(dir)).rejects.toMatchObject({ name: 'FileError', code: 'KILN_FILE_READ', systemCode: 'EISDIR' });
      const nowhere = join(dir, 'no-such-dir', 'w.safetensors');
      const write = await kiln.saveSafetensors(nowhere, { a: kiln.tensor([1], [1]) }).catch((e: unknown) => e);
      expect(write).toBeInstanceOf(kiln.FileError);
      expect(write).toMatchObject({ code: 'KILN_FILE_WRITE', systemCode: 'ENOENT', path: nowhere, message: expect.stringMatching(/^cannot write .*w\.safetensors: its directory does not exist \(ENOENT\); write to a directory that exists/) });
      // A path through a file: the error names the path asked for, not the temporary file.
      const throughFile = join(missing.replace('missing', 'plain'), 'x.safetensors');
      writeFileSync(join(dir, 'plain.safetensors'), 'not a dir');
      await expect(kiln.saveSafetensors(throughFile, { a: kiln.tensor([1], [1]) })).rejects.toMatchObject({ name: 'FileError', code: 'KILN_FILE_WRITE', systemCode: 'ENOTDIR', path: throughFile });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('example weights', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS script
  const make = require('../scripts/make-weights.cjs') as Record<'makeGpt' | 'makeMlp', () => { tensors: Record<string, SafetensorsEntry>; metadata: Record<string, string> }>;

  test.each([
    ['gpt.safetensors', make.makeGpt],
    ['mlp.safetensors', make.makeMlp],
  ])('examples/weights/%s is exactly what scripts/make-weights.cjs makes', (name, fn) => {
    const { tensors, metadata } = fn();
    const want = encodeSafetensors(new Map(Object.entries(tensors)), metadata);
    const got = readFileSync(join(__dirname, '..', 'examples', 'weights', name));
    expect(got.length).toBe(want.length);
    expect(Buffer.from(want).equals(got)).toBe(true);
  });
});
