/**
 * Which backend `device: 'auto'` runs on, and why. CUDA needs a driver with at least one
 * device and NVRTC; the CPU backend needs a C++ compiler. The reason is shown by
 * `kiln doctor` and in errors, so it names what was missing.
 *
 * `auto` asks for NVRTC although a CUDA bundle loads without it: a GPU machine without NVRTC
 * could run shipped bundles but fail on the first miss, where the CPU backend would compile.
 * `KILN_DEVICE=cuda`, like an explicit `device: 'cuda'`, needs only the GPU: bundles load,
 * and a call that must compile says it needs NVRTC.
 */
import { ArgumentError, CudaError, KilnError } from '../util/errors';
import { readEnv } from '../util/env';

export type Backend = 'cpu' | 'cuda';

export interface BackendFacts {
  driver: { available: true; devices: { name: string }[] } | { available: false; reason: string };
  nvrtc: { available: true; path: string } | { available: false; reason: string };
  cxx: { available: true; path: string } | { available: false; reason: string };
}

/** The backend to use and why; none, when nothing usable (`wanted`: the one KILN_DEVICE forced, which is missing). */
export type Choice = { backend: Backend; reason: string } | { backend: null; reason: string; wanted?: Backend };

/** Picks the backend for `device: 'auto'` (or `KILN_DEVICE` when set). */
export function chooseBackend(facts: BackendFacts, env: NodeJS.ProcessEnv = process.env): Choice {
  const forced = readEnv('KILN_DEVICE', env);
  if (forced !== undefined && forced !== 'auto' && forced !== 'cpu' && forced !== 'cuda') {
    throw new ArgumentError('KILN_BAD_DEVICE', `KILN_DEVICE=${forced} is not one of auto, cpu, cuda`);
  }
  const cuda = cudaProblem(facts);
  const cpu = facts.cxx.available ? undefined : facts.cxx.reason;
  if (forced === 'cuda') {
    if (!cuda) return { backend: 'cuda', reason: 'KILN_DEVICE=cuda' };
    if (facts.driver.available && facts.driver.devices.length > 0 && !facts.nvrtc.available) {
      return { backend: 'cuda', reason: `KILN_DEVICE=cuda: ${facts.driver.devices[0].name} runs CUDA bundles, but NVRTC was not found (${facts.nvrtc.reason})` };
    }
    return { backend: null, reason: `KILN_DEVICE=cuda but ${cuda}`, wanted: 'cuda' };
  }
  if (forced === 'cpu') return cpu ? { backend: null, reason: `KILN_DEVICE=cpu but ${cpu}` } : { backend: 'cpu', reason: 'KILN_DEVICE=cpu' };
  if (!cuda && facts.driver.available) {
    return { backend: 'cuda', reason: `found ${facts.driver.devices[0].name} and NVRTC` };
  }
  if (!cpu) return { backend: 'cpu', reason: `${cuda}; the CPU backend will be used` };
  return { backend: null, reason: `no usable backend: ${cuda}; ${cpu}` };
}

function cudaProblem(facts: BackendFacts): string | undefined {
  if (!facts.driver.available) return `no CUDA driver (${facts.driver.reason})`;
  if (facts.driver.devices.length === 0) return 'the CUDA driver reports no GPU';
  if (!facts.nvrtc.available) return `a GPU was found but NVRTC was not (${facts.nvrtc.reason})`;
  return undefined;
}

/**
 * Throws a typed error when no backend is usable. KILN_DEVICE=cuda without a GPU is what
 * `device: 'cuda'` gives there: CudaError KILN_NO_CUDA_DEVICE.
 */
export function requireBackend(choice: Choice): Backend {
  if (choice.backend !== null) return choice.backend;
  if (choice.wanted === 'cuda') {
    throw new CudaError('KILN_NO_CUDA_DEVICE', `${choice.reason}. Unset KILN_DEVICE (or set it to cpu or auto); \`npx kiln doctor\` shows what kiln finds.`);
  }
  throw new KilnError('KILN_NO_BACKEND', `${choice.reason}. Run \`npx kiln doctor\` for details.`);
}
