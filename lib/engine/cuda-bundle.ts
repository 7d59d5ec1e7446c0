/**
 * A CUDA program as bundle files and back: kernels.cubin (or kernels.ptx), kernels.cu, and
 * graph.json with `device: 'cuda'` and a `cuda` section — the target, the autotuner's table
 * and ptxas's per-kernel resources — beside the CUDA launch plan (grid, block, shared
 * memory per step). Loading is the warm path: it needs the driver, never NVRTC, the passes
 * or the renderer (bundle.ts requires this file only for CUDA documents).
 */
import { readArtifact, type PublishFile, type VerifiedBundle } from '../cache';
import type { Graph } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import type { CudaTarget } from '../runtime/cuda-arch';
import { readCubinArch } from '../runtime/cuda-driver';
import { FormatError } from '../util/errors';
import type { ProgramDocumentBase } from './bundle';
import { cudaDevice, imageFitsTarget } from './bundle-target';
import { cudaTarget, loadCudaProgram, type CudaCompiledProgram, type CudaKernelResources, type CudaTuning } from './cuda-load';

/** Version of graph.json's `cuda` section (bump when its shape changes). */
export const CUDA_SECTION_VERSION = 1;

/** graph.json's CUDA part: what was built and how, beside the CUDA plan. */
export interface CudaSection {
  version: number;
  /**
   * `sm_90` (kernels.cubin) or `compute_90` (kernels.ptx): the manifest's target, or PTX of an
   * older architecture for an `sm_XY` the NVRTC that built it did not know (`imageFitsTarget`).
   */
  target: string;
  /** The image artifact. */
  image: 'kernels.cubin' | 'kernels.ptx';
  /** Each kernel's configuration by name (the autotuner's choice, or the heuristic's). */
  tuning: CudaTuning;
  /** ptxas's report per kernel (registers, spills, shared memory) with its launch shape. */
  resources: Record<string, CudaKernelResources>;
}

/** graph.json of a CUDA program. */
export interface CudaProgramDocument extends ProgramDocumentBase {
  device: 'cuda';
  cuda: CudaSection;
}

/** What a CUDA bundle holds, from a freshly built (`buildCuda`) or compiled program. */
export interface CudaBundleParts {
  /** The optimized graph (call sites are dropped when serialized). */
  readonly graph: Graph;
  /** The CUDA plan: steps with grid and block. */
  readonly plan: LaunchPlan;
  readonly kernels: number;
  /** kernels.cu */
  readonly source: string;
  readonly image: Uint8Array;
  readonly target: CudaTarget;
  readonly tuning: CudaTuning;
  readonly resources: Record<string, CudaKernelResources>;
}

const imageName = (t: CudaTarget): CudaSection['image'] => (t.kind === 'cubin' ? 'kernels.cubin' : 'kernels.ptx');

/** graph.json's CUDA section and the files beside it (graph.json itself is the caller's: it holds the graph). */
export function cudaBundleFiles(p: CudaBundleParts): { section: CudaSection; files: PublishFile[] } {
  const section: CudaSection = { version: CUDA_SECTION_VERSION, target: p.target.target, image: imageName(p.target), tuning: p.tuning, resources: p.resources };
  return { section, files: [{ name: section.image, data: p.image }, { name: 'kernels.cu', data: p.source }] };
}

function bad(bundle: VerifiedBundle, msg: string): never {
  throw new FormatError('KILN_BAD_PROGRAM', `graph.json in ${bundle.dir}: ${msg}`);
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Checks a CUDA document against the verified manifest and its image — the section's shape,
 * its target that of the manifest (which the target guard checked against the device),
 * every plan step with a grid and block, a cubin whose ELF header names that architecture —
 * and returns the image. Nothing is handed to the driver before this passes.
 */
export function checkCudaDocument(bundle: VerifiedBundle, doc: CudaProgramDocument): { target: CudaTarget; image: Buffer } {
  const c: unknown = doc.cuda;
  if (!isRecord(c)) bad(bundle, 'a CUDA program needs a cuda section');
  if (c.version !== CUDA_SECTION_VERSION) bad(bundle, `cuda.version ${JSON.stringify(c.version)}; this kiln reads version ${CUDA_SECTION_VERSION}`);
  if (typeof c.target !== 'string' || !/^(sm|compute)_\d+a?$/.test(c.target)) bad(bundle, `cuda.target ${JSON.stringify(c.target)} is not a CUDA target`);
  const target = cudaTarget(c.target);
  if (!imageFitsTarget(bundle.manifest.guards.target, target)) bad(bundle, `cuda.target ${c.target} does not run as the manifest's target ${bundle.manifest.guards.target}`);
  const name = imageName(target);
  if (c.image !== name) bad(bundle, `cuda.image must be ${name} for ${target.target}, got ${JSON.stringify(c.image)}`);
  if (!isRecord(c.tuning) || !isRecord(c.resources)) bad(bundle, 'cuda.tuning and cuda.resources must be objects');
  doc.plan.steps.forEach((s, i) => {
    if (!Array.isArray(s.grid) || !Array.isArray(s.block)) bad(bundle, `plan step ${i} (${s.kernel}) has no grid or block: not a CUDA plan`);
  });
  const image = readArtifact(bundle, name);
  if (target.kind === 'cubin') {
    let sm: number;
    try {
      sm = readCubinArch(image).sm;
    } catch (e) {
      bad(bundle, `${name} is not a cubin (${(e as Error).message})`);
    }
    if (sm !== target.arch) bad(bundle, `${name} is built for sm_${sm}, but the bundle's target is ${target.target}`);
  }
  return { target, image };
}

/**
 * Loads a verified CUDA bundle onto GPU 0 (`t0`: when loading began, for `times.loadMs`): CudaError KILN_NO_CUDA_DEVICE (what is missing)
 * on a machine without one, FormatError KILN_BAD_PROGRAM when the document or image is not
 * what the manifest says; then the driver loads the image and constants are uploaded.
 */
export async function loadCudaBundle(bundle: VerifiedBundle, doc: CudaProgramDocument, graph: Graph, t0 = performance.now()): Promise<CudaCompiledProgram> {
  cudaDevice(0);
  const { target, image } = checkCudaDocument(bundle, doc);
  const loaded = await loadCudaProgram({ image, graph, plan: doc.plan, kernels: doc.kernels, target, tuning: doc.cuda.tuning, resources: doc.cuda.resources });
  let source: string | undefined;
  // Read on demand: a warm start has no use for the source text.
  return Object.defineProperty({ ...loaded, times: { ...loaded.times, loadMs: performance.now() - t0 } }, 'source', {
    get: () => (source ??= readArtifact(bundle, 'kernels.cu').toString('utf8')),
    enumerable: true,
  });
}
