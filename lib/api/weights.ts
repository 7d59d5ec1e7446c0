/**
 * Weights files as public Tensors: `kiln.loadSafetensors(path)` and
 * `kiln.saveSafetensors(path, tensors)`, plus the in-memory forms. The format itself
 * (and every check of a malformed file) is in `lib/io/safetensors.ts`.
 */
import {
  decodeSafetensors as decodeEntries,
  encodeSafetensors as encodeEntries,
  readSafetensorsFile,
  writeSafetensorsFile,
  type SafetensorsContents,
  type SafetensorsEntry,
} from '../io/safetensors';
import { EagerImpl } from '../tensor/impl';
import { Tensor } from '../tensor/tensor';
import { ArgumentError } from '../util/errors';

/** The tensors of a safetensors file by name (in file order), and its `__metadata__`. */
export interface Safetensors {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

function toTensors(c: SafetensorsContents): Safetensors {
  // No prototype: a tensor may be named "constructor" or "__proto__".
  const tensors = Object.create(null) as Record<string, Tensor>;
  for (const [name, e] of c.tensors) tensors[name] = Tensor.wrap(new EagerImpl(e.dtype, e.shape, 'cpu', e.data));
  return { tensors, metadata: c.metadata };
}

function toEntries(tensors: Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>): Map<string, SafetensorsEntry> {
  if (typeof tensors !== 'object' || tensors === null) throw new ArgumentError('KILN_BAD_ARGUMENT', 'safetensors: tensors must be an object (or Map) of name → Tensor');
  const out = new Map<string, SafetensorsEntry>();
  for (const [name, t] of tensors instanceof Map ? tensors : Object.entries(tensors)) {
    if (!(t instanceof Tensor)) throw new ArgumentError('KILN_BAD_ARGUMENT', `safetensors: ${JSON.stringify(name)} must be a kiln Tensor`);
    const impl = Tensor.unwrap(t);
    if (impl.kind === 'traced') throw new ArgumentError('KILN_BAD_ARGUMENT', `safetensors: ${JSON.stringify(name)} is a traced tensor; save weights outside kiln.compile`);
    out.set(name, { dtype: impl.dtype, shape: [...impl.shape], data: impl.storage });
  }
  return out;
}

/**
 * Reads a `.safetensors` file into eager CPU tensors (float32, float16, bfloat16, int32,
 * bool). A malformed file is a FormatError naming the file and the problem; one that cannot
 * be read is FileError KILN_FILE_READ (`systemCode`: `ENOENT`, `EACCES`, ...).
 */
export async function loadSafetensors(path: string): Promise<Safetensors> {
  if (typeof path !== 'string' || path === '') throw new ArgumentError('KILN_BAD_ARGUMENT', 'loadSafetensors: path must be a non-empty string');
  return toTensors(await readSafetensorsFile(path));
}

/**
 * Writes tensors (and optional string metadata) to a `.safetensors` file, atomically
 * (a temporary file renamed into place). One that cannot be written is FileError
 * KILN_FILE_WRITE (`systemCode`: `ENOENT`, `EACCES`, ...).
 */
export async function saveSafetensors(path: string, tensors: Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>, metadata?: Readonly<Record<string, string>>): Promise<void> {
  if (typeof path !== 'string' || path === '') throw new ArgumentError('KILN_BAD_ARGUMENT', 'saveSafetensors: path must be a non-empty string');
  await writeSafetensorsFile(path, toEntries(tensors), metadata);
}

/** Decodes safetensors bytes held in memory; `source` names them in errors. */
export function decodeSafetensors(bytes: Uint8Array, source?: string): Safetensors {
  if (!(bytes instanceof Uint8Array)) throw new ArgumentError('KILN_BAD_ARGUMENT', 'decodeSafetensors: bytes must be a Uint8Array (or Buffer)');
  return toTensors(decodeEntries(bytes, source));
}

/** Encodes tensors (and optional string metadata) as safetensors bytes. */
export function encodeSafetensors(tensors: Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>, metadata?: Readonly<Record<string, string>>): Uint8Array {
  return encodeEntries(toEntries(tensors), metadata);
}
