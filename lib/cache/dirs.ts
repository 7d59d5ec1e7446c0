/**
 * Where bundles live. The cache directory is `$KILN_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
 */
import { accessSync, constants, readdirSync, statSync } from 'fs';
import { homedir } from 'os';
import { join, resolve } from 'path';
import { readEnv } from '../util/env';

/** The cache directory for this environment (not created here). */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = readEnv('KILN_CACHE_DIR', env);
  if (explicit) return resolve(explicit);
  const xdg = readEnv('XDG_CACHE_HOME', env);
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'kiln');
}

export interface DirStatus {
  path: string;
  exists: boolean;
  writable: boolean;
  bytes: number;
  files: number;
}

/** Size and writability of a directory (a missing one is writable if its nearest existing parent is). */
export function dirStatus(path: string): DirStatus {
  let exists = true;
  try {
    statSync(path);
  } catch {
    exists = false;
  }
  let probe = path;
  for (;;) {
    try {
      statSync(probe);
      break;
    } catch {
      const parent = resolve(probe, '..');
      if (parent === probe) break;
      probe = parent;
    }
  }
  let writable = false;
  try {
    accessSync(probe, constants.W_OK);
    writable = true;
  } catch {
    writable = false;
  }
  const { bytes, files } = exists ? du(path) : { bytes: 0, files: 0 };
  return { path, exists, writable, bytes, files };
}

function du(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return { bytes, files };
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const sub = du(p);
      bytes += sub.bytes;
      files += sub.files;
    } else if (e.isFile()) {
      try {
        bytes += statSync(p).size;
        files += 1;
      } catch {
        // removed while we looked
      }
    }
  }
  return { bytes, files };
}
