import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as kiln from '../lib';
import { deserializeGraph, graphKey, parseGraph, serializeGraph, toposort, type Graph, type SerializedGraph } from '../lib/ir';
import { trace, type InputSpec } from '../lib/tensor/trace';
import { FormatError, KilnError } from '../lib/util/errors';
import { Rng } from './helpers/ref';

type T = kiln.Tensor;

/** Uniform draws in [0, 1) from a seeded PRNG, so every failure reproduces. */
function prng(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}

const W = [kiln.tensor([1, 0, 0, 1, 2, 1, 0, -1, 0.5, 0, 1, 0, 0, 0, 0, 1], [4, 4]), kiln.tensor([...Array(16).keys()], [4, 4], 'float16')];

/** A random program over [B, 4] and [B, 1] tensors, described as data so it can be re-run. */
function randomProgram(seed: number): { fn: (...xs: T[]) => unknown; specs: InputSpec[]; dynamic: Record<number, number[]> } {
  const r = prng(seed);
  const pick = <X>(xs: readonly X[]): X => xs[Math.floor(r() * xs.length)];
  const nInputs = 1 + Math.floor(r() * 2);
  const batch = pick([3, 5]);
  const specs: InputSpec[] = Array.from({ length: nInputs }, () => ({ shape: [batch, 4], dtype: pick(['float32', 'float32', 'float16'] as const) }));
  const dynamic: Record<number, number[]> = r() < 0.5 ? Object.fromEntries(specs.map((_, i) => [i, [0]])) : {};
  const steps = Array.from({ length: 1 + Math.floor(r() * 7) }, () => ({
    kind: pick(['unary', 'binary', 'scalar', 'sum', 'softmax', 'where', 'matmul', 'cast', 'transpose', 'cat', 'layerNorm'] as const),
    name: pick(['exp', 'tanh', 'neg', 'abs', 'sigmoid', 'relu', 'gelu', 'silu', 'sin'] as const),
    bin: pick(['add', 'sub', 'mul', 'maximum', 'minimum', 'div'] as const),
    scalar: pick([0.5, 2, -1]),
    i: r(),
    j: r(),
    w: pick([0, 1]),
  }));
  const nOut = 1 + Math.floor(r() * 2);
  const fn = (...xs: T[]): unknown => {
    const pool: T[] = [...xs];
    const at = (u: number): T => pool[Math.floor(u * pool.length)];
    for (const s of steps) {
      const a = at(s.i);
      const b = at(s.j);
      const wide = a.shape[1] === 4;
      switch (s.kind) {
        case 'unary':
          pool.push(a[s.name]());
          break;
        case 'binary':
          pool.push(a[s.bin](b));
          break;
        case 'scalar':
          pool.push(a[s.bin](s.scalar));
          break;
        case 'sum':
          pool.push(a.sum(-1, true));
          break;
        case 'softmax':
          pool.push(a.softmax(-1));
          break;
        case 'where':
          pool.push(kiln.where(a.lt(b), a, b));
          break;
        case 'matmul':
          if (wide) pool.push(a.matmul(W[s.w]));
          break;
        case 'cast':
          pool.push(a.to('bfloat16').to(a.dtype));
          break;
        case 'transpose':
          pool.push(a.transpose(0, 1).exp().transpose(1, 0));
          break;
        case 'cat':
          if (wide && b.shape[1] === 4) pool.push(kiln.cat([a, b], -1).slice(-1, 2, 6));
          break;
        case 'layerNorm':
          pool.push(kiln.layerNorm(a));
          break;
      }
    }
    const outs = pool.slice(-nOut);
    return outs.length === 1 ? outs[0] : outs;
  };
  return { fn, specs, dynamic };
}

/** Serialized text without call sites and file paths: equal iff two graphs are the same program. */
function canonicalText(g: Graph): string {
  return JSON.stringify({ ...serializeGraph(g), files: [], sites: [] });
}

function randomGraph(seed: number): Graph {
  const p = randomProgram(seed);
  return trace(p.fn, p.specs, { dynamic: p.dynamic });
}

const transformer = (x: T, wq: T, wo: T): T => {
  const h = kiln.layerNorm(x);
  const q = h.matmul(wq).reshape([x.shape[0], x.shape[1], 2, 4]).transpose(1, 2);
  const a = kiln.scaledDotProductAttention(q, q, q, { causal: true });
  return x.add(a.transpose(1, 2).flatten(2).matmul(wo)).gelu('tanh');
};
const transformerSpecs: InputSpec[] = [{ shape: [2, 6, 8] }, { shape: [8, 8] }, { shape: [8, 8] }];

describe('graph serialization', () => {
  it('round-trips exactly through JSON text, with the same key', () => {
    const w = kiln.tensor([...Array(64).keys()].map((i) => Math.sin(i)), [8, 8]);
    const g = trace((x: T, wq: T) => transformer(x, wq, w), transformerSpecs.slice(0, 2), { dynamic: { 0: [0, 1] } });
    const text = JSON.stringify(serializeGraph(g));
    const back = parseGraph(text);
    expect(JSON.stringify(serializeGraph(back))).toBe(text);
    expect(graphKey(back)).toBe(graphKey(g));
    expect(graphKey(g)).toMatch(/^[0-9a-f]{64}$/);
    expect(back.files).toEqual([__filename]);
    expect(back.sites.size).toBe(g.sites.size);
    expect(back.constants.size).toBe(1);
  });

  it('carries the conditions a slice of a dynamic dim put on its size, and keys by them', () => {
    const g = trace((x: T) => [x.slice(0, 1, -1), x.slice(0, -3, 2)], [{ shape: [4, 2] }], { dynamic: { 0: [0] } });
    expect(g.guards?.map((x) => [x.dim.toString(), x.min, x.max])).toEqual([['s0', 2, undefined], ['s0', 3, 5]]);
    const back = parseGraph(JSON.stringify(serializeGraph(g)));
    expect(g.guards?.map((x) => [x.op, x.site?.file])).toEqual([['slice(0, 1, -1)', __filename], ['slice(0, -3, 2)', __filename]]);
    expect(back.guards).toEqual(g.guards?.map(({ site: _site, ...rest }) => rest)); // no call sites (paths) in a bundle's graph
    const s = serializeGraph(g);
    expect(graphKey(deserializeGraph({ ...s, guards: [] }))).not.toBe(graphKey(g));
  });

  it('keys do not depend on call sites or file paths', () => {
    const g = trace(transformer, transformerSpecs);
    const s = serializeGraph(g);
    const moved = deserializeGraph({ ...s, files: ['/elsewhere/model.ts'], sites: s.sites.map(([n, , l, c]) => [n, 0, l + 10, c]) });
    expect(graphKey(moved)).toBe(graphKey(g));
    const k1 = graphKey(trace(transformer, transformerSpecs));
    expect(k1).toBe(graphKey(g)); // tracing again gives the same key
    expect(graphKey(trace(transformer, transformerSpecs, { dynamic: { 0: [0] } }))).not.toBe(k1);
  });

  it('property: 300 random programs — equal structure ⇔ equal key, exact round trips', () => {
    const keyOf = new Map<string, string>();
    const textOf = new Map<string, string>();
    const nodeKeys = new Map<string, string>();
    for (let seed = 1; seed <= 300; seed++) {
      const g = randomGraph(seed);
      const text = canonicalText(g);
      const key = graphKey(g);
      if (keyOf.has(text)) expect(keyOf.get(text)).toBe(key);
      if (textOf.has(key)) expect(textOf.get(key)).toBe(text);
      keyOf.set(text, key);
      textOf.set(key, text);
      const full = JSON.stringify(serializeGraph(g));
      const back = parseGraph(full);
      expect(JSON.stringify(serializeGraph(back))).toBe(full);
      expect(graphKey(back)).toBe(key);
      for (const n of toposort(g)) {
        const desc = JSON.stringify([n.op, n.dtype, String(n.arg), String(n.shape), n.src.map((x) => x.key)]);
        if (nodeKeys.has(n.key)) expect(nodeKeys.get(n.key)).toBe(desc);
        nodeKeys.set(n.key, desc);
      }
    }
    expect(keyOf.size).toBeGreaterThan(200); // the generator makes mostly distinct programs
  });

  it('computes the same key in a second Node process', () => {
    const graphs = [trace(transformer, transformerSpecs, { dynamic: { 0: [0] } }), ...[7, 8, 9].map(randomGraph)];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-key-'));
    const file = path.join(dir, 'graphs.json');
    fs.writeFileSync(file, JSON.stringify(graphs.map((g) => JSON.stringify(serializeGraph(g)))));
    const out = execFileSync(process.execPath, ['-e', childScript(), file], { encoding: 'utf8', cwd: path.resolve(__dirname, '..') });
    expect(JSON.parse(out)).toEqual(graphs.map(graphKey));
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

/**
 * The child loads kiln's IR from dist/ when `npm run build:ts` has built it from the current
 * sources, and otherwise compiles lib/ with swc on the fly; either way a fresh process.
 */
function childScript(): string {
  const root = path.resolve(__dirname, '..');
  const sources = ['lib/ir', 'lib/util'].flatMap((d) => fs.readdirSync(path.join(root, d)).map((f) => path.join(root, d, f)));
  const built = path.join(root, 'dist/ir/index.js');
  const fresh = fs.existsSync(built) && sources.every((f) => fs.statSync(f).mtimeMs <= fs.statSync(built).mtimeMs);
  const loader = fresh
    ? `const ir = require(${JSON.stringify(built)});`
    : `const swc = require('@swc/core');
       require.extensions['.ts'] = (m, f) => m._compile(swc.transformSync(fs.readFileSync(f, 'utf8'),
         { filename: f, module: { type: 'commonjs' }, jsc: { target: 'es2022', parser: { syntax: 'typescript' } } }).code, f);
       const ir = require(${JSON.stringify(path.join(root, 'lib/ir/index.ts'))});`;
  return `const fs = require('fs'); ${loader}
    const texts = JSON.parse(fs.readFileSync(process.argv[1], 'utf8'));
    process.stdout.write(JSON.stringify(texts.map((t) => ir.graphKey(ir.parseGraph(t)))));`;
}

describe('malformed graphs', () => {
  const base = serializeGraph(trace(transformer, transformerSpecs, { dynamic: { 0: [0] } }));
  const withConst = serializeGraph(trace((x: T) => x.matmul(W[0]), [{ shape: [2, 4] }]));
  const clone = (s: SerializedGraph = base): SerializedGraph => JSON.parse(JSON.stringify(s));
  const idxOf = (op: string): number => base.nodes.findIndex((n) => n.op === op);

  const cases: [string, () => unknown, RegExp][] = [
    ['not an object', () => 42, /not a kiln graph/],
    ['wrong format', () => ({ ...clone(), format: 'onnx' }), /not a kiln graph/],
    ['unknown version', () => ({ ...clone(), version: 2 }), /unsupported kiln graph version 2/],
    ['nodes missing', () => ({ ...clone(), nodes: undefined }), /nodes must be an array/],
    ['unknown op', () => { const s = clone(); s.nodes[idxOf('EXP')].op = 'FROB'; return s; }, /unknown op "FROB"/],
    ['unknown dtype', () => { const s = clone(); s.nodes[0].dtype = 'float64'; return s; }, /unknown dtype "float64"/],
    ['source out of range', () => { const s = clone(); s.nodes[idxOf('EXP')].src = [999]; return s; }, /source index 999 is out of range/],
    ['forward reference', () => { const s = clone(); const i = idxOf('EXP'); s.nodes[i].src = [i + 1]; return s; }, /out of range/],
    ['wrong arity', () => { const s = clone(); s.nodes[idxOf('EXP')].src = []; return s; }, /takes 1 sources/],
    ['shape mismatch', () => { const s = clone(); s.nodes[idxOf('EXP')].shape[0] = 3; return s; }, /declares shape/],
    ['bad reshape arg', () => { const s = clone(); const n = s.nodes[idxOf('RESHAPE')]; n.arg = [1, 2, 3]; return s; }, /RESHAPE/],
    ['bad dim text', () => { const s = clone(); s.nodes[0].shape[0] = 's0+*'; return s; }, /dim/],
    ['bad output', () => ({ ...clone(), outputs: [9999] }), /out of range/],
    ['bad output structure', () => ({ ...clone(), outputStructure: { kind: 'set' } }), /unknown outputStructure kind/],
    ['input not listed', () => ({ ...clone(), inputs: [0] }), /not listed in inputs/],
    ['unbound symbol', () => ({ ...clone(), symbols: [] }), /unbound symbol s0/],
    ['bad site', () => ({ ...clone(), sites: [[0, 99, 1, 1]] }), /site file/],
    ['guard on an unbound symbol', () => ({ ...clone(), guards: [{ dim: 's7', min: 2, op: 'slice' }] }), /guard dim s7 uses an unbound symbol/],
    ['guard without integer bounds', () => ({ ...clone(), guards: [{ dim: 's0', min: 0.5, op: 'slice' }] }), /integer bounds/],
    ['constant tampered', () => { const s = clone(withConst); s.constants[0].data = Buffer.alloc(64, 1).toString('base64'); return s; }, /content hash/],
    ['constant missing', () => ({ ...clone(withConst), constants: [] }), /missing constant/],
  ];
  it.each(cases)('%s → FormatError', (_name, make, message) => {
    let err: unknown;
    try {
      deserializeGraph(make());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toMatch(message);
  });

  it('truncated or non-JSON text → FormatError', () => {
    const text = JSON.stringify(base);
    for (const cut of [0, 1, 10, text.length >> 1, text.length - 1]) expect(() => parseGraph(text.slice(0, cut))).toThrow(FormatError);
  });

  it('fuzz: random corruption is a valid graph or a FormatError, never another error', () => {
    const r = prng(99);
    const junk = [null, -1, 1.5, 'x', [], {}, [0], 'INPUT', 1e9, true];
    for (let i = 0; i < 300; i++) {
      const s = clone() as unknown as Record<string, unknown>;
      // Walk to a random value and replace it.
      let holder: Record<string, unknown> | unknown[] = s;
      let key: string | number = 'nodes';
      for (let depth = 0; depth < 4; depth++) {
        const keys = Object.keys(holder);
        if (!keys.length) break;
        key = keys[Math.floor(r() * keys.length)];
        const next = (holder as Record<string, unknown>)[key];
        if (next === null || typeof next !== 'object' || r() < 0.25) break;
        holder = next as Record<string, unknown>;
      }
      (holder as Record<string, unknown>)[key] = junk[Math.floor(r() * junk.length)];
      try {
        deserializeGraph(s);
      } catch (e) {
        if (!(e instanceof KilnError) || !(e instanceof FormatError)) throw new Error(`corruption ${i} at ${String(key)} threw ${String(e)}`);
      }
    }
  });
});
