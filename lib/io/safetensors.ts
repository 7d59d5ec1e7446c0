/**
 * The safetensors weights format (Hugging Face), read and written from its description:
 *
 *     8 bytes   N, unsigned little-endian 64-bit: length of the header
 *     N bytes   UTF-8 JSON object: { name: { dtype, shape, data_offsets: [begin, end] },
 *               "__metadata__"?: { string: string } }, padded with trailing spaces
 *     the rest  the data section: each tensor's bytes, row-major, little-endian, at
 *               [begin, end) relative to the start of the data section
 *
 * The reader treats the file as hostile (as the reference implementation does): every
 * number is checked before it is used. The header length is capped at 100 MB and must fit
 * the file; the JSON must be an object without duplicate keys; each tensor's byte range
 * must hold exactly shape × itemsize bytes; the ranges, sorted, must tile the data section
 * from 0 to its end — no overlap, no hole, no trailing bytes a polyglot file could hide in.
 * Any violation is a FormatError naming the file and the problem.
 *
 * The writer follows the reference writer's layout: tensors sorted by alignment
 * (4-byte dtypes first) then name, `__metadata__` first in the header, and the header
 * padded with spaces to a multiple of 8 so that every tensor starts aligned in the file.
 *
 * This module imports only util and ir; `lib/api/weights.ts` turns entries into Tensors.
 */
import { promises as fsp } from 'node:fs'; // fs.promises loads on first use, not at import
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ITEMSIZE, type DType, type Storage } from '../ir/dtype';
import { ArgumentError, FileError, FormatError } from '../util/errors';

/** One tensor of a safetensors file: dtype, shape and its elements in kiln's storage type. */
export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  data: Storage;
}

/** A decoded file: tensors in data order, and the `__metadata__` strings. */
export interface SafetensorsContents {
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** The reference implementation's cap on the header length. */
export const MAX_HEADER_BYTES = 100_000_000;

/** safetensors dtype names of kiln's dtypes. */
export const SAFETENSORS_DTYPE: { readonly [D in DType]: string } = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  int32: 'I32',
  bool: 'BOOL',
};

const KILN_DTYPE: ReadonlyMap<string, DType> = new Map(Object.entries(SAFETENSORS_DTYPE).map(([k, v]) => [v, k as DType]));

/** Valid safetensors dtypes that kiln has no type for (a clearer error than "unknown"). */
const OTHER_DTYPES = new Set(['F64', 'I64', 'U64', 'U32', 'I16', 'U16', 'I8', 'U8', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64']);

const METADATA = '__metadata__';
const TENSOR_FIELDS = ['dtype', 'shape', 'data_offsets'];
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------------------------------
// Reading

/**
 * Decodes a whole safetensors file held in `bytes`. `source` names it in errors (a path,
 * or a description). Throws FormatError `KILN_SAFETENSORS` for a malformed file and
 * `KILN_SAFETENSORS_DTYPE` for a valid dtype kiln has no type for (F64, I64, U8, ...).
 * The tensors own copies of their data: `bytes` may be reused afterwards.
 */
export function decodeSafetensors(bytes: Uint8Array, source = 'safetensors data'): SafetensorsContents {
  function bad(problem: string): never {
    throw new FormatError('KILN_SAFETENSORS', `${source}: not a valid safetensors file: ${problem}`);
  }
  if (bytes.length < 8) bad(`it is ${bytes.length} bytes long, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) bad(`the header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > bytes.length) bad(`the header length ${headerLen} runs past the end of the file (${bytes.length} bytes, so at most ${bytes.length - 8})`);
  if (headerLen < 2) bad(`the header length ${headerLen} is too short for a JSON object`);
  const headerBytes = bytes.subarray(8, 8 + headerLen);
  if (headerBytes[0] !== 0x7b) bad(`the header must start with '{', found byte 0x${headerBytes[0].toString(16).padStart(2, '0')}`);
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    bad('the header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    bad(`the header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) bad(`the header must be a JSON object, got ${Array.isArray(header) ? 'an array' : JSON.stringify(header)}`);
  const dup = duplicateKey(text);
  if (dup !== undefined) bad(`the header has the key ${JSON.stringify(dup)} more than once`);

  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const infos: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) bad(`${METADATA} must be an object of strings`);
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') bad(`${METADATA}.${k} must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v as string;
      }
      continue;
    }
    const what = `tensor ${JSON.stringify(name)}`;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) bad(`${what} must be an object with dtype, shape and data_offsets`);
    const info = value as Record<string, unknown>;
    for (const k of Object.keys(info)) if (!TENSOR_FIELDS.includes(k)) bad(`${what} has an unknown field ${JSON.stringify(k)} (expected dtype, shape, data_offsets)`);
    for (const k of TENSOR_FIELDS) if (!(k in info)) bad(`${what} has no ${k}`);
    const st = info.dtype;
    const dtype = typeof st === 'string' ? KILN_DTYPE.get(st) : undefined;
    if (dtype === undefined) {
      if (typeof st === 'string' && OTHER_DTYPES.has(st)) {
        throw new FormatError(
          'KILN_SAFETENSORS_DTYPE',
          `${source}: ${what} has dtype ${st}, which kiln does not support (kiln reads ${[...KILN_DTYPE.keys()].join(', ')}); convert it before saving`,
        );
      }
      bad(`${what} has an unknown dtype ${JSON.stringify(st)} (kiln reads ${[...KILN_DTYPE.keys()].join(', ')})`);
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every(isCount)) bad(`${what} has shape ${JSON.stringify(shape)}; it must be an array of non-negative integers`);
    const offsets = info.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) bad(`${what} has data_offsets ${JSON.stringify(offsets)}; they must be [begin, end], non-negative integers`);
    const [begin, end] = offsets as number[];
    if (end < begin) bad(`${what} has data_offsets [${begin}, ${end}]: end before begin`);
    if (end > dataLen) bad(`${what} has data_offsets [${begin}, ${end}] beyond the end of the data (${dataLen} bytes)`);
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const want = elements * ITEMSIZE[dtype];
    if (!Number.isSafeInteger(want)) bad(`${what} has shape [${shape.join(', ')}], too large`);
    if (end - begin !== want) {
      bad(`${what} is ${st}[${shape.join(', ')}], ${want} bytes, but data_offsets [${begin}, ${end}] span ${end - begin} bytes`);
    }
    infos.push({ name, dtype, shape: shape as number[], begin, end });
  }

  // The ranges must tile the data section: no overlap, no hole, nothing after the last.
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev = '';
  for (const t of infos) {
    if (t.begin < at) bad(`tensor ${JSON.stringify(t.name)} (bytes ${t.begin}-${t.end}) overlaps tensor ${JSON.stringify(prev)} (which ends at ${at})`);
    if (t.begin > at) bad(`bytes ${at}-${t.begin} of the data (before tensor ${JSON.stringify(t.name)}) belong to no tensor`);
    at = t.end;
    prev = t.name;
  }
  if (at !== dataLen) bad(`the last ${dataLen - at} bytes of the data (from ${at} to ${dataLen}) belong to no tensor`);

  const tensors = new Map<string, SafetensorsEntry>();
  for (const t of infos) {
    const data = storageFromBytes(t.dtype, bytes.subarray(dataStart + t.begin, dataStart + t.end));
    if (t.dtype === 'bool') {
      const i = (data as Uint8Array).findIndex((v) => v > 1);
      if (i >= 0) bad(`bool tensor ${JSON.stringify(t.name)} holds the byte ${data[i]} at element ${i}; bool bytes must be 0 or 1`);
    }
    tensors.set(t.name, { dtype: t.dtype, shape: [...t.shape], data });
  }
  return { tensors, metadata: { ...metadata } };
}

/** Reads and decodes a safetensors file; errors name the path (FileError KILN_FILE_READ when it cannot be read). */
export async function readSafetensorsFile(path: string): Promise<SafetensorsContents> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(path);
  } catch (e) {
    throw fileError('read', path, e);
  }
  return decodeSafetensors(bytes, path);
}

// What each common system error means for the file, and what to do.
const FILE_REASONS: Readonly<Record<string, { read: string; write: string }>> = {
  ENOENT: { read: 'no such file', write: 'its directory does not exist' },
  EACCES: { read: 'permission denied', write: 'permission denied' },
  EPERM: { read: 'permission denied', write: 'permission denied' },
  EISDIR: { read: 'it is a directory', write: 'it is a directory' },
  ENOTDIR: { read: 'a component of the path is not a directory', write: 'a component of the path is not a directory' },
  ENOSPC: { read: 'no space left on the device', write: 'no space left on the device' },
  EROFS: { read: 'read-only file system', write: 'the file system is read-only' },
};

/** A file system failure as FileError KILN_FILE_READ / KILN_FILE_WRITE naming the path, the reason and what to do. */
function fileError(op: 'read' | 'write', path: string, e: unknown): FileError {
  const sys = (e as { code?: unknown } | null)?.code;
  const code = typeof sys === 'string' ? sys : undefined;
  const reason = (code && FILE_REASONS[code]?.[op]) ?? (e instanceof Error ? e.message : String(e));
  const todo = op === 'read' ? `check the path (a relative one is resolved against ${process.cwd()})` : 'write to a directory that exists and that this user may write';
  return new FileError(op === 'read' ? 'KILN_FILE_READ' : 'KILN_FILE_WRITE', `cannot ${op} ${path}: ${reason}${code ? ` (${code})` : ''}; ${todo}`, path, e);
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** A copy of little-endian `bytes` as the storage array of `dtype` (any alignment). */
function storageFromBytes(dtype: DType, bytes: Uint8Array): Storage {
  const copy = new Uint8Array(bytes); // own, aligned buffer (Buffer#slice would be a view)
  if (!LITTLE_ENDIAN) swapBytes(copy, ITEMSIZE[dtype]);
  const buf = copy.buffer;
  switch (dtype) {
    case 'float32':
      return new Float32Array(buf);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buf);
    case 'int32':
      return new Int32Array(buf);
    case 'bool':
      return copy;
    default:
      return dtype satisfies never;
  }
}

/** Reverses the bytes of each `size`-byte element in place (big-endian hosts only). */
function swapBytes(b: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= b.length; i += size) b.subarray(i, i + size).reverse();
}

/**
 * The first key that occurs twice in one JSON object of `text` (already known to be valid
 * JSON), or undefined. JSON.parse silently keeps the last of duplicate keys; the format
 * forbids them, and two tensors of one name would hide data.
 */
function duplicateKey(text: string): string | undefined {
  const objects: (Set<string> | null)[] = []; // one entry per open bracket; null for arrays
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const top = objects[objects.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) return key;
        top.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === '{') {
      objects.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      objects.push(null);
    } else if (c === '}' || c === ']') {
      objects.pop();
    } else if (c === ',') {
      expectKey = objects[objects.length - 1] !== null;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Writing

// Alignment order of the reference writer: larger elements first, so each starts aligned.
const ALIGN_ORDER: { readonly [D in DType]: number } = { float32: 0, int32: 1, bfloat16: 2, float16: 3, bool: 4 };

/**
 * Encodes tensors and metadata as a safetensors file. `tensors` maps names to entries
 * (a Map, or an object); the data of each must hold exactly shape's element count in its
 * dtype's storage type. Throws ArgumentError for anything that cannot be written.
 */
export function encodeSafetensors(tensors: ReadonlyMap<string, SafetensorsEntry> | Readonly<Record<string, SafetensorsEntry>>, metadata: Readonly<Record<string, string>> = {}): Uint8Array {
  function bad(msg: string): never {
    throw new ArgumentError('KILN_BAD_ARGUMENT', `safetensors: ${msg}`);
  }
  const entries: [string, SafetensorsEntry][] = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors as Readonly<Record<string, SafetensorsEntry>>);
  for (const [name, t] of entries) {
    if (name === METADATA) bad(`a tensor cannot be named ${METADATA}`);
    if (!(t.dtype in SAFETENSORS_DTYPE)) bad(`tensor ${JSON.stringify(name)} has dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) bad(`tensor ${JSON.stringify(name)} has shape ${JSON.stringify(t.shape)}`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (!ArrayBuffer.isView(t.data) || t.data.length !== n || t.data.BYTES_PER_ELEMENT !== ITEMSIZE[t.dtype]) {
      bad(`tensor ${JSON.stringify(name)}: ${t.dtype}[${t.shape.join(', ')}] needs ${n} elements of ${ITEMSIZE[t.dtype]} bytes`);
    }
  }
  for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') bad(`metadata ${JSON.stringify(k)} must be a string, got ${typeof v}`);
  entries.sort(([na, a], [nb, b]) => ALIGN_ORDER[a.dtype] - ALIGN_ORDER[b.dtype] || (na < nb ? -1 : na > nb ? 1 : 0));

  // The header is built as text so that the key order is ours (JS objects put integer-like
  // keys first, and a "__proto__" key would need care).
  const fields: string[] = [];
  if (Object.keys(metadata).length) fields.push(`${JSON.stringify(METADATA)}:{${Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  let offset = 0;
  for (const [name, t] of entries) {
    const size = t.data.byteLength;
    fields.push(`${JSON.stringify(name)}:{"dtype":"${SAFETENSORS_DTYPE[t.dtype]}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + size}]}`);
    offset += size;
  }
  let header = new TextEncoder().encode(`{${fields.join(',')}}`);
  const pad = (8 - (header.length % 8)) % 8;
  if (pad) {
    const padded = new Uint8Array(header.length + pad).fill(0x20);
    padded.set(header);
    header = padded;
  }
  const out = new Uint8Array(8 + header.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  let at = 8 + header.length;
  for (const [, t] of entries) {
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(b, at);
    if (!LITTLE_ENDIAN) swapBytes(out.subarray(at, at + b.length), ITEMSIZE[t.dtype]);
    at += b.length;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: to a temporary file beside `path`, then renamed
 * over it, so a reader never sees half a file.
 */
export async function writeSafetensorsFile(path: string, tensors: Parameters<typeof encodeSafetensors>[0], metadata?: Readonly<Record<string, string>>): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await fsp.writeFile(tmp, bytes, { flag: 'wx' });
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined); // a path through a file fails here too (ENOTDIR)
    throw fileError('write', path, e);
  }
}
