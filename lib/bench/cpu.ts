/**
 * kiln's CPU backend against onnxruntime-node, side by side in one process: the same model,
 * the same weights, the same input, the same thread count. Each model is checked for
 * agreement first, both engines are warmed up, then timed in interleaved iterations (the
 * order flips every iteration, so drift and turbo effects fall on both alike).
 *
 * What one timed iteration is, for both: from the call to having the output's values in a
 * JS typed array (onnxruntime's `run()` returns host data; kiln's compiled function is
 * followed by `toArray()`). Weights and the input are resident before timing starts.
 */
import * as ort from 'onnxruntime-node';
import * as kiln from '../index';
import { inputDType, type BenchModel } from './models';
import { relativeError, summarize, type Timing } from './stats';

/** How the kiln side runs: compiled for the CPU backend, or eagerly (reference interpreter). */
export type KilnMode = 'compiled' | 'eager';

export interface CpuBenchOptions {
  models: BenchModel[];
  threads: number;
  iters: number;
  warmup: number;
  mode: KilnMode;
  /**
   * Let onnxruntime pre-pack its constant weights at session creation (its default). kiln gets
   * the weights as function inputs and cannot; turning this off shows what that is worth.
   */
  ortPrepack: boolean;
  /** Largest accepted max|kiln − ort| / max|ort|. */
  tolerance: number;
  /** Progress lines go here (stderr by default). */
  log?: (line: string) => void;
}

export interface ModelResult {
  model: string;
  config: Record<string, number>;
  flops: number;
  /** max|kiln − ort| / max|ort| over the output. */
  relErr: number;
  agree: boolean;
  kiln: EngineResult;
  ort: EngineResult;
  /** kiln median ÷ onnxruntime median (the target is ≤ 1.0). */
  ratio: number;
  /** kiln fastest ÷ onnxruntime fastest: the least noise-prone estimate on a busy machine. */
  ratioMin: number;
  /** What kiln reported after its first call: compiled now, or loaded from a bundle (absent in eager mode). */
  kilnStats?: unknown;
  /** Time to create the onnxruntime session (parse, optimize, prepack), ms. */
  ortSessionMs: number;
}

/** Wall-clock latency of one engine, plus the CPU time its process spent per call. */
export interface EngineResult extends Timing {
  gflops: number;
  /**
   * Median CPU time (user + system, all threads of the process) per call, ms. With one
   * thread it is the compute time itself, immune to the process being descheduled on a busy
   * machine; with more it also counts worker threads that spin while waiting.
   */
  cpuMs: number;
}

type Runner = () => Promise<Float32Array>;

/** Runs every model; resolves to one result per model. */
export async function runCpuBench(opts: CpuBenchOptions): Promise<ModelResult[]> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const results: ModelResult[] = [];
  for (const m of opts.models) {
    log(`[${m.name}] ${describe(m)}: preparing onnxruntime and kiln (${opts.mode})`);
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(m.onnx(), {
      intraOpNumThreads: opts.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // The engines are timed alternately: onnxruntime's workers must not spin on a core
      // through kiln's turn (kiln's pool sleeps after 100 µs), or the ratio measures the spin.
      extra: { session: { 'intra_op.allow_spinning': '0', ...(opts.ortPrepack ? {} : { disable_prepacking: '1' }) } },
    });
    const ortSessionMs = performance.now() - t0;
    const feeds = ortFeeds(m);
    const outName = session.outputNames[0];
    const runOrt: Runner = async () => (await session.run(feeds))[outName].data as Float32Array;

    const { run: runKiln, stats, dispose } = prepareKiln(m, opts.mode);
    try {
      // The first kiln call traces and compiles (or loads a bundle); it is the agreement check too.
      const [k, o] = [await runKiln(), await runOrt()];
      const firstCall = stats();
      if (firstCall !== undefined) log(`[${m.name}] kiln first call: ${JSON.stringify(firstCall)}`);
      const relErr = relativeError(k, o);
      const agree = relErr <= opts.tolerance;
      log(`[${m.name}] max|kiln − ort| / max|ort| = ${relErr.toExponential(2)} (${agree ? 'agree' : 'DISAGREE'}, tolerance ${opts.tolerance})`);

      for (let i = 0; i < opts.warmup; i++) {
        await runKiln();
        await runOrt();
      }
      const kt: Samples = { wall: [], cpu: [] };
      const ot: Samples = { wall: [], cpu: [] };
      for (let i = 0; i < opts.iters; i++) {
        const pair: [Runner, Samples][] = [
          [runKiln, kt],
          [runOrt, ot],
        ];
        if (i % 2 === 1) pair.reverse();
        for (const [run, into] of pair) {
          // A short idle gap, untimed: lets the other engine's worker threads stop spinning.
          await new Promise((r) => setTimeout(r, 1));
          const c = process.cpuUsage();
          const s = performance.now();
          await run();
          into.wall.push(performance.now() - s);
          const cpu = process.cpuUsage(c);
          into.cpu.push((cpu.user + cpu.system) / 1000);
        }
      }
      const kiln = engineResult(kt, m.flops);
      const ortT = engineResult(ot, m.flops);
      results.push({
        model: m.name,
        config: m.config,
        flops: m.flops,
        relErr,
        agree,
        kiln,
        ort: ortT,
        ratio: kiln.median / ortT.median,
        ratioMin: kiln.min / ortT.min,
        kilnStats: firstCall,
        ortSessionMs,
      });
      log(`[${m.name}] kiln ${kiln.median.toFixed(3)} ms, onnxruntime ${ortT.median.toFixed(3)} ms`);
    } finally {
      dispose();
      await session.release();
    }
  }
  return results;
}

interface Samples {
  wall: number[];
  cpu: number[];
}

function engineResult(s: Samples, flops: number): EngineResult {
  const wall = summarize(s.wall);
  return { ...wall, gflops: flops / wall.median / 1e6, cpuMs: summarize(s.cpu).median };
}

/** onnxruntime's feeds for a model's inputs, by name. */
export function ortFeeds(m: BenchModel): Record<string, ort.Tensor> {
  return Object.fromEntries(m.inputs.map((i) => [i.name, new ort.Tensor(inputDType(i), i.data, i.shape)]));
}

/** The kiln side of one model: weights and input uploaded once, a runner, and cleanup. */
function prepareKiln(m: BenchModel, mode: KilnMode): { run: Runner; stats: () => unknown; dispose: () => void } {
  const args = [...m.inputs.map((i) => kiln.tensor(i.data, i.shape, inputDType(i))), ...m.weights.map((w) => kiln.tensor(w.data, w.shape))];
  const dispose = () => args.forEach((t) => t.dispose());
  if (mode === 'eager') {
    const run: Runner = async () => {
      const y = m.kilnFn(...args);
      const out = (await y.toArray()) as Float32Array;
      y.dispose();
      return out;
    };
    return { run, stats: () => undefined, dispose };
  }
  const f = kiln.compile(m.kilnFn, { ...m.compileOptions, name: `bench-${m.compileOptions?.name ?? m.name}`, device: 'cpu' });
  const run: Runner = async () => {
    const y = (await f(...args)) as kiln.Tensor;
    const out = (await y.toArray()) as Float32Array;
    y.dispose();
    return out;
  };
  return { run, stats: () => f.stats, dispose };
}

export function describe(m: BenchModel): string {
  return Object.entries(m.config)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

const gflops = (v: number) => (v >= 10 ? v.toFixed(1) : v.toPrecision(2));

/** The results as an aligned text table. */
export function formatTable(results: ModelResult[]): string {
  const head = ['model', 'kiln ms', 'ort ms', 'kiln/ort', 'kiln GFLOP/s', 'ort GFLOP/s', 'kiln p10–p90', 'ort p10–p90', 'min kiln/ort', 'cpu ms kiln/ort', 'rel err'];
  const rows = results.map((r) => [
    r.model,
    r.kiln.median.toFixed(3),
    r.ort.median.toFixed(3),
    `${r.ratio.toFixed(2)}×`,
    gflops(r.kiln.gflops),
    gflops(r.ort.gflops),
    `${r.kiln.p10.toFixed(2)}–${r.kiln.p90.toFixed(2)}`,
    `${r.ort.p10.toFixed(2)}–${r.ort.p90.toFixed(2)}`,
    `${r.ratioMin.toFixed(2)}×`,
    `${r.kiln.cpuMs.toFixed(1)}/${r.ort.cpuMs.toFixed(1)}`,
    `${r.relErr.toExponential(1)}${r.agree ? '' : ' !'}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
