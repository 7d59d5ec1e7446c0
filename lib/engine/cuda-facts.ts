/**
 * What `device: 'auto'` needs to know about CUDA, cheaply (warm path: no renderer, no
 * compiler): whether the driver reports a GPU, and — only then — whether NVRTC is there.
 * The facts go to `chooseBackend` (lib/runtime/select.ts), which prefers CUDA when both
 * hold: CUDA programs are then obtained like CPU ones, from bundles or compiled and
 * published (a GPU machine without NVRTC runs `device: 'cuda'` from shipped bundles, but
 * `auto` does not pick a backend that could not compile on a miss).
 */
import type { BackendFacts } from '../runtime/select';
import { addon, addonInfo } from '../runtime/native';

type Fact = BackendFacts['driver'] | BackendFacts['nvrtc'];

/** The driver and NVRTC facts of this machine for backend selection. */
export function cudaFacts(): { driver: BackendFacts['driver']; nvrtc: BackendFacts['nvrtc'] } {
  const missing = (reason: string): { driver: Fact & { available: false }; nvrtc: Fact & { available: false } } => ({
    driver: { available: false, reason },
    nvrtc: { available: false, reason },
  });
  let driver: ReturnType<ReturnType<typeof addon>['info']>['driver'];
  try {
    driver = addon().info().driver;
  } catch (e) {
    return missing(`kiln's native addon did not load (${(e as Error).message})`);
  }
  if (!driver.available) return missing(driver.reason);
  if (driver.devices.length === 0) return { driver: { available: true, devices: [] }, nvrtc: { available: false, reason: 'no GPU' } };
  const nvrtc = addonInfo().nvrtc; // searched only on a machine with a GPU
  return {
    driver: { available: true, devices: driver.devices },
    nvrtc: nvrtc.available ? { available: true, path: nvrtc.path } : { available: false, reason: nvrtc.reason },
  };
}
