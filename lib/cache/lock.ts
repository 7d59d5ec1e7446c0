/**
 * Per-key locks, so that concurrent cold processes compile a program once. The lock is an
 * optimization, never a correctness requirement: publishing is atomic and the first rename
 * wins, so every path out of here that cannot hold the lock (a lock dir we cannot write,
 * a holder that never lets go) proceeds without it and races safely.
 *
 * A lock is `locks/<key>.lock`, created complete and atomically: its JSON (pid, hostname,
 * time, token) is written to a private file first and hard-linked into place (link fails
 * if the lock exists, also on NFS). The holder refreshes its mtime as a heartbeat. A lock
 * is stale when its pid is dead on this host, or its mtime is older than `staleMs`.
 * Waiters poll with growing, jittered sleeps and stop waiting as soon as `ready()` says
 * the bundle was published, or after `maxWaitMs`.
 */
import { hostname } from 'os';
import { randomBytes } from 'crypto';
import { linkSync, readFileSync, renameSync, statSync, unlinkSync, utimesSync } from 'fs';
import { faultAt, sleep, writeFileExclusive } from './io';

export interface LockInfo {
  pid: number;
  hostname: string;
  time: string;
  token: string;
}

export interface LockOptions {
  /** A lock whose heartbeat is older than this is stale (default 60 s). */
  staleMs?: number;
  /** Give up waiting after this long and proceed without the lock (default 5 min). */
  maxWaitMs?: number;
  /** Polled while waiting: true once the result the holder was producing is available. */
  ready?: () => boolean;
}

/** How `fn` came to run: holding the lock, or not (and why). */
export type LockOutcome = 'acquired' | 'ready' | 'timeout' | 'unavailable';

const DEFAULT_STALE_MS = 60_000;
const DEFAULT_MAX_WAIT_MS = 300_000;
const host = hostname();

/** Serializes callers inside this process, so they never spin on their own lock file. */
const inProcess = new Map<string, Promise<unknown>>();

/**
 * Runs `fn` holding the lock file `lockPath`, or without it when the lock cannot be had
 * (see the module comment); `fn` receives how it came to run. The lock dir must exist.
 */
export async function withFileLock<T>(lockPath: string, fn: (outcome: LockOutcome) => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const prev = inProcess.get(lockPath) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => lockAndRun(lockPath, fn, opts));
  const tail = run.catch(() => undefined);
  inProcess.set(lockPath, tail);
  try {
    return await run;
  } finally {
    if (inProcess.get(lockPath) === tail) inProcess.delete(lockPath);
  }
}

async function lockAndRun<T>(lockPath: string, fn: (outcome: LockOutcome) => Promise<T>, opts: LockOptions): Promise<T> {
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const maxWaitMs = opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
  const start = Date.now();
  let delay = 5;
  for (;;) {
    const mine = tryAcquire(lockPath);
    if (mine === 'unavailable') return fn('unavailable');
    if (mine) return holdAndRun(lockPath, mine, staleMs, fn);
    const held = readLock(lockPath);
    if (held === 'gone') continue;
    if (isStale(held, staleMs)) {
      breakStale(lockPath, held);
      continue;
    }
    if (opts.ready?.()) return fn('ready');
    if (Date.now() - start >= maxWaitMs) return fn('timeout');
    await sleep(delay * (0.5 + Math.random()));
    delay = Math.min(delay * 1.6, 250);
  }
}

async function holdAndRun<T>(lockPath: string, info: LockInfo, staleMs: number, fn: (o: LockOutcome) => Promise<T>): Promise<T> {
  const beat = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(lockPath, now, now);
    } catch {
      // lost the lock file (broken as stale): finishing is still safe, publish is atomic
    }
  }, Math.max(50, staleMs / 4));
  beat.unref();
  try {
    faultAt('locked');
    return await fn('acquired');
  } finally {
    clearInterval(beat);
    release(lockPath, info.token);
  }
}

/** The lock, false when another process holds it, 'unavailable' when it cannot be created at all. */
function tryAcquire(lockPath: string): LockInfo | false | 'unavailable' {
  const info: LockInfo = { pid: process.pid, hostname: host, time: new Date().toISOString(), token: randomBytes(12).toString('hex') };
  const temp = `${lockPath}.${info.token}`;
  try {
    writeFileExclusive(temp, Buffer.from(JSON.stringify(info)));
  } catch {
    return 'unavailable';
  }
  try {
    linkSync(temp, lockPath);
    return info;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EEXIST' ? false : 'unavailable';
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // the sweep of dead holders' files removes it
    }
  }
}

/** The lock's holder and mtime; 'gone' when there is no lock file; pid -1 when unreadable. */
export function readLock(lockPath: string): (LockInfo & { mtimeMs: number }) | 'gone' {
  let mtimeMs: number;
  let text: string;
  try {
    mtimeMs = statSync(lockPath).mtimeMs;
    text = readFileSync(lockPath, 'utf8');
  } catch {
    return 'gone';
  }
  try {
    const j = JSON.parse(text) as LockInfo;
    if (Number.isSafeInteger(j.pid) && typeof j.hostname === 'string' && typeof j.token === 'string') return { ...j, mtimeMs };
  } catch {
    // unreadable: judged by age alone
  }
  return { pid: -1, hostname: '', time: '', token: '', mtimeMs };
}

/** True when the process is gone: signal 0 reaches live processes (EPERM: alive, not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock is stale when its holder is dead on this host or its heartbeat stopped. */
export function isStale(l: LockInfo & { mtimeMs: number }, staleMs = DEFAULT_STALE_MS): boolean {
  if (l.hostname === host && l.pid > 0 && !pidAlive(l.pid)) return true;
  return Date.now() - l.mtimeMs > staleMs;
}

/** True while a live (not stale) lock exists at `lockPath`. */
export function isLocked(lockPath: string, staleMs = DEFAULT_STALE_MS): boolean {
  const l = readLock(lockPath);
  return l !== 'gone' && !isStale(l, staleMs);
}

/**
 * Removes a stale lock without removing a fresh one that replaced it meanwhile: rename it
 * aside (atomic; only one breaker wins), check it is the lock judged stale, and put it back
 * if it is not.
 */
function breakStale(lockPath: string, seen: LockInfo): void {
  const aside = `${lockPath}.stale.${randomBytes(6).toString('hex')}`;
  try {
    renameSync(lockPath, aside);
  } catch {
    return; // another waiter broke it first
  }
  const moved = readLock(aside);
  if (moved !== 'gone' && moved.token !== seen.token) {
    try {
      linkSync(aside, lockPath); // a live lock: restore it unless someone locked again already
    } catch {
      // someone else holds a new lock now; the displaced holder finishes and races safely
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    // already gone
  }
}

function release(lockPath: string, token: string): void {
  const l = readLock(lockPath);
  if (l === 'gone' || l.token !== token) return; // broken as stale meanwhile: not ours to remove
  try {
    unlinkSync(lockPath);
  } catch {
    // gone already
  }
}
