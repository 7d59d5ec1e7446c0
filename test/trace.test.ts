import * as path from 'node:path';
import * as kiln from '../lib';
import { printGraph, toposort, type Graph } from '../lib/ir';
import { trace } from '../lib/tensor/trace';
import { ArgumentError, ShapeError, TraceError } from '../lib/util/errors';

type T = kiln.Tensor;

const mlp = (x: T, w: T, b: T): T => x.matmul(w).add(b).gelu().softmax(-1);

describe('trace', () => {
  it('records the primitives of a program with one node per distinct expression', () => {
    const g = trace((x: T) => x.exp().add(x.exp()), [{ shape: [2, 3] }]);
    const ops = toposort(g).map((n) => n.op);
    expect(ops).toEqual(['INPUT', 'EXP', 'ADD']); // the second exp() is the same interned node
    expect(g.outputs[0].src[0]).toBe(g.outputs[0].src[1]);
  });

  it('prints one node per line', () => {
    const g = trace(mlp, [{ shape: [4, 8] }, { shape: [8, 16] }, { shape: [16] }], { dynamic: { 0: [0] } });
    const text = printGraph(g);
    expect(text).toContain('%0 = INPUT f32[s0,8] 0');
    expect(text).toMatch(/%\d+ = MATMUL f32\[s0,16\] %0, %1/);
    expect(text).toMatch(/ERFC f32\[s0,16\]/); // gelu
    expect(text).toContain('symbol s0 = input0.shape[0]');
    expect(text.split('\n').filter((l) => l.startsWith('%')).length).toBe(toposort(g).length);
  });

  it('records the user source files that produced traced ops, never kiln\'s own', () => {
    const g = trace(mlp, [{ shape: [4, 8] }, { shape: [8, 16] }, { shape: [16] }]);
    expect(g.files).toEqual([__filename]);
    const libDir = path.resolve(__dirname, '..', 'lib') + path.sep;
    for (const s of g.sites.values()) {
      expect(s.file.startsWith(libDir)).toBe(false);
      expect(s.line).toBeGreaterThan(0);
    }
    // Every op of a composite (gelu, softmax) is attributed to the user's line.
    const mlpLine = 9;
    const lines = new Set([...g.sites.values()].map((s) => s.line));
    expect(lines).toEqual(new Set([mlpLine]));
  });

  it('records every user file a traced op was reached through, up to the trace', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- plain JS helpers, as an app would have
    const wiring = require('./fixtures/sites/wiring.js') as { run(x: T): T };
    const g = trace((x: T) => wiring.run(x), [{ shape: [3] }]);
    const fixture = (f: string) => path.join(__dirname, 'fixtures', 'sites', f);
    // wiring.js makes no kiln call; the runner's files past trace() are not part of the program.
    expect(g.files).toEqual([__filename, fixture('ops.js'), fixture('wiring.js')].sort());
    expect(new Set([...g.sites.values()].map((s) => s.file))).toEqual(new Set([fixture('ops.js')])); // sites stay innermost
    // A second path to an op already made (interned to the same node) adds its files too.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- as above
    const again = require('./fixtures/sites/again.js') as { run(x: T): T };
    const both = trace((x: T) => [wiring.run(x), again.run(x)], [{ shape: [3] }]);
    expect(both.files).toEqual([__filename, fixture('again.js'), fixture('ops.js'), fixture('wiring.js')].sort());
  });

  it('refuses to read values of a traced tensor', () => {
    let err: unknown;
    trace(
      (x: T) => {
        try {
          void x.toArray();
        } catch (e) {
          err = e;
        }
        x.dispose(); // a no-op on traced tensors
        return x.neg();
      },
      [{ shape: [2] }],
    );
    expect(err).toBeInstanceOf(TraceError);
    expect((err as TraceError).code).toBe('KILN_TRACED_READ');
    expect((err as Error).message).toMatch(/cannot read values of a traced tensor inside kiln.compile: data-dependent control flow is not supported/);
  });

  it('shares one symbol between dynamic dims of equal example size (duck sizing)', () => {
    const g = trace((a: T, b: T, c: T) => [a.add(b), c], [{ shape: [5, 3] }, { shape: [5, 3] }, { shape: [7, 5] }], {
      dynamic: { 0: [0], 1: [0], 2: [0, -1] },
    });
    expect(g.symbols).toEqual([
      { name: 's0', sources: [{ input: 0, dim: 0 }, { input: 1, dim: 0 }, { input: 2, dim: 1 }] },
      { name: 's1', sources: [{ input: 2, dim: 0 }] },
    ]);
    expect(String(g.inputs[2].shape)).toBe('s1,s0');
  });

  it('keeps dynamic dims symbolic through shape arithmetic', () => {
    const g = trace((x: T) => x.reshape([-1, 4]).flatten().unsqueeze(0), [{ shape: [6, 8] }], { dynamic: { 0: [0] } });
    expect(String(g.outputs[0].shape)).toBe('1,8*s0');
    const h = trace((x: T) => x.slice(0, 1, -1).reshape(x.shape[1], -1), [{ shape: [6, 8] }], { dynamic: { 0: [0] } });
    expect(String(h.outputs[0].shape)).toBe('8,s0-2');
    expect(() => trace((x: T) => x.reshape([x.shape[0] * 2, -1]), [{ shape: [6, 8] }], { dynamic: { 0: [0] } })).toThrow(TraceError);
  });

  it('cannot prove a dynamic dim equal to a different static one', () => {
    expect(() => trace((x: T, y: T) => x.add(y), [{ shape: [4, 3] }, { shape: [4, 3] }], { dynamic: { 0: [0] } })).toThrow(ShapeError);
  });

  it('turns concrete tensors used inside into constants', () => {
    const w = kiln.tensor([1, 2, 3, 4], [2, 2]);
    const g = trace((x: T) => x.matmul(w).matmul(w), [{ shape: [3, 2] }]);
    const consts = toposort(g).filter((n) => n.op === 'TENSOR_CONST');
    expect(consts).toHaveLength(1);
    expect(g.constants.size).toBe(1);
    const c = g.constants.get(consts[0].arg as string);
    expect(c && [...c.data]).toEqual([1, 2, 3, 4]);
  });

  it('lists the constants captured from the closure: tensors older than the trace, and eager results derived from them', () => {
    const w = kiln.tensor([1, 2, 3, 4], [2, 2]);
    const b = kiln.tensor([1, 2], [2]);
    const g = trace((x: T) => x.matmul(w).matmul(w).add(b.mul(2).reshape([1, 2])), [{ shape: [3, 2] }]);
    expect(g.captured).toEqual([
      { dtype: 'float32', shape: [2, 2], key: expect.any(String) },
      { dtype: 'float32', shape: [1, 2], key: expect.any(String) }, // b.mul(2).reshape(...) ran eagerly, from b
    ]);
    for (const c of g.captured ?? []) expect(g.constants.has(c.key)).toBe(true);
    // Returned as is, a captured tensor is captured too.
    expect(trace(() => w, []).captured).toHaveLength(1);
  });

  it("captures nothing for tensors the function makes itself or kiln's own constants (masks, scalars)", () => {
    const g = trace(
      (q: T, k: T, v: T, ids: T) => {
        const lit = kiln.tensor([0.5, 0.25, 2, 1], [4]).mul(2); // made inside fn: part of its source
        const att = kiln.scaledDotProductAttention(q, k, v, { causal: true });
        const both = kiln.cat([att, att.neg()], -1).gelu().softmax(-1);
        const normed = kiln.layerNorm(both, undefined, undefined, 1e-5).add(kiln.rmsNorm(both));
        const table = kiln.tensor(new Float32Array(10 * 8).fill(0.5), [10, 8]);
        return [normed.mul(lit.sum()), kiln.embedding(ids, table), kiln.where(q.gt(0), q, 0)];
      },
      [{ shape: [2, 5, 4] }, { shape: [2, 5, 4] }, { shape: [2, 5, 4] }, { shape: [3], dtype: 'int32' }],
      { dynamic: { 0: [1], 1: [1], 2: [1] } },
    );
    expect(g.constants.size).toBeGreaterThan(0); // lit and table are constants, yet not captured
    expect(g.captured).toEqual([]);
  });

  it('rebuilds arrays and objects of outputs', () => {
    const g = trace((x: T) => ({ a: x.neg(), b: [x.abs(), x] }), [{ shape: [2] }]);
    expect(g.outputStructure).toEqual({
      kind: 'object',
      entries: [
        ['a', { kind: 'tensor', index: 0 }],
        ['b', { kind: 'array', items: [{ kind: 'tensor', index: 1 }, { kind: 'tensor', index: 2 }] }],
      ],
    });
    expect(g.outputs[2]).toBe(g.inputs[0]);
  });

  it('rejects bad returns, async functions and escaped tensors', () => {
    expect(() => trace(() => 3, [{ shape: [1] }])).toThrow(ArgumentError);
    expect(() => trace((x: T) => [x, 'no'], [{ shape: [1] }])).toThrow(/got string/);
    expect(() => trace(async (x: T) => x, [{ shape: [1] }])).toThrow(/synchronous/);
    let leaked: T | undefined;
    trace((x: T) => (leaked = x.neg()), [{ shape: [1] }]);
    expect(() => (leaked as T).add(1)).toThrow(TraceError);
    expect(() => trace((x: T) => x, [{ shape: [1] }], { dynamic: { 1: [0] } })).toThrow(ArgumentError);
  });

  it('labels shape errors inside a trace with the user call site', () => {
    let g: Graph | undefined;
    try {
      g = trace((x: T) => x.add(kiln.tensor([1, 2, 3], [3])), [{ shape: [2] }]);
    } catch (e) {
      expect(e).toBeInstanceOf(ShapeError);
      expect((e as Error).message).toMatch(/^add: .*\[2\].*\[3\].*trace\.test\.ts:\d+:\d+/);
    }
    expect(g).toBeUndefined();
  });
});
