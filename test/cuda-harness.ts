/**
 * Test harness for the CUDA renderer without a GPU: the shared case list
 * (scripts/gpu-check/cases.cjs) traced and lowered, rendered into a few large translation
 * units (kernel names prefixed per program, every candidate configuration of every kernel
 * as its own variant), compiled with the real NVRTC and checked through ptxas's report.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { CudaRenderer, renderCudaKernels } from '../lib/codegen/cuda';
import { CUDA_HELPERS } from '../lib/codegen/cuda-prelude';
import { allocStorage, decodeStorage, encodeStorage, type Storage } from '../lib/ir';
import type { LaunchPlan } from '../lib/ir/plan';
import { bufferElems, lower, type Program } from '../lib/passes';
import { candidateConfigs, defaultConfig, gpuPlan, partialsDType, type GpuConfig, type GpuFacts } from '../lib/passes/gpu';
import { evalGridDim, parseGridDim } from '../lib/runtime/cuda';
import { parsePtxasLog, type PtxasFunctionInfo } from '../lib/runtime/cuda-arch';
import { bindSymbols, interpret, type TensorData } from '../lib/runtime/interpreter';
import { cpuLoad, nvrtcCompile, type CpuLibrary } from '../lib/runtime/native';
import { close, type NumCase } from './codegen-harness';
import * as F from '../lib/tensor/functional';
import { tensor } from '../lib/tensor/tensor';
import { trace } from '../lib/tensor/trace';
import type { DType } from '../lib/ir';

/** One program of the shared case list: a C++ harness case whose generator gets the case list's own RNG. */
export type CudaCase = Omit<NumCase, 'gen'> & { gen?: (input: number, dtype: DType, n: number, rng: unknown) => number[] };

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the case list is plain JS shared with the GPU suite
const shared = require('../scripts/gpu-check/cases.cjs') as {
  cases(m: { F: typeof F; tensor: typeof tensor }): Record<string, CudaCase[]>;
  Rng: new (seed: number) => unknown;
  seedOf(s: string): number;
  defaultGen(i: number, dtype: DType, n: number, rng: unknown): number[];
};
const { Rng, seedOf, defaultGen } = shared;

/** The case groups (elementwise, reductions, views, matmuls, dynamic, composites). */
export function cudaCases(): Record<string, CudaCase[]> {
  return shared.cases({ F, tensor });
}

/** A lowered case. */
export interface Lowered {
  c: CudaCase;
  program: Program;
}

export function lowerCase(c: CudaCase): Lowered {
  return { c, program: lower(trace(c.fn, c.specs, { dynamic: c.dynamic ?? {} })) };
}

/** A C-identifier prefix for program `i` of a unit. */
export const prefixOf = (i: number): string => `p${i}_`;

/** One rendered variant: which case, kernel and configuration it is. */
export interface Variant {
  name: string;
  caseName: string;
  kernel: string;
  config: GpuConfig;
  isDefault: boolean;
}

/**
 * Renders programs into one unit. `programs` may have different symbol lists: each
 * program's kernels take that program's symbols. With `candidates`, every configuration an
 * autotuner may pick is rendered too (`<prefix><kernel>__c<i>`).
 */
export function renderUnit(lowered: readonly Lowered[], facts: GpuFacts, candidates: boolean): { source: string; variants: Variant[] } {
  const variants: Variant[] = [];
  const parts: string[] = [CUDA_HELPERS];
  lowered.forEach(({ c, program }, i) => {
    const list = program.kernels.flatMap((k) => {
      const configs = candidates ? candidateConfigs(k, facts) : [defaultConfig(k, facts)];
      return configs.map((config, j) => ({ kernel: k, config, name: `${prefixOf(i)}${k.name}${j ? `__c${j}` : ''}`, isDefault: j === 0 }));
    });
    for (const v of list) variants.push({ name: v.name, caseName: c.name, kernel: v.kernel.name, config: v.config, isDefault: v.isDefault });
    parts.push(...renderCudaKernels(program.plan.symbols, facts, list));
  });
  return { source: parts.join('\n'), variants };
}

/** NVRTC options of the backend (see lib/engine/cuda.ts). */
export const TEST_NVRTC_OPTIONS = ['-default-device', '--std=c++17', '--fmad=false', '--ptxas-options=-v'];

/** Compiles a unit for `target`; returns the binary and ptxas's figures per kernel. */
export async function compileUnit(source: string, name: string, target: string): Promise<{ binary: Buffer; info: Record<string, PtxasFunctionInfo>; ms: number }> {
  const t0 = performance.now();
  const r = await nvrtcCompile({ source, name, target, options: TEST_NVRTC_OPTIONS });
  return { binary: r.binary, info: parsePtxasLog(r.log), ms: performance.now() - t0 };
}

// ---- the kernel emulator (test/helpers/cuda-emu.h) -------------------------------------

/** Lowered cases with their CUDA plans (default configurations) in one emulated library. */
export interface EmuBuilt {
  lib: CpuLibrary;
  source: string;
  units: { c: CudaCase; program: Program; plan: LaunchPlan; prefix: string }[];
}

/**
 * Renders every case's kernels with its configurations (default unless `configsOf` says
 * otherwise), plus a C launcher per kernel (`L_<name>(bufs, ints)`, ints = grid x y z,
 * block, shared bytes, then the plan symbols), compiles the unit with the host C++
 * compiler after the emulator header and loads it.
 */
export async function buildEmu(lowered: readonly Lowered[], facts: GpuFacts, configsOf?: (l: Lowered) => GpuConfig[]): Promise<EmuBuilt> {
  const parts = [`#include "${path.join(__dirname, 'helpers', 'cuda-emu.h')}"`, CUDA_HELPERS];
  const r = new CudaRenderer([], facts);
  const units = lowered.map((l, i) => {
    const configs = configsOf?.(l) ?? l.program.kernels.map((k) => defaultConfig(k, facts));
    const plan = gpuPlan(l.program.plan, l.program.kernels, configs);
    const prefix = prefixOf(i);
    const syms = l.program.plan.symbols;
    parts.push(...renderCudaKernels(syms, facts, l.program.kernels.map((kernel, j) => ({ kernel, config: configs[j], name: prefix + kernel.name }))));
    for (const step of plan.steps) {
      const k = l.program.kernels.find((kk) => step.kernel === kk.name || step.kernel.startsWith(`${kk.name}__`))!;
      const extra = step.buffers.length - k.params.length; // a split reduction's partials buffer
      const ptrs = [...k.params.map((p) => `${p.out ? '' : 'const '}${r.storage[p.dtype]}*`), ...Array.from({ length: extra }, () => `${r.storage[partialsDType(k)]}*`)];
      const args = [...ptrs.map((t, j) => `(${t})bufs[${j}]`), ...syms.map((_, j) => `(long long)ints[${5 + j}]`)];
      parts.push(
        `extern "C" void L_${prefix}${step.kernel}(void** bufs, const int64_t* ints) {`,
        '  const unsigned grid[3] = {(unsigned)ints[0], (unsigned)ints[1], (unsigned)ints[2]};',
        `  kiln_emu_launch("${prefix}${step.kernel}", grid, (unsigned)ints[3], (size_t)ints[4], [&] { ${prefix}${step.kernel}(${args.join(', ')}); });`,
        '}',
      );
    }
    return { c: l.c, program: l.program, plan, prefix };
  });
  const source = parts.join('\n') + '\n';
  const dir = mkdtempSync(path.join(tmpdir(), 'kiln-cuda-emu-'));
  const src = path.join(dir, 'unit.cpp');
  const so = path.join(dir, 'unit.so');
  writeFileSync(src, source);
  await new Promise<void>((resolve, reject) =>
    execFile(process.env.CXX ?? 'g++', ['-std=c++20', '-O1', '-fPIC', '-shared', '-pthread', '-w', '-o', so, src], (e, _out, err) =>
      e ? reject(new Error(`emulator compile of ${src} failed:\n${String(err).slice(0, 4000)}`)) : resolve(),
    ),
  );
  return { lib: cpuLoad(so), source, units };
}

const POISON: Record<DType, number> = { float32: 0xff, float16: 0xff, bfloat16: 0xff, int32: 0xff, bool: 0xff };

/** A buffer of `n` elements of `dtype` whose bytes are all 0xff (NaN for floats): kernels must overwrite what they own. */
function poisoned(dtype: DType, n: number): Storage {
  const s = allocStorage(dtype, n);
  new Uint8Array(s.buffer, s.byteOffset, s.byteLength).fill(POISON[dtype]);
  return s;
}

/** Runs unit `i` on random inputs of `shapes` through its plan; returns mismatch messages. */
export function runEmu(b: EmuBuilt, i: number, shapes: number[][]): string[] {
  const { c, program, plan, prefix } = b.units[i];
  const graph = program.graph;
  const rng = new Rng(seedOf(`${c.name}:${shapes.join('|')}`));
  const inputs: TensorData[] = shapes.map((shape, j) => {
    const dtype = graph.inputs[j].dtype;
    const n = shape.reduce((a, d) => a * d, 1);
    return { dtype, shape, data: encodeStorage(dtype, (c.gen ?? defaultGen)(j, dtype, n, rng)) };
  });
  const syms = bindSymbols(graph, inputs);
  const elems = bufferElems(plan, syms);
  const bufs: Storage[] = plan.buffers.map((buf) => {
    const n = elems.get(buf.id) as number;
    if (buf.role === 'input') return inputs[buf.source as number].data;
    if (buf.role === 'const') return graph.constants.get(buf.source as string)!.data;
    return poisoned(buf.dtype, n); // outputs and temps (the arena's reuse is the runtime's business)
  });
  for (const step of plan.steps) {
    const grid = step.grid!.map((g) => evalGridDim(parseGridDim(g), syms));
    while (grid.length < 3) grid.push(1);
    if (grid.some((g) => g === 0)) continue;
    const ints = [...grid, step.block![0], step.sharedBytes ?? 0, ...plan.symbols.map((s) => syms[s])];
    b.lib.call(`L_${prefix}${step.kernel}`, step.buffers.map((id) => bufs[id]), ints);
  }
  const want = interpret(graph, inputs);
  const errors: string[] = [];
  plan.outputs.forEach((o, k) => {
    const got = decodeStorage(o.dtype, bufs[o.buffer]);
    const exp = decodeStorage(o.dtype, want[k].data);
    for (let e = 0; e < exp.length && errors.length < 5; e++) {
      if (!close(o.dtype, got[e], exp[e], c)) errors.push(`${c.name} [${shapes.join('|')}] output ${k}[${e}]: got ${got[e]}, want ${exp[e]}`);
    }
  });
  return errors;
}

/** Every run of every unit: an empty list when all match. */
export function runAllEmu(b: EmuBuilt): string[] {
  return b.units.flatMap((u, i) =>
    (u.c.runs ?? [u.c.specs.map((s) => [...s.shape])]).flatMap((shapes) => {
      try {
        return runEmu(b, i, shapes);
      } catch (e) {
        return [`${u.c.name}: ${(e as Error).message}`];
      }
    }),
  );
}
