/**
 * The file-system primitives the bundle store is built from: exclusive-create writes with
 * fsync, directory fsync, trusted mkdir, tree removal, once-per-process warnings, and the
 * test-only fault hook. Everything that can crash a publish half-way goes through here, so
 * the crash tests can stop a process at each stage.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'fs';
import { readEnv } from '../util/env';

/**
 * Points in a publish (and in holding a key lock) where `KILN_TEST_FAULT` can strike:
 * `stage` staging dir created · `write` half of the first artifact written · `fsync` all
 * artifacts written and fsynced · `manifest` half of manifest.json written · `rename` the
 * staged bundle is complete, before the rename · `renamed` after the rename · `locked` a
 * key lock was just acquired.
 */
export const FAULT_STAGES = ['stage', 'write', 'fsync', 'manifest', 'rename', 'renamed', 'locked'] as const;
export type FaultStage = (typeof FAULT_STAGES)[number];

/** What a fault does: SIGKILL this process, or fail the operation with that errno. */
export type FaultAction = 'kill' | 'enospc' | 'eacces' | 'erofs';

/**
 * Test-only fault injection. `KILN_TEST_FAULT=<stage>:<action>` (e.g. `write:enospc`,
 * `rename:kill`) makes the matching stage kill the process or throw the errno. The
 * variable is registered as not code-relevant and is never read outside this function.
 */
export function faultAt(stage: FaultStage): void {
  const spec = readEnv('KILN_TEST_FAULT');
  if (!spec) return;
  const [where, action] = spec.split(':');
  if (where !== stage) return;
  if (action === 'kill') {
    process.kill(process.pid, 'SIGKILL');
    // SIGKILL is delivered asynchronously to ourselves on some kernels; never continue.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
  }
  const errno = { enospc: 'ENOSPC', eacces: 'EACCES', erofs: 'EROFS' }[action as Exclude<FaultAction, 'kill'>];
  if (errno) throw errnoError(errno, `injected fault at ${stage}`);
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: ${message}`);
  e.code = code;
  return e;
}

/** The errno of a Node fs error, if any. */
export function errnoOf(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Creates `path` exclusively (it must not exist), writes all of `data`, fsyncs and closes.
 * Files get the default mode 0644 minus the umask: bundles must stay readable by other
 * users of a shared machine, but never writable by them. `fault` names the stage at which
 * an injected fault strikes half-way through the write.
 */
export function writeFileExclusive(path: string, data: Uint8Array, fault?: FaultStage): void {
  const fd = openSync(path, 'wx', 0o644);
  try {
    const half = fault ? data.length >> 1 : data.length;
    writeAll(fd, data.subarray(0, half));
    if (fault) {
      faultAt(fault);
      writeAll(fd, data.subarray(half));
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/** fsyncs a directory so that the entries created or renamed in it survive a power loss. */
export function fsyncDir(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return; // a platform that cannot open directories has no directory fsync either
  }
  try {
    fsyncSync(fd);
  } catch (e) {
    if (errnoOf(e) !== 'EINVAL' && errnoOf(e) !== 'EISDIR') throw e;
  } finally {
    closeSync(fd);
  }
}

/** mkdir -p with mode 0755 (minus the umask): the cache tree is never group/other-writable. */
export function mkdirp(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o755 });
}

/** rm -rf that never throws (best-effort cleanup after the real work succeeded or failed). */
export function removeTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true, maxRetries: 2 });
  } catch {
    // left for the next sweep
  }
}

const warned = new Set<string>();

/**
 * Emits a process warning with a stable `code`, once per process for each `once` key
 * (default: the code). Cache trouble is reported this way and never thrown.
 */
export function warnOnce(code: string, message: string, once = code): void {
  if (warned.has(once)) return;
  warned.add(once);
  process.emitWarning(message, { code });
}

/** Sleeps without blocking the event loop. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
