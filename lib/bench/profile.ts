/**
 * `kiln bench --profile`: where the time goes, kernel by kernel, on both sides.
 *
 * kiln: the model is traced and lowered as `kiln.compile` does, its C++ is compiled into a
 * shared object, and each kernel of the launch plan is called on its own through the
 * exported `kiln_k_<name>` entry with the plan's buffers (on the JS thread, so no pool
 * hand-off is counted), then the whole plan; weight GEMMs and the plan use packed weights
 * (`kiln_kp_<name>`, `kiln_run_packed`) as a compiled call does from its third call on.
 * onnxruntime: the session's own profiler (per-node kernel times).
 * Both report the fastest and the median of the repetitions; the fastest is the useful one
 * on a busy machine.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { trace, type TracedFn } from '../tensor/trace';
import { lower } from '../passes';
import { cppFlags, packSlotOf, renderCpp } from '../codegen';
import { compileSharedObject } from '../runtime/cpu';
import { cpuInfo } from '../runtime/toolchain';
import { cpuLoad, type HostBuffer } from '../runtime/native';
import { inputDType, type BenchModel } from './models';
import { ortFeeds } from './cpu';
import { summarize } from './stats';

/** One kernel (kiln) or node (onnxruntime) and its time per call, ms. */
export interface KernelTime {
  name: string;
  kind: string;
  min: number;
  median: number;
}

export interface ModelProfile {
  model: string;
  kiln: KernelTime[];
  ort: KernelTime[];
  /** kiln's generated C++, for reading alongside the numbers. */
  sourcePath: string;
}

/** Profiles kiln's kernels and onnxruntime's nodes for one model. */
export async function profileModel(m: BenchModel, threads: number, reps: number, workDir: string): Promise<ModelProfile> {
  return { model: m.name, ...(await profileKiln(m, threads, reps, workDir)), ort: await profileOrt(m, threads, reps, workDir) };
}

async function profileKiln(m: BenchModel, threads: number, reps: number, workDir: string): Promise<{ kiln: KernelTime[]; sourcePath: string }> {
  const inputs = [...m.inputs, ...m.weights];
  const graph = trace(m.kilnFn as TracedFn, inputs.map((w) => ({ shape: w.shape, dtype: inputDType(w) })));
  const program = lower(graph);
  const dir = path.join(workDir, `kiln-${m.name}`);
  const so = await compileSharedObject(renderCpp(program), cppFlags(cpuInfo().features), dir);
  const lib = cpuLoad(so.soPath);
  lib.call('kiln_set_threads', [], [threads]);

  const { plan } = program;
  const bufs: HostBuffer[] = [];
  for (const b of plan.buffers) {
    if (typeof b.elems !== 'number') throw new Error(`profile: buffer ${b.id} has a symbolic size (${b.elems}); profile static shapes only`);
    if (b.dtype !== 'float32' && b.role !== 'const' && b.role !== 'input') throw new Error(`profile: buffer ${b.id} is ${b.dtype}; the benchmark models compute in float32`);
    if (b.role === 'input') bufs[b.id] = inputs[Number(b.source)].data;
    else if (b.role === 'const') bufs[b.id] = program.graph.constants.get(String(b.source))!.data;
    else bufs[b.id] = new Float32Array(b.elems);
  }
  for (let i = 0; i < bufs.length; i++) bufs[i] ??= new ArrayBuffer(0);
  const syms = BigInt64Array.from(plan.symbols, () => 0n);

  const time = (fn: () => void): { min: number; median: number } => {
    fn(); // warm: first touch of the buffers, thread start-up
    const t: number[] = [];
    for (let r = 0; r < reps; r++) {
      const s = performance.now();
      fn();
      t.push(performance.now() - s);
    }
    const { min, median } = summarize(t);
    return { min, median };
  };
  // A weight GEMM (a pack slot) runs as in a compiled call from the third call on: B packed
  // once into its slot (state 1), then used packed (state 2); the plan likewise.
  const stable = (buf: number): boolean => ['input', 'const'].includes(plan.buffers[buf]?.role);
  const packs: ArrayBuffer[] = [];
  const kiln: KernelTime[] = plan.steps.map((step) => {
    const args = step.buffers.map((id) => bufs[id]);
    const slot = packSlotOf(program.kernels.find((k) => k.name === step.kernel)!, stable);
    if (!slot) return { name: step.kernel, kind: step.kind, ...time(() => lib.call(`kiln_k_${step.kernel}`, args, syms)) };
    const pk = new ArrayBuffer(slot.bytes);
    packs.push(pk);
    lib.call(`kiln_kp_${step.kernel}`, [...args, pk], BigInt64Array.from([...syms, 1n]));
    const packed = BigInt64Array.from([...syms, 2n]);
    return { name: step.kernel, kind: step.kind, ...time(() => lib.call(`kiln_kp_${step.kernel}`, [...args, pk], packed)) };
  });
  const packedRun = BigInt64Array.from([...syms, ...packs.map(() => 2n)]);
  kiln.push({ name: 'kiln_run (whole plan)', kind: 'total', ...time(() => lib.call('kiln_run_packed', [...bufs, ...packs], packedRun)) });
  return { kiln, sourcePath: path.join(dir, 'kernels.cpp') };
}

interface ProfileEvent {
  cat?: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

async function profileOrt(m: BenchModel, threads: number, reps: number, workDir: string): Promise<KernelTime[]> {
  const session = await ort.InferenceSession.create(m.onnx(), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    enableProfiling: true,
    profileFilePrefix: path.join(workDir, `ort-${m.name}`),
  });
  const feeds = ortFeeds(m);
  const runs: number[] = [];
  await session.run(feeds);
  for (let r = 0; r < reps; r++) {
    const s = performance.now();
    await session.run(feeds);
    runs.push(performance.now() - s);
  }
  session.endProfiling();
  await session.release();
  // The profiler writes <prefix>_<date>.json; take the newest for this model.
  const file = fs
    .readdirSync(workDir)
    .filter((f) => f.startsWith(`ort-${m.name}_`) && f.endsWith('.json'))
    .map((f) => path.join(workDir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as ProfileEvent[];
  const byNode = new Map<string, { kind: string; us: number[] }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const name = e.name.slice(0, -'_kernel_time'.length);
    const entry = byNode.get(name) ?? { kind: e.args?.op_name ?? '?', us: [] };
    entry.us.push(e.dur);
    byNode.set(name, entry);
  }
  const nodes: KernelTime[] = [...byNode].map(([name, { kind, us }]) => {
    const s = summarize(us.slice(1).map((u) => u / 1000)); // the first is the warm-up run
    return { name, kind, min: s.min, median: s.median };
  });
  const total = summarize(runs);
  nodes.push({ name: 'session.run (whole model)', kind: 'total', min: total.min, median: total.median });
  return nodes;
}

/** Both sides' kernels as text, with each kernel's share of the sum of fastest times. */
export function formatProfile(p: ModelProfile): string {
  const side = (title: string, rows: KernelTime[]) => {
    const parts = rows.filter((r) => r.kind !== 'total');
    const sum = parts.reduce((a, r) => a + r.min, 0);
    const width = Math.max(...rows.map((r) => r.name.length), 10);
    const kindWidth = Math.max(...rows.map((r) => r.kind.length), 4);
    const line = (r: KernelTime, share: string) =>
      `  ${r.name.padEnd(width)}  ${r.kind.padEnd(kindWidth)}  ${r.min.toFixed(3).padStart(8)}  ${r.median.toFixed(3).padStart(8)}  ${share.padStart(5)}`;
    return [
      `${title}`,
      `  ${'kernel'.padEnd(width)}  ${'kind'.padEnd(kindWidth)}  ${'min ms'.padStart(8)}  ${'med ms'.padStart(8)}  share`,
      ...parts.map((r) => line(r, `${((100 * r.min) / sum).toFixed(0)}%`)),
      `  ${'sum of kernel minima'.padEnd(width)}  ${''.padEnd(kindWidth)}  ${sum.toFixed(3).padStart(8)}`,
      ...rows.filter((r) => r.kind === 'total').map((r) => line(r, '')),
    ].join('\n');
  };
  return [`[${p.model}] kernel profile (kiln source: ${p.sourcePath})`, side('kiln', p.kiln), side('onnxruntime', p.ort)].join('\n');
}

/** A fresh scratch directory for the profile's build and profiler files. */
export function profileDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-profile-'));
}
