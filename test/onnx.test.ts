/** @jest-environment ./test/helpers/host-typed-arrays-env.cjs */
/**
 * The benchmark's ONNX writer: its bytes load into onnxruntime and compute what the graph
 * says (checked against values worked out here in float64), and each benchmark model's ONNX
 * graph (MLP, block, the example GPT on its example weights) agrees with kiln's eager
 * interpreter on the same weights.
 */
import * as ort from 'onnxruntime-node';
import * as kiln from '../lib/index';
import { OnnxGraph, float, varint } from '../lib/bench/onnx';
import { block, inputDType, mlp, type BenchModel } from '../lib/bench/models';
import { gpt } from '../lib/bench/gpt';
import { ortFeeds } from '../lib/bench/cpu';
import { relativeError } from '../lib/bench/stats';

// examples/gpt.js requires 'kiln': here that is the TypeScript source, as in example-gpt.test.ts.
jest.doMock('kiln', () => kiln, { virtual: true });

async function runOnnx(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, logSeverityLevel: 3 });
  try {
    return (await session.run(feeds))[session.outputNames[0]];
  } finally {
    await session.release();
  }
}

/** erf by its Maclaurin series; plenty for |x| < 3 in float64. */
function erf(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 60; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

describe('protobuf encoding', () => {
  test('varints, including 64-bit negatives', () => {
    expect([...varint(0)]).toEqual([0]);
    expect([...varint(1)]).toEqual([1]);
    expect([...varint(300)]).toEqual([0xac, 0x02]);
    expect([...varint(-1)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    expect(() => varint(1.5)).toThrow(RangeError);
  });

  test('builder rejects undefined values and duplicate names', () => {
    const g = new OnnxGraph();
    const x = g.input('x', 'float32', [2]);
    expect(() => g.node('Relu', ['nope'])).toThrow(/undefined value 'nope'/);
    expect(() => g.input(x, 'float32', [2])).toThrow(/defined twice/);
    expect(() => g.initializer('w', new Float32Array(3), [2, 2])).toThrow(/3 values/);
  });
});

describe('onnxruntime loads the writer output', () => {
  test('MatMul + Add + Gelu with a symbolic batch dim', async () => {
    const [M, K, N] = [3, 5, 4];
    const xs = Array.from({ length: M * K }, (_, i) => Math.sin(i + 1));
    const ws = Array.from({ length: K * N }, (_, i) => Math.cos(0.7 * i) * 0.5);
    const bs = [0.25, -0.5, 0.125, 1];

    const g = new OnnxGraph('tiny');
    const x = g.input('x', 'float32', ['batch', K]);
    const w = g.initializer('w', Float32Array.from(ws), [K, N]);
    const b = g.initializer('b', Float32Array.from(bs), [N]);
    g.output(g.node('Gelu', [g.node('Add', [g.node('MatMul', [x, w]), b])]), 'float32', ['batch', N]);
    const y = await runOnnx(g.toBytes(), { x: new ort.Tensor('float32', Float32Array.from(xs), [M, K]) });

    expect(y.dims).toEqual([M, N]);
    const got = y.data as Float32Array;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let v = bs[j];
        for (let k = 0; k < K; k++) v += Math.fround(xs[i * K + k]) * Math.fround(ws[k * N + j]);
        const want = 0.5 * v * (1 + erf(v / Math.SQRT2));
        expect(Math.abs(got[i * N + j] - want)).toBeLessThan(1e-5 * Math.max(1, Math.abs(want)));
      }
    }
  });

  test('float, int, ints and string attributes and int64 initializers', async () => {
    // LeakyRelu(alpha: FLOAT 1 forced) is the identity; Transpose(perm: INTS); Reshape(int64 shape);
    // Softmax(axis: INT -1, a 10-byte varint); Gelu(approximate: STRING).
    const g = new OnnxGraph();
    const x = g.input('x', 'float32', [2, 3]);
    const t = g.node('Transpose', [g.node('LeakyRelu', [x], { alpha: float(1) })], { perm: [1, 0] });
    const r = g.node('Reshape', [t, g.int64s([6])]);
    const s = g.node('Softmax', [g.node('Gelu', [r], { approximate: 'tanh' })], { axis: -1 });
    g.output(s, 'float32', [6]);
    const xs = [0, 1, 2, 3, 4, 5];
    const y = (await runOnnx(g.toBytes(), { x: new ort.Tensor('float32', Float32Array.from(xs), [2, 3]) })).data as Float32Array;

    const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const transposed = [0, 3, 1, 4, 2, 5].map(gelu);
    const z = transposed.reduce((a, v) => a + Math.exp(v), 0);
    transposed.forEach((v, i) => expect(y[i]).toBeCloseTo(Math.exp(v) / z, 6));
  });
});

describe('benchmark models: ONNX graph against kiln eager', () => {
  async function eager(m: BenchModel): Promise<Float32Array> {
    const inputs = m.inputs.map((i) => kiln.tensor(i.data, i.shape, inputDType(i)));
    const ws = m.weights.map((w) => kiln.tensor(w.data, w.shape));
    return (await m.kilnFn(...inputs, ...ws).toArray()) as Float32Array;
  }
  async function onnx(m: BenchModel): Promise<Float32Array> {
    const y = await runOnnx(m.onnx(), ortFeeds(m));
    expect(y.dims).toEqual(m.outShape);
    return y.data as Float32Array;
  }

  test('MLP (4 layers of 48, batch 6)', async () => {
    const m = mlp({ batch: 6, width: 48, layers: 4 });
    expect(relativeError(await eager(m), await onnx(m))).toBeLessThan(1e-4);
  });

  test('transformer block (seq 8, d 32, 4 heads, batch 2)', async () => {
    const m = block({ batch: 2, seq: 8, d: 32, heads: 4 });
    expect(relativeError(await eager(m), await onnx(m))).toBeLessThan(1e-4);
  });

  test('the example GPT on its example weights (examples/gpt.js, seq 12)', async () => {
    const m = await gpt({ seq: 12 });
    expect(m.inputs.map((i) => [i.name, inputDType(i)])).toEqual([
      ['ids', 'int32'],
      ['pos', 'int32'],
    ]);
    expect(relativeError(await eager(m), await onnx(m))).toBeLessThan(1e-4);
  });
});
