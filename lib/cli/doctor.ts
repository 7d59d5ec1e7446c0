/**
 * `kiln doctor`: what kiln found on this machine and which backend `device: 'auto'`
 * picks. Exit code 0 when a backend is usable, 1 otherwise (with what to do).
 */
import { cacheDir, dirStatus } from '../cache/dirs';
import { addonInfo, type NativeInfo } from '../runtime/native';
import { chooseBackend } from '../runtime/select';
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
  backend: ReturnType<typeof chooseBackend>;
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
    backend: chooseBackend({ driver, nvrtc, cxx }),
  };
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
  const c = r.cache;
  add('cache dir', `${c.path} (${c.exists ? `${mib(c.bytes)} in ${c.files} files` : 'not created yet'}, ${c.writable ? 'writable' : 'NOT writable: bundles will be read only'})`);
  add('backend (auto)', r.backend.backend ? `${r.backend.backend}: ${r.backend.reason}` : `NONE: ${r.backend.reason}`);
  const width = Math.max(...lines.map(([k]) => k.length)) + 2;
  return lines.map(([k, v]) => k.padEnd(width) + v).join('\n');
}

/** Runs `kiln doctor`; returns the exit code. */
export function doctor(args: string[]): number {
  const report = doctorReport();
  if (args.includes('--json')) console.log(JSON.stringify(report, null, 2));
  else console.log(formatDoctor(report));
  if (!report.backend.backend) {
    console.error(
      '\nkiln cannot run here. For the CPU backend install a C++ compiler (g++ or clang++) or set CXX;' +
        ' for a GPU install the NVIDIA driver and NVRTC (the CUDA toolkit, or `pip install nvidia-cuda-nvrtc`).',
    );
    return 1;
  }
  return 0;
}
