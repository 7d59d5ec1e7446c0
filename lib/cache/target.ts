/**
 * Bundle targets and whether a host can run them. A target is a self-describing string:
 * `cpu-<arch>[+<isa feature>...]` (e.g. `cpu-x64+avx2+fma`) for the C++ backend,
 * `sm_XY` (a cubin: runs only on compute capability X.Y) or `compute_XY` (PTX: runs on
 * X.Y and newer through the driver's JIT) for CUDA; an `a` suffix (`sm_90a`) marks
 * arch-specific code that runs on exactly that capability.
 */

export type Target =
  | { kind: 'cpu'; arch: string; features: string[] }
  | { kind: 'cuda'; output: 'cubin' | 'ptx'; cc: number; archSpecific: boolean };

/** The machine a bundle is about to run on; `computeCapability` as 90 or [9, 0]. */
export type Host =
  | { kind: 'cpu'; arch: string; features: readonly string[] }
  | { kind: 'cuda'; computeCapability: number | readonly [number, number] };

export type TargetCheck =
  | { ok: true }
  | { ok: false; reason: 'target-mismatch' | 'isa-missing' | 'compute-capability'; detail: string };

const CPU_RE = /^cpu-([a-z0-9_]+)((?:\+[a-z0-9_]+)*)$/;
const CUDA_RE = /^(sm|compute)_([1-9][0-9]{1,2})(a?)$/;

/** Parses a target string; undefined when it is not one. */
export function parseTarget(s: string): Target | undefined {
  const cpu = CPU_RE.exec(s);
  if (cpu) {
    const features = cpu[2] ? cpu[2].slice(1).split('+') : [];
    return { kind: 'cpu', arch: cpu[1], features };
  }
  const cuda = CUDA_RE.exec(s);
  if (cuda) return { kind: 'cuda', output: cuda[1] === 'sm' ? 'cubin' : 'ptx', cc: Number(cuda[2]), archSpecific: cuda[3] === 'a' };
  return undefined;
}

/** The CPU target string for an architecture and the ISA features the code uses (sorted, deduplicated). */
export function cpuTarget(arch: string, features: readonly string[]): string {
  const feats = [...new Set(features.map((f) => f.toLowerCase()))].sort();
  const s = ['cpu-' + arch.toLowerCase(), ...feats].join('+');
  if (!parseTarget(s)) throw new TypeError(`not a valid CPU target: ${s}`);
  return s;
}

/** "9.0" for 90. */
export function ccText(cc: number): string {
  return `${Math.floor(cc / 10)}.${cc % 10}`;
}

function hostCc(h: Extract<Host, { kind: 'cuda' }>): number {
  const c = h.computeCapability;
  return typeof c === 'number' ? c : c[0] * 10 + c[1];
}

/**
 * Whether `host` can run code built for `target`. CPU: same architecture and every ISA
 * feature the bundle was built with. CUDA: a cubin needs exactly its compute capability,
 * PTX needs the device at or above it (exactly it for arch-specific `a` targets).
 */
export function checkTarget(target: string, host: Host): TargetCheck {
  const t = parseTarget(target);
  if (!t) return { ok: false, reason: 'target-mismatch', detail: `unknown target '${target}'` };
  if (t.kind === 'cpu') {
    if (host.kind !== 'cpu') return { ok: false, reason: 'target-mismatch', detail: `bundle is for ${target}; this host runs CUDA` };
    if (t.arch !== host.arch) return { ok: false, reason: 'target-mismatch', detail: `bundle was built for ${t.arch}; this CPU is ${host.arch}` };
    const have = new Set(host.features);
    const lacking = t.features.filter((f) => !have.has(f));
    if (lacking.length > 0) {
      return { ok: false, reason: 'isa-missing', detail: `bundle was built for ${target}; this CPU lacks ${lacking.join(', ')}` };
    }
    return { ok: true };
  }
  if (host.kind !== 'cuda') return { ok: false, reason: 'target-mismatch', detail: `bundle is for CUDA ${target}; this host runs the CPU backend` };
  const dev = hostCc(host);
  const exact = t.output === 'cubin' || t.archSpecific;
  if (exact ? dev === t.cc : dev >= t.cc) return { ok: true };
  const need = exact ? `compute ${ccText(t.cc)}` : `compute ${ccText(t.cc)} or newer`;
  return {
    ok: false,
    reason: 'compute-capability',
    detail: `bundle ${target} expects ${need}, this device is compute ${ccText(dev)}; rebuild for sm_${dev}`,
  };
}
