/**
 * `kiln cache ls|show|verify|prune|clear`: inspect and maintain the bundle cache (and list
 * and verify shipped bundles from KILN_BUNDLE_PATH). Exit status: 0 success, 1 a failed
 * check or refused action, 2 a usage error.
 */
import {
  ccText,
  clearCache,
  evictBundles,
  kilnVersion,
  listBundles,
  openCache,
  parseBytes,
  parseTarget,
  verifyBundle,
  type BundleEntry,
  type Cache,
  type Host,
  type VerifyResult,
} from '../cache';
import type { CudaKernelResources } from '../engine/cuda-load';
import { readProgramDocument, type ProgramDocument } from '../engine/bundle';
import { addon } from '../runtime/native';
import { cpuInfo } from '../runtime/toolchain';
import { sha256Hex } from '../util/hash';
import { readFileSync } from 'fs';
import { isAbsolute, resolve } from 'path';

export const cacheSummary = 'list, show, verify, prune and clear compiled bundles';

export const cacheUsage = `kiln cache <ls|show|verify|prune|clear> [options]

  ls                       list bundles: namespace, key, target, size, last used, source (cache or shipped)
  show <key-prefix>        explain one bundle: every key field, the guards, the dynamic sizes it checks, the artifacts
  verify [key-prefix]      re-check checksums, guards and this machine's target; exit 1 if any fails
  prune                    evict least-recently-used bundles past the size cap
      --max-bytes N        cap to prune to (e.g. 500M, 2G; default KILN_CACHE_MAX_BYTES, else 2G)
      --older-than DAYS    also evict bundles not used for DAYS days
      --dry-run            show what would be removed
  clear --yes              remove every bundle from the cache (shipped bundles are never touched)

Options for every subcommand:
  --cache-dir DIR          the cache to use (default KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln)
  --json                   machine-readable output (ls, show, verify, prune)
  --no-sources             verify: skip the source-file guards (e.g. shipped bundles away from their app)
  --help                   this text; \`kiln cache <subcommand> --help\` for one subcommand`;

const subUsage: Record<string, string> = {
  ls: 'kiln cache ls [--json] [--cache-dir DIR]\n\nLists cached and shipped bundles: namespace, key prefix, target, size, last used, source.',
  show: "kiln cache show <key-prefix> [--json] [--cache-dir DIR]\n\nExplains one bundle's manifest: every key field by name, the guards (target rule, toolchain, source files and whether they changed), the dynamic sizes its slices need (checked at every call), the artifacts with size and sha256, and for a CUDA bundle each kernel's launch shape, registers and spills.",
  verify:
    'kiln cache verify [key-prefix] [--json] [--no-sources] [--cache-dir DIR]\n\nRe-checks every artifact checksum, the manifest, the source-file guards and whether this machine can run each bundle. Exit status 1 if any bundle fails.',
  prune:
    'kiln cache prune [--max-bytes N] [--older-than DAYS] [--dry-run] [--json] [--cache-dir DIR]\n\nEvicts least-recently-used bundles until the cache fits N bytes (default: KILN_CACHE_MAX_BYTES, else 2G), and bundles unused for DAYS days. Bundles being rebuilt (locked) are kept; shipped bundles are never touched.',
  clear: 'kiln cache clear --yes [--cache-dir DIR]\n\nRemoves every bundle from the cache. Without --yes, says what it would remove and exits 1. Shipped bundles are never touched.',
};

interface Args {
  positional: string[];
  flags: Map<string, string | true>;
}

const VALUE_FLAGS = new Set(['--cache-dir', '--max-bytes', '--older-than']);
const BOOL_FLAGS = new Set(['--json', '--yes', '--dry-run', '--help', '-h', '--no-sources']);

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [name, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (VALUE_FLAGS.has(name)) {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${name} needs a value`);
      flags.set(name, v);
    } else if (BOOL_FLAGS.has(name)) flags.set(name, true);
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else positional.push(a);
  }
  return { positional, flags };
}

/** Entry point: `args` are the words after `kiln cache`; resolves to the exit status. */
export async function cacheCommand(args: string[]): Promise<number> {
  let parsed: Args;
  try {
    parsed = parseArgs(args);
  } catch (e) {
    console.error(`kiln cache: ${(e as Error).message}\n\n${cacheUsage}`);
    return 2;
  }
  const [sub, ...rest] = parsed.positional;
  if (parsed.flags.has('--help') || parsed.flags.has('-h') || sub === 'help') {
    console.log(subUsage[sub === 'help' ? rest[0] : sub] ?? cacheUsage);
    return 0;
  }
  const json = parsed.flags.has('--json');
  const dirFlag = parsed.flags.get('--cache-dir');
  const open = (mode: 'auto' | 'read-only', maxBytes?: number) =>
    openCache({ mode, ...(typeof dirFlag === 'string' ? { cacheDir: dirFlag } : {}), ...(maxBytes !== undefined ? { maxBytes } : {}) });
  try {
    switch (sub) {
      case 'ls':
        return ls(open('read-only'), json);
      case 'show':
        if (rest.length !== 1) throw new UsageError('show needs one key prefix');
        return show(open('read-only'), rest[0], json);
      case 'verify':
        return verify(open('read-only'), rest[0], json, !parsed.flags.has('--no-sources'));
      case 'prune':
        return prune((cap) => open('auto', cap), parsed.flags, json);
      case 'clear':
        return clear(open('auto'), parsed.flags.has('--yes'));
      case undefined:
        throw new UsageError('which subcommand?');
      default:
        throw new UsageError(`unknown subcommand '${sub}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`kiln cache: ${e.message}\n\n${cacheUsage}`);
      return 2;
    }
    throw e;
  }
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${i === 0 ? bytes : bytes.toFixed(1)} ${units[i]}`;
}

function ago(d: Date): string {
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 129600) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

function ls(cache: Cache, json: boolean): number {
  const all = listBundles(cache);
  if (json) {
    console.log(JSON.stringify(all.map((b) => ({ namespace: b.namespace, key: b.key, target: b.manifest?.guards.target ?? null, bytes: b.bytes, lastUsed: b.lastUsed.toISOString(), source: b.source, dir: b.dir, error: b.error ?? null })), null, 2));
    return 0;
  }
  if (all.length === 0) {
    console.log(`no bundles in ${cache.cacheDir}${cache.bundlePath.length ? ` or ${cache.bundlePath.join(', ')}` : ''}`);
    return 0;
  }
  const rows = [['NAMESPACE', 'KEY', 'TARGET', 'SIZE', 'LAST USED', 'SOURCE']];
  for (const b of all) rows.push([b.namespace, b.key.slice(0, 12), b.manifest?.guards.target ?? '(unreadable)', human(b.bytes), ago(b.lastUsed), b.source]);
  const cached = all.filter((b) => b.source === 'cache');
  console.log(table(rows));
  console.log(`\n${cached.length} cached bundles, ${human(cached.reduce((s, b) => s + b.bytes, 0))} of ${cache.maxBytes > 0 ? human(cache.maxBytes) : 'no cap'} in ${cache.cacheDir}`);
  return 0;
}

/** The one bundle whose key starts with `prefix`; reports none or several and returns undefined. */
function find(cache: Cache, prefix: string): BundleEntry | undefined {
  if (!/^[0-9a-f]{1,64}$/.test(prefix)) throw new UsageError(`'${prefix}' is not a key prefix (hex digits)`);
  const matches = listBundles(cache).filter((b) => b.key.startsWith(prefix));
  if (matches.length === 1) return matches[0];
  if (matches.length === 0) console.error(`kiln cache: no bundle key starts with ${prefix}`);
  else console.error(`kiln cache: ${prefix} matches ${matches.length} bundles:\n${matches.map((b) => `  ${b.namespace}/${b.key} (${b.source})`).join('\n')}`);
  return undefined;
}

function sourceState(path: string, sha: string): string {
  try {
    return sha256Hex(readFileSync(isAbsolute(path) ? path : resolve(path))) === sha ? 'unchanged' : 'CHANGED';
  } catch {
    return 'MISSING';
  }
}

function targetRule(target: string): string {
  const t = parseTarget(target);
  if (!t) return 'unknown target';
  if (t.kind === 'cpu') return `CPU ${t.arch}${t.features.length ? ` with ${t.features.join(', ')}` : ''}`;
  if (t.output === 'cubin' || t.archSpecific) return `CUDA ${t.output}, runs on compute capability ${ccText(t.cc)} exactly`;
  return `CUDA PTX, runs on compute capability ${ccText(t.cc)} or newer`;
}

/** A CUDA bundle's kernels from its graph.json (read only once the bundle verifies), or why they are not shown. */
/** The bundle's graph.json, read once it verifies, or why it is not shown. */
function programDocument(b: BundleEntry): ProgramDocument | string {
  const v = verifyBundle(b.dir, { key: b.key, namespace: b.namespace, checkSources: false, checkOwner: b.source === 'cache' });
  if (!v.ok) return `not shown: the bundle does not verify (${v.reason}: ${v.detail})`;
  try {
    return readProgramDocument(v);
  } catch (e) {
    return `not shown: ${(e as Error).message}`;
  }
}

function cudaKernels(doc: ProgramDocument | string): { target: string; kernels: [string, CudaKernelResources][] } | string {
  if (typeof doc === 'string') return doc;
  if (doc.device !== 'cuda') return 'not shown: graph.json is not a CUDA program';
  return { target: doc.cuda.target, kernels: Object.entries(doc.cuda.resources) };
}

/** The conditions on dynamic sizes the program checks at every call (graph.json's shape guards). */
function sizeRules(doc: ProgramDocument | string): string[] {
  if (typeof doc === 'string') return [];
  return (doc.graph.guards ?? []).map((g) => `${g.max === undefined ? `${g.dim} >= ${g.min}` : `${g.min} <= ${g.dim} <= ${g.max}`}   (${g.op})`);
}

function kernelTable(kernels: [string, CudaKernelResources][]): string {
  const rows = [['  KERNEL', 'THREADS', 'REGISTERS', 'SHARED', 'SPILLS (store/load)']];
  for (const [name, r] of kernels) {
    rows.push([`  ${name}`, String(r.threads), String(r.registers), human(r.sharedBytes + r.dynamicSharedBytes), `${r.spillStores} B / ${r.spillLoads} B`]);
  }
  return table(rows);
}

function show(cache: Cache, prefix: string, json: boolean): number {
  const b = find(cache, prefix);
  if (!b) return 1;
  if (!b.manifest) {
    console.error(`kiln cache: ${b.dir}: ${b.error}`);
    return 1;
  }
  const m = b.manifest;
  const doc = programDocument(b);
  const cuda = parseTarget(m.guards.target)?.kind === 'cuda' ? cudaKernels(doc) : undefined;
  const sizes = sizeRules(doc);
  if (json) {
    const kernels = cuda === undefined ? {} : typeof cuda === 'string' ? { kernels: null, note: cuda } : { kernels: Object.fromEntries(cuda.kernels) };
    console.log(JSON.stringify({ dir: b.dir, source: b.source, bytes: b.bytes, lastUsed: b.lastUsed.toISOString(), manifest: m, sizeRules: sizes, ...kernels }, null, 2));
    return 0;
  }
  const kf = m.keyFields;
  const lines = [
    `bundle     ${b.dir}`,
    `source     ${b.source}`,
    `key        ${m.key}`,
    `format     ${m.format} schema ${m.schema}, built by kiln ${m.kilnVersion}${m.kilnVersion === kilnVersion() ? '' : ` (this is kiln ${kilnVersion()}: it will not be loaded)`}`,
    `created    ${m.created}`,
    `last used  ${b.lastUsed.toISOString()} (${ago(b.lastUsed)})`,
    `size       ${human(b.bytes)}`,
    '',
    'key fields (sha256 over these, in this order):',
    `  schema        ${kf.schema}`,
    `  kilnVersion   ${kf.kilnVersion}`,
    `  namespace     ${kf.namespace}`,
    `  sourceSha256  ${kf.sourceSha256}   (the traced function's source text)`,
    `  inputs        ${kf.inputs.join(', ') || '(none)'}   ('?' = dynamic dim)`,
    `  options       ${kf.options}`,
    ...(kf.schema >= 2 ? [`  userKey       ${kf.userKey || '(none)'}   (the key option)`] : []),
    `  target        ${kf.target}`,
    `  toolchain     ${kf.toolchain}`,
    `  env           ${Object.entries(kf.env).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ') || '(none)'}`,
    '',
    'guards (checked at load):',
    `  target     ${m.guards.target}: ${targetRule(m.guards.target)}`,
    `  toolchain  ${m.guards.toolchain.id}   (code generation; the key's toolchain field)`,
    ...(m.guards.sources.length
      ? m.guards.sources.map((s) => `  source     ${s.path}  ${s.sha256.slice(0, 16)}  ${sourceState(s.path, s.sha256)}`)
      : ['  sources    (none recorded)']),
    ...(sizes.length ? ['', 'dynamic sizes (checked at every call: the sizes that slices and max/min over a dynamic dim are defined for):', ...sizes.map((r) => `  ${r}`)] : []),
    '',
    'artifacts:',
    table(m.artifacts.map((a) => [`  ${a.name}`, human(a.size), a.sha256])),
  ];
  if (cuda !== undefined) {
    lines.push('', `kernels (ptxas's report for ${m.guards.target}; shared = static + dynamic per block):`);
    lines.push(typeof cuda === 'string' ? `  (${cuda})` : kernelTable(cuda.kernels));
  }
  const cc = m.guards.toolchain;
  const why = cuda !== undefined ? `a ${m.guards.target} image runs whatever NVRTC built it` : 'any compiler builds an equivalent library';
  if (cc.version !== undefined || cc.path !== undefined) lines.push('', `built with  ${cc.version ?? '(version unknown)'}${cc.path ? ` at ${cc.path}` : ''}   (information: ${why})`);
  if (m.info) lines.push('', 'info:', ...Object.entries(m.info).map(([k, v]) => `  ${k}: ${v}`));
  console.log(lines.join('\n'));
  return 0;
}

/** This machine as a target host: the CPU, and the first CUDA device when one is found. */
function cpuHost(): Host {
  const cpu = cpuInfo();
  return { kind: 'cpu', arch: cpu.arch, features: cpu.features };
}

function cudaHost(): Host | string {
  try {
    const d = addon().info().driver; // loads the addon (not NVRTC): only asked for when a CUDA bundle is verified
    if (d.available && d.devices.length > 0) return { kind: 'cuda', computeCapability: d.devices[0].computeCapability };
    return d.available ? 'no CUDA device' : d.reason;
  } catch (e) {
    return (e as Error).message;
  }
}

function verify(cache: Cache, prefix: string | undefined, json: boolean, checkSources: boolean): number {
  let bundles = listBundles(cache);
  if (prefix !== undefined) {
    const b = find(cache, prefix);
    if (!b) return 1;
    bundles = [b];
  }
  const cpu = cpuHost();
  let cuda: Host | string | undefined;
  const results = bundles.map((b) => {
    const kind = parseTarget(b.manifest?.guards.target ?? '')?.kind;
    const host = kind === 'cuda' ? (cuda ??= cudaHost()) : cpu;
    const note = typeof host === 'string' ? `target not checked: ${host}` : undefined;
    const result: VerifyResult = verifyBundle(b.dir, { key: b.key, namespace: b.namespace, checkSources, checkOwner: b.source === 'cache', ...(typeof host === 'string' ? {} : { host }) });
    return { bundle: b, result, note };
  });
  const failed = results.filter((r) => !r.result.ok).length;
  if (json) {
    const rows = results.map(({ bundle: b, result: r, note }) => ({
      namespace: b.namespace,
      key: b.key,
      source: b.source,
      dir: b.dir,
      ok: r.ok,
      ...(r.ok ? {} : { reason: r.reason, detail: r.detail }),
      note: note ?? null,
    }));
    console.log(JSON.stringify(rows, null, 2));
  } else {
    for (const { bundle: b, result: r, note } of results) {
      const id = `${b.namespace}/${b.key.slice(0, 12)} (${b.source})`;
      console.log(r.ok ? `ok    ${id}${note ? `  [${note}]` : ''}` : `FAIL  ${id}  ${r.reason}: ${r.detail}`);
    }
    console.log(results.length === 0 ? 'no bundles to verify' : `\n${results.length - failed} ok, ${failed} failed`);
  }
  return failed > 0 ? 1 : 0;
}

/** `--max-bytes N`: a byte count, or a usage error. */
function maxBytesFlag(text: string): number {
  try {
    return parseBytes(text);
  } catch {
    throw new UsageError(`--max-bytes needs a byte count (e.g. 2G, 500M, 1048576; 0: every unlocked bundle), not '${text}'`);
  }
}

function prune(open: (cap?: number) => Cache, flags: Map<string, string | true>, json: boolean): number {
  const maxFlag = flags.get('--max-bytes');
  const ageFlag = flags.get('--older-than');
  // The flags first: a usage error whatever state the cache is in.
  const capFlag = typeof maxFlag === 'string' ? maxBytesFlag(maxFlag) : undefined;
  let olderThanMs: number | undefined;
  if (typeof ageFlag === 'string') {
    const days = Number(ageFlag);
    if (!Number.isFinite(days) || days < 0) throw new UsageError(`--older-than needs a number of days, not '${ageFlag}'`);
    olderThanMs = days * 86_400_000;
  }
  const cache = open(capFlag); // an explicit cap stands in for KILN_CACHE_MAX_BYTES, which is then not read
  if (cache.readOnly) {
    console.error(`kiln cache: ${cache.cacheDir} is not writable; nothing pruned`);
    return 1;
  }
  // An explicit cap is taken as given (0 empties the cache of unlocked bundles); without flags, the cache's own cap (none when 0).
  const maxBytes = capFlag ?? (ageFlag === undefined && cache.maxBytes > 0 ? cache.maxBytes : undefined);
  const dryRun = flags.has('--dry-run');
  const r = evictBundles(cache, { ...(maxBytes !== undefined ? { maxBytes } : {}), ...(olderThanMs !== undefined ? { olderThanMs } : {}), dryRun });
  if (json) {
    console.log(JSON.stringify({ dryRun, removed: r.removed.map((b) => ({ namespace: b.namespace, key: b.key, bytes: b.bytes })), freedBytes: r.freedBytes, remainingBytes: r.remainingBytes }, null, 2));
    return 0;
  }
  for (const b of r.removed) console.log(`${dryRun ? 'would remove' : 'removed'}  ${b.namespace}/${b.key.slice(0, 12)}  ${human(b.bytes)}  last used ${ago(b.lastUsed)}`);
  console.log(`${dryRun ? 'would free' : 'freed'} ${human(r.freedBytes)}; ${human(r.remainingBytes)} remain in ${cache.cacheDir}`);
  return 0;
}

function clear(cache: Cache, yes: boolean): number {
  const bundles = listBundles(cache, { shipped: false, manifests: false });
  const bytes = bundles.reduce((s, b) => s + b.bytes, 0);
  if (!yes) {
    console.log(`would remove ${bundles.length} bundles (${human(bytes)}) from ${cache.cacheDir}; run \`kiln cache clear --yes\` to do it`);
    return 1;
  }
  if (cache.readOnly) {
    console.error(`kiln cache: ${cache.cacheDir} is not writable; nothing removed`);
    return 1;
  }
  clearCache(cache.cacheDir);
  console.log(`removed ${bundles.length} bundles (${human(bytes)}) from ${cache.cacheDir}`);
  return 0;
}
