/**
 * A compiled program as bundle files and back: graph.json (the optimized graph — constants,
 * symbol bindings, output structure — and the launch plan, as data), kernels.so and
 * kernels.cpp for the CPU; for CUDA, kernels.cubin (or .ptx) and kernels.cu, and graph.json's
 * `cuda` section (cuda-bundle.ts, required only for CUDA documents). Also the source-file
 * guards and the root they are recorded against. Loading needs only lib/ir, the arena
 * planner and a runtime: no tracer, passes, renderer or compiler.
 */
import { readFileSync, statSync } from 'fs';
import { dirname, isAbsolute, join, relative, sep } from 'path';
import { artifactPath, readArtifact, type PublishFile, type SourceGuard, type VerifiedBundle } from '../cache';
import type { Graph } from '../ir/graph';
import type { LaunchPlan } from '../ir/plan';
import { deserializeGraph, serializeGraph, type SerializedGraph } from '../ir/serialize';
import { arenaLayout } from '../passes/memory';
import { CpuProgram } from '../runtime/cpu';
import { FormatError } from '../util/errors';
import { sha256Hex } from '../util/hash';
import type { CudaBundleParts, CudaProgramDocument } from './cuda-bundle';
import type { CompiledProgram } from './program';

/**
 * graph.json's format marker and version (bump when the shape every device shares changes).
 * A device's own part is versioned by itself: CUDA's `cuda.version` (cuda-bundle.ts).
 */
export const PROGRAM_FORMAT = 'kiln-program';
export const PROGRAM_VERSION = 1;

/** What graph.json holds for every device. */
export interface ProgramDocumentBase {
  format: typeof PROGRAM_FORMAT;
  version: number;
  kernels: number;
  /** The optimized graph; call sites are dropped (the manifest's guards name the files). */
  graph: SerializedGraph;
  /** The launch plan (CUDA: with each step's grid, block and dynamic shared memory). */
  plan: LaunchPlan;
}

/** graph.json of a CPU program. */
export interface CpuProgramDocument extends ProgramDocumentBase {
  device: 'cpu';
  /** The library's entry point: `entry(void** bufs, const int64_t* syms)` runs every step. */
  entry: 'kiln_run';
}

/** graph.json: everything besides the kernels that running a program needs. */
export type ProgramDocument = CpuProgramDocument | CudaProgramDocument;

function documentBase(graph: Graph, plan: LaunchPlan, kernels: number): ProgramDocumentBase {
  return { format: PROGRAM_FORMAT, version: PROGRAM_VERSION, kernels, graph: { ...serializeGraph(graph), files: [], sites: [] }, plan };
}

/** The bundle files of a CPU program built in a work dir holding kernels.so. */
export function programFiles(program: CompiledProgram, soBytes: Uint8Array): PublishFile[] {
  const doc: CpuProgramDocument = { ...documentBase(program.graph, program.plan, program.kernels), device: 'cpu', entry: 'kiln_run' };
  return [
    { name: 'graph.json', data: JSON.stringify(doc) },
    { name: 'kernels.so', data: soBytes },
    { name: 'kernels.cpp', data: program.source },
  ];
}

/** The bundle files of a CUDA program: graph.json, kernels.cubin (or kernels.ptx), kernels.cu. */
export function cudaProgramFiles(parts: CudaBundleParts): PublishFile[] {
  const { section, files } = cudaBundle().cudaBundleFiles(parts);
  const doc: CudaProgramDocument = { ...documentBase(parts.graph, parts.plan, parts.kernels), device: 'cuda', cuda: section };
  return [{ name: 'graph.json', data: JSON.stringify(doc) }, ...files];
}

// CUDA's half of the format loads with the first CUDA bundle: a CPU process never loads the CUDA runtime.
let cudaBundleModule: typeof import('./cuda-bundle') | undefined;
function cudaBundle(): typeof import('./cuda-bundle') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: CPU programs never need the CUDA runtime
  cudaBundleModule ??= require('./cuda-bundle') as typeof import('./cuda-bundle');
  return cudaBundleModule;
}

function bad(bundle: VerifiedBundle, msg: string): never {
  throw new FormatError('KILN_BAD_PROGRAM', `graph.json in ${bundle.dir}: ${msg}`);
}

function parseDocument(bundle: VerifiedBundle): ProgramDocument {
  let doc: unknown;
  try {
    doc = JSON.parse(readArtifact(bundle, 'graph.json').toString('utf8'));
  } catch (e) {
    if (e instanceof FormatError) throw e;
    bad(bundle, `not valid JSON (${(e as Error).message})`);
  }
  const d = doc as Partial<ProgramDocument> | null;
  if (typeof d !== 'object' || d === null || d.format !== PROGRAM_FORMAT) bad(bundle, `format is not "${PROGRAM_FORMAT}"`);
  if (d.version !== PROGRAM_VERSION) bad(bundle, `version ${JSON.stringify(d.version)}; this kiln reads version ${PROGRAM_VERSION}`);
  if (d.device !== 'cpu' && d.device !== 'cuda') bad(bundle, `device ${JSON.stringify(d.device)} is not 'cpu' or 'cuda'`);
  if (d.device === 'cpu' && d.entry !== 'kiln_run') bad(bundle, `entry ${JSON.stringify(d.entry)} is not 'kiln_run'`);
  if (!Number.isSafeInteger(d.kernels)) bad(bundle, 'kernels must be an integer');
  const p = d.plan as Partial<LaunchPlan> | undefined;
  const ok = p && p.version === 1 && Array.isArray(p.symbols) && Array.isArray(p.buffers) && Array.isArray(p.steps) && Array.isArray(p.outputs);
  if (!ok) bad(bundle, 'plan is not a version-1 launch plan');
  return d as ProgramDocument;
}

/** A verified bundle's graph.json, checked as far as its format, version, device and plan (for `kiln cache show`). */
export function readProgramDocument(bundle: VerifiedBundle): ProgramDocument {
  return parseDocument(bundle);
}

function graphOf(bundle: VerifiedBundle, doc: ProgramDocument): Graph {
  try {
    return deserializeGraph(doc.graph);
  } catch (e) {
    bad(bundle, (e as Error).message);
  }
}

/**
 * Loads a verified bundle of either device: parses graph.json (re-checking its sha256),
 * rebuilds the graph, then dlopens kernels.so (CPU) or checks the CUDA section and image
 * and loads it onto the GPU (CudaError KILN_NO_CUDA_DEVICE without one). Throws FormatError
 * or the loader's error when the bundle cannot be used; the engine then discards it and
 * compiles once.
 */
export async function loadBundle(bundle: VerifiedBundle): Promise<CompiledProgram> {
  const t0 = performance.now();
  const doc = parseDocument(bundle);
  if (doc.device === 'cpu') return loadCpu(bundle, doc, t0);
  return cudaBundle().loadCudaBundle(bundle, doc, graphOf(bundle, doc), t0);
}

function loadCpu(bundle: VerifiedBundle, doc: CpuProgramDocument, t0: number): CompiledProgram {
  const graph = graphOf(bundle, doc);
  const plan = doc.plan;
  const cpu = CpuProgram.load(artifactPath(bundle, 'kernels.so'), { plan, symbols: graph.symbols, constants: graph.constants, layout: arenaLayout });
  const loadMs = performance.now() - t0;
  let source: string | undefined;
  return {
    device: 'cpu',
    graph,
    plan,
    kernels: doc.kernels,
    // Read on demand: a warm start has no use for the source text.
    get source(): string {
      source ??= readArtifact(bundle, 'kernels.cpp').toString('utf8');
      return source;
    },
    times: { lowerMs: 0, renderMs: 0, compileMs: 0, loadMs },
    execute: (inputs) => cpu.run(inputs),
  };
}

// ---- source guards ---------------------------------------------------------------------

const rootMemo = new Map<string, string | undefined>();

/**
 * The source root for a file: the nearest directory above it that holds a package.json (the
 * package the code belongs to), else undefined. Guards under the root are recorded relative
 * to it, so a bundle shipped inside a package verifies wherever the package is installed.
 */
export function packageRootOf(file: string): string | undefined {
  const start = dirname(file);
  if (rootMemo.has(start)) return rootMemo.get(start);
  let root: string | undefined;
  for (let dir = start; ; dir = dirname(dir)) {
    try {
      if (statSync(join(dir, 'package.json')).isFile()) {
        root = dir;
        break;
      }
    } catch {
      // keep climbing
    }
    if (dirname(dir) === dir) break;
  }
  rootMemo.set(start, root);
  return root;
}

/**
 * Content guards for the user source files a trace went through: sha256 of each file,
 * its path relative to `root` when inside it, else absolute. Files that cannot be read
 * (deleted since, not on disk) get no guard: a guard that can never pass would make every
 * start rebuild.
 */
export function sourceGuards(files: readonly string[], root: string | undefined): SourceGuard[] {
  const guards: SourceGuard[] = [];
  for (const file of [...new Set(files)].sort()) {
    let text: Buffer;
    try {
      text = readFileSync(file);
    } catch {
      continue;
    }
    const rel = root !== undefined ? relative(root, file) : '';
    const inside = rel !== '' && !rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel);
    guards.push({ path: inside ? rel.split(sep).join('/') : file, sha256: sha256Hex(text) });
  }
  return guards;
}
