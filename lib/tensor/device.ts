/**
 * Where a 'cuda' tensor's data lives. With a GPU present, `kiln.tensor(data, shape, dtype,
 * 'cuda')` copies the data into GPU memory at once (a blocking copy) and keeps no host copy;
 * a compiled function's CUDA outputs are device memory from the start. Without a GPU (or
 * with an addon too old for blocking copies) a 'cuda' tensor keeps its data on the host, is
 * computed eagerly by the interpreter as ever, and the runtime uploads it per call.
 */
import { DeviceTensor } from '../runtime/cuda';
import { hasSyncCopies } from '../runtime/cuda-driver';
import { addon } from '../runtime/native';
import type { DType, Storage } from '../ir';

let placement: boolean | undefined;

/**
 * True when 'cuda' tensors are placed in GPU memory: a CUDA device was found and the addon
 * has blocking copies. Asked once per process (the driver loads on the first ask).
 */
export function gpuPlacement(): boolean {
  if (placement === undefined) {
    try {
      const driver = addon().info().driver;
      placement = driver.available && driver.devices.length > 0 && hasSyncCopies();
    } catch {
      placement = false; // no addon: nothing can reach a GPU
    }
  }
  return placement;
}

/** A copy of host data in GPU memory (device 0), made now; null where there is no GPU. */
export function upload(dtype: DType, shape: readonly number[], data: Storage): DeviceTensor | null {
  return gpuPlacement() ? DeviceTensor.fromHostSync({ dtype, shape: [...shape], data }) : null;
}
