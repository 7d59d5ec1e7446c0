/**
 * `kiln doctor`: what kiln found on this machine, which backend `device: 'auto'` runs on,
 * and what works there: running compiled programs (bundles shipped with an app or built
 * earlier load without a compiler: docs/BUNDLES.md, warm path) and compiling new ones (the
 * C++ compiler for the CPU, NVRTC for a GPU). Exit code 0 when programs can run, even if
 * only from bundles (a GPU without NVRTC under KILN_DEVICE=cuda included); 1 when nothing
 * can run (with what to do).
 */
import { cacheDir, dirStatus } from '../cache/dirs';
import { cpuTarget } from '../cache/target';
import { addonInfo, type NativeInfo } from '../runtime/native';
import { autoBackend } from '../api/compile';
import type { Choice } from '../runtime/select';
import { cpuInfo, findCxx } from '../runtime/toolchain';
import { KilnError } from '../util/errors';

export interface DoctorReport {
  node: string;
  addon: NativeInfo['addon'] | { error: string };
  driver: NativeInfo['driver'];
  nvrtc: NativeInfo['nvrtc'];
  cxx: ReturnType<typeof findCxx>;
  cpu: ReturnType<typeof cpuInfo>;
  cache: ReturnType<typeof dirStatus>;
  /** The backend `device: 'auto'` runs on (as kiln.compile resolves it: without looking for a compiler), or null with why. */
  backend: Choice;
  /** Whether that backend can load and run bundles (the addon loaded). */
  load: Ability;
  /** Whether that backend can compile new programs here (C++ compiler / NVRTC). */
  compile: Ability;
}

/** One thing kiln can or cannot do here, and why. */
export interface Ability {
  ok: boolean;
  reason: string;
}

/** Gathers the facts; never throws for a missing component. */
export function doctorReport(): DoctorReport {
  let native: NativeInfo | undefined;
  let addonError = '';
  try {
    native = addonInfo();
  } catch (e) {
    addonError = e instanceof KilnError ? e.message : String(e);
  }
  const driver: NativeInfo['driver'] = native?.driver ?? { available: false, reason: `the kiln addon did not load: ${addonError}` };
  const nvrtc: NativeInfo['nvrtc'] = native?.nvrtc ?? { available: false, reason: `the kiln addon did not load: ${addonError}`, tried: [] };
  const cxx = findCxx();
  return {
    node: process.version,
    addon: native?.addon ?? { error: addonError },
    driver,
    nvrtc,
    cxx,
    cpu: cpuInfo(),
    cache: dirStatus(cacheDir()),
    ...doctorVerdict({ addonError: native ? undefined : addonError, driver, nvrtc, cxx }),
  };
}

/** What the verdict is drawn from: the addon's error (undefined when it loaded), the driver, NVRTC, the C++ compiler. */
export interface DoctorFacts {
  addonError: string | undefined;
  driver: NativeInfo['driver'];
  nvrtc: NativeInfo['nvrtc'];
  cxx: ReturnType<typeof findCxx>;
}

/**
 * The backend `device: 'auto'` runs on, as kiln.compile resolves it (`autoBackend`: the CPU
 * backend needs no compiler to run bundles; KILN_DEVICE=cuda on a GPU without NVRTC runs CUDA
 * bundles), whether it can run bundles (the addon loaded) and whether it can compile (the C++
 * compiler; NVRTC). Pure: no probe, no output.
 */
export function doctorVerdict(facts: DoctorFacts, env: NodeJS.ProcessEnv = process.env): Pick<DoctorReport, 'backend' | 'load' | 'compile'> {
  const { addonError, nvrtc, cxx } = facts;
  const chosen = autoBackend(facts, env);
  const backend: Choice = addonError === undefined || chosen.backend === null ? chosen : { backend: null, reason: `the kiln addon did not load: ${addonError}` };
  const load: Ability = backend.backend
    ? { ok: true, reason: `${backend.backend === 'cpu' ? 'CPU' : 'CUDA'} bundles (shipped with an app, or built earlier) load and run` }
    : { ok: false, reason: backend.reason };
  let compile: Ability;
  if (backend.backend === 'cpu') compile = cxx.available ? { ok: true, reason: `with ${cxx.path}` } : { ok: false, reason: cxx.reason };
  else if (backend.backend === 'cuda') compile = nvrtc.available ? { ok: true, reason: `with NVRTC ${nvrtc.path}` } : { ok: false, reason: `no NVRTC (${nvrtc.reason})` };
  else compile = { ok: false, reason: backend.reason };
  return { backend, load, compile };
}

/** `kiln doctor`'s exit status: 0 when programs can run here (also from bundles alone), 1 when nothing can. */
export function doctorExitCode(r: Pick<DoctorReport, 'backend'>): number {
  return r.backend.backend ? 0 : 1;
}

/** What `kiln doctor` says on stderr: what to do when nothing runs, or what to install to compile; undefined when all is well. */
export function doctorAdvice(r: Pick<DoctorReport, 'addon' | 'backend' | 'compile'>): string | undefined {
  if (!r.backend.backend) {
    return (
      'kiln cannot run programs here. ' +
      ('error' in r.addon
        ? 'Its native addon must load first: reinstall kiln, or run `npm run build:native` in a checkout.'
        : 'For the CPU backend leave KILN_DEVICE unset or set it to cpu; for a GPU install the NVIDIA driver and NVRTC (the CUDA toolkit, or `pip install nvidia-cuda-nvrtc`).')
    );
  }
  if (r.compile.ok) return undefined;
  const what =
    r.backend.backend === 'cuda'
      ? 'a first call without a bundle fails with KILN_NVRTC_UNAVAILABLE. To compile, install NVRTC (the CUDA toolkit, or `pip install nvidia-cuda-nvrtc`) or point KILN_NVRTC_PATH at it.'
      : 'a first call without a bundle fails with KILN_NO_CXX. To compile, install a C++ compiler (g++ or clang++) or set CXX.';
  return `kiln can run bundles here (shipped with an app, or built on another machine of the same target) but cannot compile new programs: ${what}`;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Renders the report as aligned lines. */
export function formatDoctor(r: DoctorReport): string {
  const lines: [string, string][] = [];
  const add = (k: string, v: string) => lines.push([k, v]);
  add('node', `${r.node} (${process.platform}-${process.arch}, N-API ${process.versions.napi})`);
  add('addon', 'error' in r.addon ? `NOT LOADED: ${r.addon.error}` : `${r.addon.source} ${r.addon.path}`);
  if (r.driver.available) {
    const v = r.driver.version;
    add('cuda driver', `${Math.floor(v / 1000)}.${(v % 1000) / 10} (${r.driver.devices.length} GPU${r.driver.devices.length === 1 ? '' : 's'})`);
    for (const d of r.driver.devices) {
      add(`  gpu ${d.index}`, `${d.name}, sm_${d.computeCapability.join('')}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, ${d.smCount} SMs`);
    }
  } else add('cuda driver', `not available: ${r.driver.reason}`);
  if (r.nvrtc.available) {
    add('nvrtc', `${r.nvrtc.version.join('.')} at ${r.nvrtc.path} (found by ${r.nvrtc.foundBy})`);
    add('  archs', r.nvrtc.archs.join(' '));
  } else add('nvrtc', `not available: ${r.nvrtc.reason}`);
  add('c++ compiler', r.cxx.available ? `${r.cxx.path} — ${r.cxx.version} (${r.cxx.machine})` : `not available: ${r.cxx.reason}`);
  add('cpu', `${r.cpu.model}, ${r.cpu.cores} cores, ${r.cpu.features.join(' ') || 'no extra ISA features detected'}`);
  add('  target', `${cpuTarget(r.cpu.arch, r.cpu.features)} (the ISA that CPU bundles compiled here use; a CPU bundle loads here when its target needs no more)`);
  const c = r.cache;
  add('cache dir', `${c.path} (${c.exists ? `${mib(c.bytes)} in ${c.files} files` : 'not created yet'}, ${c.writable ? 'writable' : 'NOT writable: bundles will be read only'})`);
  add('backend (auto)', r.backend.backend ? `${r.backend.backend}: ${r.backend.reason}` : `NONE: ${r.backend.reason}`);
  if (r.backend.backend) {
    add('  run bundles', `yes: ${r.load.reason}`);
    add('  compile', r.compile.ok ? `yes: ${r.compile.reason}` : `NO: ${r.compile.reason}; only bundles built earlier or elsewhere can run`);
  }
  const width = Math.max(...lines.map(([k]) => k.length)) + 2;
  return lines.map(([k, v]) => k.padEnd(width) + v).join('\n');
}

/** Runs `kiln doctor`; returns the exit code. */
export function doctor(args: string[]): number {
  const stray = args.find((a) => a !== '--json');
  if (stray !== undefined) {
    console.error(`kiln doctor: ${stray.startsWith('-') ? `unknown option ${stray}` : `unexpected argument '${stray}'`}\n\nUsage: ${DOCTOR_USAGE}`);
    return 2;
  }
  const report = doctorReport();
  if (args.includes('--json')) console.log(JSON.stringify(report, null, 2));
  else console.log(formatDoctor(report));
  const advice = doctorAdvice(report);
  if (advice !== undefined) console.error(`\n${advice}`);
  return doctorExitCode(report);
}

/** `kiln doctor --help`. */
export const DOCTOR_USAGE = `kiln doctor [--json]

Shows what kiln found on this machine (addon, CUDA driver, GPUs, NVRTC, C++ compiler, CPU,
cache dir), the backend \`device: 'auto'\` runs on, and what works there:
  run bundles   programs compiled earlier or elsewhere (an app's shipped bundles, the cache)
                load and run: this needs only kiln's addon, no compiler
  compile       new programs can be compiled: the C++ compiler (CPU) or NVRTC (GPU)

  --json   print the report as JSON

Exit status 0 when programs can run here, also when only bundles can (no C++ compiler, or
a GPU without NVRTC under KILN_DEVICE=cuda: the report says "compile  NO" and stderr says
what to install); 1 when nothing can run (the addon did not load, or KILN_DEVICE=cuda on a
machine without a GPU).`;
