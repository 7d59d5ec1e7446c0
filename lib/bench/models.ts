/**
 * The CPU benchmark models, each defined once: deterministic weights from a seeded PRNG, a
 * kiln function over the public API (weights are inputs of the function, never captured),
 * and the equivalent ONNX graph for onnxruntime built from the same weights.
 *
 * - `mlp`: `layers` Linear layers of `width`, exact GELU between them, none after the last.
 * - `block`: one GPT-style pre-norm transformer block,
 *   `x + proj(sdpa_causal(qkv(layerNorm(x))))`, then `x + fc2(gelu(fc1(layerNorm(x))))`
 *   with a 4·d hidden layer and biases everywhere.
 * - `gpt` (lib/bench/gpt.ts): the examples' GPT-style character model, its definition and
 *   weights taken from examples/.
 */
import * as kiln from '../index';
import type { OnnxGraph } from './onnx';

/** The ONNX builder, loaded when a model's ONNX graph is built (the startup benchmark's children never do). */
function onnxGraph(name: string): OnnxGraph {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: kept out of the startup children's import time
  return new (require('./onnx') as typeof import('./onnx')).OnnxGraph(name);
}

/** A named weight tensor; the kiln function receives them in this order after `x`. */
export interface Weight {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** A data input of a model (float32 activations, or int32 token ids); the ONNX input of that name. */
export interface Input {
  name: string;
  shape: number[];
  data: Float32Array | Int32Array;
}

/** One benchmark model: its data, its FLOP count and both implementations. */
export interface BenchModel {
  name: string;
  /** Human-readable sizes, for the table and the JSON. */
  config: Record<string, number>;
  /** The data inputs, in the order the kiln function takes them (before the weights). */
  inputs: Input[];
  weights: Weight[];
  outShape: number[];
  /** Floating-point operations of one forward pass (2·M·N·K per matmul, attention included). */
  flops: number;
  /** The model over kiln's public API: `(...inputs, ...weights) => y`. */
  kilnFn: (...args: kiln.Tensor[]) => kiln.Tensor;
  /** kiln.compile options the model is meant to be compiled with (name, dynamic dims); device and cache come from the benchmark. */
  compileOptions?: Pick<kiln.CompileOptions, 'name' | 'dynamic'>;
  /** The same model as an ONNX graph with the weights as initializers and `inputs` as its inputs. */
  onnx(): Uint8Array;
}

/** The kiln / ONNX element type of an input. */
export function inputDType(i: Input): 'float32' | 'int32' {
  return i.data instanceof Int32Array ? 'int32' : 'float32';
}

// ─── deterministic data ──────────────────────────────────────────────────────────────────────

/** A small seeded PRNG (splitmix32): uniform floats in [0, 1) and normals by Box–Muller. */
export class Prng {
  private state: number;
  private spare: number | undefined;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  uniform(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 2 ** 32;
  }
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const u = 1 - this.uniform(); // in (0, 1], so log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(t);
    return r * Math.cos(t);
  }
}

function normalWeight(rng: Prng, name: string, shape: number[], std: number, mean = 0): Weight {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
  return { name, shape, data };
}

/** GPT-2's initializer scale for Linear weights. */
const INIT_STD = 0.02;

// ─── MLP ─────────────────────────────────────────────────────────────────────────────────────

export interface MlpConfig {
  batch: number;
  width: number;
  layers: number;
}

/** The MLP benchmark: `layers` × (Linear width→width), GELU between layers. */
export function mlp(cfg: MlpConfig = { batch: 64, width: 1024, layers: 4 }, seed = 1): BenchModel {
  const { batch, width, layers } = cfg;
  const rng = new Prng(seed);
  const x = normalWeight(rng, 'x', [batch, width], 1);
  const weights: Weight[] = [];
  for (let l = 0; l < layers; l++) {
    weights.push(normalWeight(rng, `w${l}`, [width, width], INIT_STD));
    weights.push(normalWeight(rng, `b${l}`, [width], INIT_STD));
  }

  const kilnFn = (h: kiln.Tensor, ...ws: kiln.Tensor[]): kiln.Tensor => {
    for (let l = 0; l < layers; l++) {
      h = h.matmul(ws[2 * l]).add(ws[2 * l + 1]);
      if (l < layers - 1) h = h.gelu();
    }
    return h;
  };

  const onnx = (): Uint8Array => {
    const g = onnxGraph('mlp');
    let h = g.input('x', 'float32', [batch, width]);
    for (let l = 0; l < layers; l++) {
      const [w, b] = [weights[2 * l], weights[2 * l + 1]];
      h = g.node('Add', [g.node('MatMul', [h, g.initializer(w.name, w.data, w.shape)]), g.initializer(b.name, b.data, b.shape)]);
      if (l < layers - 1) h = g.node('Gelu', [h]);
    }
    g.output(h, 'float32', [batch, width]);
    return g.toBytes();
  };

  return { name: 'mlp', config: { ...cfg }, inputs: [x], weights, outShape: [batch, width], flops: layers * 2 * batch * width * width, kilnFn, onnx };
}

// ─── transformer block ───────────────────────────────────────────────────────────────────────

export interface BlockConfig {
  batch: number;
  seq: number;
  d: number;
  heads: number;
}

/** The transformer-block benchmark (GPT-2 layout, pre-norm, causal self-attention). */
export function block(cfg: BlockConfig = { batch: 1, seq: 128, d: 768, heads: 12 }, seed = 2): BenchModel {
  const { batch: B, seq: T, d: D, heads: H } = cfg;
  if (D % H !== 0) throw new Error(`block: d=${D} is not divisible by heads=${H}`);
  const hd = D / H;
  const rng = new Prng(seed);
  const x = normalWeight(rng, 'x', [B, T, D], 1);
  const weights: Weight[] = [
    normalWeight(rng, 'ln1_w', [D], INIT_STD, 1),
    normalWeight(rng, 'ln1_b', [D], INIT_STD),
    normalWeight(rng, 'qkv_w', [D, 3 * D], INIT_STD),
    normalWeight(rng, 'qkv_b', [3 * D], INIT_STD),
    normalWeight(rng, 'proj_w', [D, D], INIT_STD),
    normalWeight(rng, 'proj_b', [D], INIT_STD),
    normalWeight(rng, 'ln2_w', [D], INIT_STD, 1),
    normalWeight(rng, 'ln2_b', [D], INIT_STD),
    normalWeight(rng, 'fc1_w', [D, 4 * D], INIT_STD),
    normalWeight(rng, 'fc1_b', [4 * D], INIT_STD),
    normalWeight(rng, 'fc2_w', [4 * D, D], INIT_STD),
    normalWeight(rng, 'fc2_b', [D], INIT_STD),
  ];

  const kilnFn = (xt: kiln.Tensor, ...ws: kiln.Tensor[]): kiln.Tensor => {
    const [ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fc1w, fc1b, fc2w, fc2b] = ws;
    const qkv = kiln.layerNorm(xt, ln1w, ln1b).matmul(qkvw).add(qkvb); // [B, T, 3D]
    const heads = (t: kiln.Tensor) => t.reshape([B, T, H, hd]).permute([0, 2, 1, 3]); // [B, H, T, hd]
    const q = heads(qkv.slice(2, 0, D));
    const k = heads(qkv.slice(2, D, 2 * D));
    const v = heads(qkv.slice(2, 2 * D, 3 * D));
    const att = kiln.scaledDotProductAttention(q, k, v, { causal: true }).permute([0, 2, 1, 3]).reshape([B, T, D]);
    const x1 = xt.add(att.matmul(projw).add(projb));
    const mlpOut = kiln.layerNorm(x1, ln2w, ln2b).matmul(fc1w).add(fc1b).gelu().matmul(fc2w).add(fc2b);
    return x1.add(mlpOut);
  };

  const onnx = (): Uint8Array => {
    const g = onnxGraph('block');
    const w: Record<string, string> = {};
    for (const t of weights) w[t.name] = g.initializer(t.name, t.data, t.shape);
    const xin = g.input('x', 'float32', [B, T, D]);
    const out = onnxBlock(g, xin, (role) => w[role], { batch: B, seq: T, d: D, heads: H }, onnxCausalMask(g, T));
    g.output(out, 'float32', [B, T, D]);
    return g.toBytes();
  };

  const matmuls = 2 * B * T * D * (3 * D + D + 4 * D + 4 * D);
  // Attention counted in full (T×T scores and T×T·hd weighted sum per head), as is customary.
  const attention = 2 * (2 * B * H * T * T * hd);
  return { name: 'block', config: { ...cfg }, inputs: [x], weights, outShape: [B, T, D], flops: matmuls + attention, kilnFn, onnx };
}

/** The weights of one transformer block, by the role names of `block`'s weights (`ln1_w`, `qkv_b`, …). */
export type BlockRole = 'ln1_w' | 'ln1_b' | 'qkv_w' | 'qkv_b' | 'proj_w' | 'proj_b' | 'ln2_w' | 'ln2_b' | 'fc1_w' | 'fc1_b' | 'fc2_w' | 'fc2_b';

/** An additive causal mask for ONNX attention scores: 0 on and below the diagonal, -inf above. */
export function onnxCausalMask(g: OnnxGraph, T: number): string {
  const mask = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -Infinity;
  return g.initializer('causal_mask', mask, [T, T]);
}

/**
 * One pre-norm transformer block as ONNX nodes (the computation of `block`'s kiln function):
 * `x1 = x + proj(attention(qkv(LN1(x))))`, `x1 + fc2(Gelu(fc1(LN2(x1))))`. `w` names the
 * value (initializer) of each weight role; `mask` is `onnxCausalMask(g, seq)`.
 */
export function onnxBlock(g: OnnxGraph, xin: string, w: (role: BlockRole) => string, cfg: BlockConfig, mask: string): string {
  const { batch: B, seq: T, d: D, heads: H } = cfg;
  const hd = D / H;
  const linear = (h: string, name: 'qkv' | 'proj' | 'fc1' | 'fc2') => g.node('Add', [g.node('MatMul', [h, w(`${name}_w`)]), w(`${name}_b`)]);
  const layerNorm = (h: string, name: 'ln1' | 'ln2') => g.node('LayerNormalization', [h, w(`${name}_w`), w(`${name}_b`)], { axis: -1, epsilon: 1e-5 });

  const qkv = linear(layerNorm(xin, 'ln1'), 'qkv');
  const [q, k, v] = g.nodeN('Split', [qkv], 3, { axis: -1, num_outputs: 3 });
  const headShape = g.int64s([B, T, H, hd]);
  const heads = (t: string, perm: number[]) => g.node('Transpose', [g.node('Reshape', [t, headShape])], { perm });
  // Scores: q·kᵀ/√hd plus the additive causal mask.
  const scores = g.node('Add', [g.node('Mul', [g.node('MatMul', [heads(q, [0, 2, 1, 3]), heads(k, [0, 2, 3, 1])]), g.constant(1 / Math.sqrt(hd))]), mask]);
  const probs = g.node('Softmax', [scores], { axis: -1 });
  const att = g.node('Reshape', [g.node('Transpose', [g.node('MatMul', [probs, heads(v, [0, 2, 1, 3])])], { perm: [0, 2, 1, 3] }), g.int64s([B, T, D])]);
  const x1 = g.node('Add', [xin, linear(att, 'proj')]);
  const hidden = g.node('Gelu', [linear(layerNorm(x1, 'ln2'), 'fc1')], { approximate: 'none' });
  return g.node('Add', [x1, linear(hidden, 'fc2')]);
}
