/**
 * The engine without the public API: compileGraph on a traced graph (one real compile),
 * run against the interpreter, the checks `run` makes, and the program-store seam.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as kiln from '../lib';
import { compileCount, compileGraph, ensureBundle, getProgram, run, type CompiledProgram, type ProgramRequest } from '../lib/engine';
import type { Graph } from '../lib/ir/graph';
import { interpret } from '../lib/runtime/interpreter';
import { addonInfo } from '../lib/runtime/native';
import { trace } from '../lib/tensor/trace';

// Two inputs whose dim 0 is dynamic and duck-sized (equal example sizes share s0); outputs
// include an input returned as is.
const graph: Graph = trace(
  (x: kiln.Tensor, y: kiln.Tensor) => [x.exp().sum(-1), x.mul(y).add(1), y],
  [{ shape: [5, 3] }, { shape: [5, 3] }],
  { dynamic: { 0: [0], 1: [0] } },
);
const input = (rows: number, seed: number) => {
  const data = Float32Array.from({ length: rows * 3 }, (_, i) => Math.sin(i * 1.3 + seed));
  return { dtype: 'float32' as const, shape: [rows, 3], data };
};

let dir: string;
let program: CompiledProgram;
beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kiln-engine-'));
  const before = compileCount();
  program = await compileGraph(graph, { device: 'cpu', workDir: dir });
  expect(compileCount()).toBe(before + 1);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('engine', () => {
  it('compiles a graph, timing each stage, and keeps the sources in workDir', () => {
    expect(program.device).toBe('cpu');
    expect(program.kernels).toBeGreaterThanOrEqual(1);
    for (const t of Object.values(program.times)) expect(t).toBeGreaterThanOrEqual(0);
    expect(program.times.compileMs).toBeGreaterThan(0);
    expect(readFileSync(path.join(dir, 'kernels.cpp'), 'utf8')).toBe(program.source);
    expect(existsSync(path.join(dir, 'kernels.so'))).toBe(true);
  });

  it('runs like the interpreter for several sizes of the dynamic dim', async () => {
    for (const rows of [5, 1, 33]) {
      const inputs = [input(rows, 1), input(rows, 2)];
      const got = await run(program, inputs);
      const want = interpret(program.graph, inputs);
      expect(got.map((t) => t.shape)).toEqual(want.map((t) => t.shape));
      got.forEach((t, i) => {
        const w = want[i].data;
        t.data.forEach((v, j) => expect(Math.abs(v - w[j])).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(w[j]))));
      });
      expect(got[2].data).not.toBe(inputs[1].data); // an output never aliases an input
    }
  });

  it('checks inputs as the interpreter does, naming the input', async () => {
    await expect(run(program, [input(4, 1), input(5, 2)])).rejects.toMatchObject({ code: 'KILN_SYMBOL_MISMATCH', message: expect.stringMatching(/input 0 dim 0 is 4 but input 1 dim 0 is 5/) });
    await expect(run(program, [input(4, 1)])).rejects.toMatchObject({ code: 'KILN_INPUT_COUNT' });
    const short = { ...input(4, 1), data: new Float32Array(3) };
    await expect(run(program, [short, input(4, 2)])).rejects.toMatchObject({ code: 'KILN_INPUT_DATA', message: expect.stringMatching(/input 0 data must be 12 elements/) });
  });

  it("compiles for device 'cuda' on a GPU, and says what is missing without one", async () => {
    const info = addonInfo();
    if (info.driver.available && info.driver.devices.length > 0 && info.nvrtc.available) {
      const cuda = await compileGraph(graph, { device: 'cuda' });
      expect(cuda.device).toBe('cuda');
      const inputs = [input(4, 1), input(4, 2)];
      const got = await run(cuda, inputs);
      const want = interpret(graph, inputs);
      got.forEach((t, i) => t.data.forEach((v, j) => expect(v).toBeCloseTo(want[i].data[j], 5)));
    } else {
      await expect(compileGraph(graph, { device: 'cuda' })).rejects.toMatchObject({ code: expect.stringMatching(/^KILN_(NO_CUDA_DEVICE|NVRTC_UNAVAILABLE)$/) });
    }
  });

  it('gets programs through the store seam: traces on a miss, refuses in force-load without compiling', async () => {
    const req: ProgramRequest = {
      name: 'seam',
      fnSource: '(x, y) => [x.exp().sum(-1), x.mul(y).add(1), y]',
      inputs: [{ dtype: 'float32', shape: [5, 3], dynamic: [0] }, { dtype: 'float32', shape: [5, 3], dynamic: [0] }],
      device: 'cpu',
    };
    let traced = 0;
    const got = await getProgram(req, { mode: 'off', cacheDir: dir }, () => (traced++, graph));
    expect(got).toMatchObject({ origin: 'compiled', key: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(got.bundleDir).toBeUndefined();
    expect(traced).toBe(1);
    // The same key again in this process: from memory, no trace.
    const again = await getProgram(req, { mode: 'off', cacheDir: dir }, () => (traced++, graph));
    expect(again).toMatchObject({ origin: 'memory', key: got.key, program: got.program });
    expect(traced).toBe(1);
    const before = compileCount();
    const refused = getProgram({ ...req, name: 'seam2' }, { mode: 'force-load', cacheDir: path.join(dir, 'empty-cache') }, () => (traced++, graph));
    await expect(refused).rejects.toMatchObject({ code: 'KILN_BUNDLE_MISSING' });
    expect(traced).toBe(2); // traced to look for captured tensors (none), never compiled
    expect(compileCount()).toBe(before);
    const strict = getProgram({ ...req, name: 'seam2' }, { mode: 'force-load', cacheDir: path.join(dir, 'empty-cache'), failOnRecompile: true }, () => (traced++, graph));
    await expect(strict).rejects.toMatchObject({ code: 'KILN_BUNDLE_MISSING' });
    expect(traced).toBe(2);
  });

  it('a graph that captured tensors is compiled for its caller alone: not published, not shared by key, one warning', async () => {
    const w = kiln.tensor([1, 2, 3], [3]);
    const capturing = trace((x: kiln.Tensor) => x.mul(w), [{ shape: [5, 3] }], { dynamic: { 0: [0] } });
    expect(capturing.captured).toEqual([{ dtype: 'float32', shape: [3], key: expect.any(String) }]);
    const req: ProgramRequest = { name: 'seam-captured', fnSource: '(x) => x.mul(w)', inputs: [{ dtype: 'float32', shape: [5, 3], dynamic: [0] }], device: 'cpu' };
    const cacheDir = path.join(dir, 'captured-cache');
    const warnings: string[] = [];
    // Observed at process.emitWarning: jest's sandboxed process does not relay 'warning' events.
    const emit = jest.spyOn(process, 'emitWarning').mockImplementation(((message: string, opts?: { code?: string }) => {
      warnings.push(`${opts?.code}: ${message}`);
    }) as typeof process.emitWarning);
    try {
      let traced = 0;
      const first = await getProgram(req, { mode: 'auto', cacheDir }, () => (traced++, capturing));
      expect(first).toMatchObject({ origin: 'compiled', captured: ['float32[3]'] });
      expect(first.bundleDir).toBeUndefined();
      // Another function of the same source (same key) may capture other values: it traces its own.
      const second = await getProgram(req, { mode: 'auto', cacheDir }, () => (traced++, capturing));
      expect(second.origin).toBe('compiled');
      expect(second.program).not.toBe(first.program);
      expect(traced).toBe(2);
      expect(warnings).toEqual([expect.stringMatching(/^KILN_CAPTURED_TENSORS: kiln: seam-captured captures a tensor from its closure \(float32\[3\]\)/)]);
      const forced = getProgram({ ...req, name: 'seam-captured2' }, { mode: 'force-load', cacheDir }, () => capturing);
      await expect(forced).rejects.toMatchObject({ name: 'CacheError', code: 'KILN_CAPTURED_TENSORS', cause: expect.objectContaining({ code: 'KILN_BUNDLE_MISSING' }) });
      await expect(ensureBundle(req, cacheDir, () => capturing)).rejects.toMatchObject({ name: 'CacheError', code: 'KILN_CAPTURED_TENSORS' });
    } finally {
      emit.mockRestore();
    }
  });
});
