/**
 * Test harness for the C++ renderer: trace many small programs, lower them, render them
 * all into ONE translation unit, compile it once with the real compiler, and run every
 * program (at several sizes when it has dynamic dims) against the reference interpreter.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cppFlags, renderCppUnit } from '../lib/codegen';
import { allocStorage, decodeStorage, encodeStorage, ITEMSIZE, type DType, type Storage } from '../lib/ir';
import { arenaLayout, lower, type Program } from '../lib/passes';
import { bindSymbols, interpret, type TensorData } from '../lib/runtime/interpreter';
import { cpuLoad, type CpuLibrary } from '../lib/runtime/native';
import { cpuInfo } from '../lib/runtime/toolchain';
import { trace, type InputSpec, type TracedFn } from '../lib/tensor/trace';
import { BF16, F16, Rng, seedOf, ulpDistance } from './helpers/ref';

/** One numeric case. */
export interface NumCase {
  name: string;
  fn: TracedFn;
  specs: InputSpec[];
  dynamic?: Record<number, number[]>;
  /** Concrete input shapes of each run (default: the specs' shapes). */
  runs?: number[][][];
  /** Input values (default: normal floats, small ints, random bools). */
  gen?: (input: number, dtype: DType, n: number, rng: Rng) => number[];
  rtol?: number;
  atol?: number;
  ulps?: number;
}

export interface Built {
  lib: CpuLibrary;
  source: string;
  programs: Program[];
  graphs: ReturnType<typeof trace>[];
}

function defaultGen(_i: number, dtype: DType, n: number, rng: Rng): number[] {
  if (dtype === 'bool') return rng.array(n, (r) => (r.next() < 0.5 ? 1 : 0));
  if (dtype === 'int32') return rng.array(n, (r) => r.int(-50, 50));
  return rng.array(n, (r) => r.normal());
}

/** Trace, lower, render and compile all cases into one shared object. */
export function buildAll(cases: readonly NumCase[]): Built {
  const graphs = cases.map((c) => trace(c.fn, c.specs, { dynamic: c.dynamic ?? {} }));
  const programs = graphs.map((g) => lower(g));
  const source = renderCppUnit(programs.map((program, i) => ({ program, entry: `t${i}` })));
  const dir = mkdtempSync(path.join(tmpdir(), 'kiln-codegen-'));
  const src = path.join(dir, 'unit.cpp');
  const so = path.join(dir, 'unit.so');
  writeFileSync(src, source);
  try {
    execFileSync(process.env.CXX ?? 'g++', [...cppFlags(cpuInfo().features), '-o', so, src], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer };
    throw new Error(`compile of ${src} failed:\n${err.stderr?.toString().slice(0, 4000)}`);
  }
  return { lib: cpuLoad(so), source, programs, graphs };
}

/** Run case `i` on fresh random inputs of the given shapes; returns mismatch messages. */
export function check(b: Built, c: NumCase, i: number, shapes: number[][]): string[] {
  const graph = b.graphs[i];
  const program = b.programs[i];
  const rng = new Rng(seedOf(`${c.name}:${shapes.join('|')}`));
  const inputs: TensorData[] = shapes.map((shape, j) => {
    const dtype = graph.inputs[j].dtype;
    const n = shape.reduce((a, d) => a * d, 1);
    return { dtype, shape, data: encodeStorage(dtype, (c.gen ?? defaultGen)(j, dtype, n, rng)) };
  });
  const syms = bindSymbols(graph, inputs);
  const plan = program.plan;
  const layout = arenaLayout(plan, syms);
  const arena = new ArrayBuffer(Math.max(layout.bytes, 64));
  const bufs: Storage[] = plan.buffers.map((buf) => {
    const n = layout.elems.get(buf.id) as number;
    if (buf.role === 'input') return inputs[buf.source as number].data;
    if (buf.role === 'const') return program.graph.constants.get(buf.source as string)!.data;
    if (buf.role === 'output') return allocStorage(buf.dtype, n);
    return view(buf.dtype, arena, layout.offsets.get(buf.id) as number, n);
  });
  b.lib.call(`t${i}`, bufs, plan.symbols.map((s) => syms[s]));
  const want = interpret(graph, inputs);
  const errors: string[] = [];
  plan.outputs.forEach((o, k) => {
    const got = decodeStorage(o.dtype, bufs[o.buffer]);
    const exp = decodeStorage(o.dtype, want[k].data);
    if (got.length < exp.length) errors.push(`output ${k}: ${got.length} values, want ${exp.length}`);
    for (let e = 0; e < exp.length && errors.length < 5; e++) {
      if (!close(o.dtype, got[e], exp[e], c)) errors.push(`${c.name} [${shapes.join('|')}] output ${k}[${e}]: got ${got[e]}, want ${exp[e]}`);
    }
  });
  return errors;
}

function view(dtype: DType, arena: ArrayBuffer, offset: number, n: number): Storage {
  const empty = allocStorage(dtype, 0);
  const C = empty.constructor as new (b: ArrayBuffer, o: number, n: number) => Storage;
  return new C(arena, offset, n * (ITEMSIZE[dtype] / empty.BYTES_PER_ELEMENT));
}

/** Whether got `g` matches want `w`: 16-bit floats within `ulps` unless the case gives rtol/atol; other floats within atol + rtol·|w|; integers exactly. */
export function close(dtype: DType, g: number, w: number, c: Pick<NumCase, 'ulps' | 'rtol' | 'atol'>): boolean {
  if (Number.isNaN(w) || Number.isNaN(g)) return Number.isNaN(w) && Number.isNaN(g);
  if (!Number.isFinite(w)) return g === w;
  const half = dtype === 'float16' || dtype === 'bfloat16';
  if (half && c.rtol === undefined) return ulpDistance(g, w, dtype === 'float16' ? F16 : BF16) <= (c.ulps ?? 1);
  if (dtype !== 'float32' && !half) return g === w;
  return Math.abs(g - w) <= (c.atol ?? 1e-6) + (c.rtol ?? 1e-5) * Math.abs(w);
}

/** Every run of every case (cases start at program `offset` of the unit): an empty list when all match. */
export function checkAll(b: Built, cases: readonly NumCase[], offset = 0): string[] {
  return cases.flatMap((c, i) =>
    (c.runs ?? [c.specs.map((s) => [...s.shape])]).flatMap((shapes) => {
      try {
        return check(b, c, offset + i, shapes);
      } catch (e) {
        return [`${c.name}: ${(e as Error).message}`];
      }
    }),
  );
}
