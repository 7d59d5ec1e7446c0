/**
 * One app start of `kiln bench startup` (lib/bench/startup.ts spawns this file): start Node,
 * import kiln, read the checkpoint, kiln.compile the model's function for the CPU or the GPU,
 * make the input and weight tensors on that device, call, read the output back. Writes one JSON line as soon as the first
 * result is back (with the times of each step since the process started), then times
 * steady-state calls and writes a second line.
 *
 * This file is the whole app: before the clock's first mark it has loaded node:fs and
 * nothing else, so what the benchmark charges to a warm start is Node, kiln, and the app's
 * own work — not the benchmark driver (child_process, the report writer), which the parent
 * alone loads.
 */
import * as fs from 'node:fs';
import type { Timing } from './stats';

/** What the parent tells a child. */
export interface ChildArgs {
  model: 'mlp' | 'block';
  /** Where the model runs; 'cuda' makes the input and weights 'cuda' tensors too. */
  device: 'cpu' | 'cuda';
  checkpoint: string;
  cacheDir: string;
  calls: number;
}

/** The child's first line (as soon as the first result is read back). */
export interface FirstLine {
  phase: 'first';
  /** ms since the process started (performance.timeOrigin) when each step was done. */
  importMs: number;
  checkpointMs: number;
  modelMs: number;
  /** kiln.compile called and every input and weight made a kiln tensor (the data copied in). */
  tensorsMs: number;
  firstMs: number;
  stats: Record<string, unknown>;
  counters: { traces: number; compiles: number };
}

/** The child's last line: the steady state. */
export interface DoneLine {
  phase: 'done';
  steady: Timing;
}

/** Reads a checkpoint written by the parent (`writeCheckpoint`): raw float32 tensors and a JSON index. */
function readCheckpoint(file: string): { shapes: Record<string, number[]>; data: Record<string, Float32Array> } {
  const header = JSON.parse(fs.readFileSync(`${file}.json`, 'utf8')) as { tensors: { name: string; shape: number[]; offset: number; length: number }[] };
  const bytes = fs.readFileSync(file);
  const shapes: Record<string, number[]> = {};
  const data: Record<string, Float32Array> = {};
  for (const t of header.tensors) {
    shapes[t.name] = t.shape;
    const at = bytes.byteOffset + t.offset;
    // A view when aligned (large files get their own ArrayBuffer), else a copy.
    data[t.name] = at % 4 === 0 ? new Float32Array(bytes.buffer, at, t.length) : new Float32Array(bytes.buffer.slice(at, at + t.length * 4));
  }
  return { shapes, data };
}

/** Runs `make` with `new Float32Array(n)` returning an empty array (see `child`). */
function withoutWeights<T>(make: () => T): T {
  const Real = globalThis.Float32Array;
  const Empty = function () {
    return new Real(0);
  } as unknown as Float32ArrayConstructor;
  globalThis.Float32Array = Empty;
  try {
    return make();
  } finally {
    globalThis.Float32Array = Real;
  }
}

async function child(args: ChildArgs): Promise<void> {
  /* eslint-disable @typescript-eslint/no-require-imports -- timed: the import is part of the start */
  const kiln = require('../index') as typeof import('../index');
  const importMs = performance.now();
  const ckpt = readCheckpoint(args.checkpoint);
  const checkpointMs = performance.now();
  // The model's function from models.ts. Its constructor also draws random weights, which
  // this app does not use (they come from the checkpoint): while it runs, Float32Array
  // makes empty arrays, so no weight is drawn or allocated; the function is unchanged.
  const models = require('./models') as typeof import('./models');
  const m = withoutWeights(() => (args.model === 'mlp' ? models.mlp() : models.block()));
  const modelMs = performance.now();
  const f = kiln.compile(m.kilnFn, { name: `startup-${m.name}`, device: args.device, cacheDir: args.cacheDir });
  const [x, ...ws] = [...m.inputs, ...m.weights].map((w) => kiln.tensor(ckpt.data[w.name], ckpt.shapes[w.name], 'float32', args.device));
  const tensorsMs = performance.now();
  const y = await f(x, ...ws);
  await y.toArray();
  const first: FirstLine = { phase: 'first', importMs, checkpointMs, modelMs, tensorsMs, firstMs: performance.now(), stats: { ...f.stats }, counters: kiln.counters() };
  process.stdout.write(`${JSON.stringify(first)}\n`);
  const { summarize } = require('./stats') as typeof import('./stats');
  /* eslint-enable @typescript-eslint/no-require-imports */
  for (let i = 0; i < 3; i++) await (await f(x, ...ws)).toArray();
  const ms: number[] = [];
  for (let i = 0; i < args.calls; i++) {
    const t0 = performance.now();
    await (await f(x, ...ws)).toArray();
    ms.push(performance.now() - t0);
  }
  const done: DoneLine = { phase: 'done', steady: summarize(ms) };
  process.stdout.write(`${JSON.stringify(done)}\n`);
}

if (require.main === module) {
  child(JSON.parse(process.argv[2]) as ChildArgs).catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
