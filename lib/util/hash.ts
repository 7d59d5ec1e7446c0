/**
 * Hashing helpers. Every cache and identity key in kiln is a sha256 hex digest; fields are
 * labelled and length-prefixed so that no two different field lists can hash alike.
 */
import { createHash } from 'node:crypto';

/** sha256 of a string (UTF-8) or bytes, as 64 lowercase hex digits. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * sha256 over labelled, length-prefixed fields, in order. `["a","bc"]` and `["ab","c"]`
 * hash differently because each label and value is preceded by its byte length.
 */
export function hashFields(fields: readonly (readonly [string, string | Uint8Array])[]): string {
  const h = createHash('sha256');
  for (const [label, value] of fields) {
    const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    h.update(`${Buffer.byteLength(label, 'utf8')}:${label}=${bytes.length}:`);
    h.update(bytes);
    h.update(';');
  }
  return h.digest('hex');
}
