/**
 * User call sites. A traced op records where in the user's code it was called (the first
 * stack frame outside kiln's own lib/ and dist/ directories), so error messages point at the
 * user's line instead of kiln's internals, and every user file the call went through, so
 * bundles guard on all of them.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Site } from '../ir';

// This file lives in <package>/lib/tensor (sources) or <package>/dist/tensor (built).
const PACKAGE_ROOT = path.resolve(__dirname, '..', '..');
const OWN_DIRS = ['lib', 'dist'].map((d) => path.join(PACKAGE_ROOT, d) + path.sep);

/** True for a file inside kiln's own code. */
export function isKilnFile(file: string): boolean {
  return OWN_DIRS.some((d) => file.startsWith(d));
}

function parseFrame(line: string): Site | undefined {
  let loc = line.trim().replace(/^at\s+/, '');
  if (loc.endsWith(')')) loc = loc.slice(loc.lastIndexOf('(') + 1, -1);
  const m = /^(.*):(\d+):(\d+)$/.exec(loc);
  if (!m) return undefined;
  let file = m[1];
  if (file.startsWith('file://')) file = fileURLToPath(file);
  if (!path.isAbsolute(file)) return undefined; // node:internal, <anonymous>, native frames
  return { file, line: Number(m[2]), col: Number(m[3]) };
}

// Traced functions run under trace(): frames past it belong to whoever started the trace
// (its built file, or its source where source maps rewrite stack frames).
const TRACE_FILES = new Set([path.join(__dirname, 'trace.js'), path.join(__dirname, 'trace.ts'), path.join(PACKAGE_ROOT, 'lib', 'tensor', 'trace.ts')]);

/**
 * The current stack's frames outside kiln, innermost first, up to (not including) the
 * frame of kiln's trace() when `withinTrace`: every user file a traced op was reached
 * through, helpers that make no kiln call themselves included.
 */
export function userSites(withinTrace = false): Site[] {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  // kiln's own frames can be deeper than the default 10; within a trace every frame counts.
  Error.stackTraceLimit = withinTrace ? Infinity : 200;
  try {
    Error.captureStackTrace(holder, userSites);
  } finally {
    Error.stackTraceLimit = limit;
  }
  const sites: Site[] = [];
  for (const line of (holder.stack ?? '').split('\n').slice(1)) {
    const site = parseFrame(line);
    if (!site) continue;
    if (withinTrace && TRACE_FILES.has(site.file)) break;
    if (!isKilnFile(site.file)) sites.push(site);
  }
  return sites;
}

/** The innermost stack frame outside kiln, or undefined when there is none. */
export function callSite(): Site | undefined {
  return userSites()[0];
}

/** `file:line:col` */
export function siteStr(s: Site): string {
  return `${s.file}:${s.line}:${s.col}`;
}
