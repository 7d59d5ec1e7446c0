/**
 * The examples' GPT-style character model as a benchmark model: the definition is the one in
 * examples/gpt.js (required from there, never copied: `loadGpt`, `makeForward`, the weight
 * names and the compile options), the weights are examples/weights/gpt.safetensors, and the
 * ONNX graph for onnxruntime is built here from the same weights: Gather for the token and
 * position embeddings, then per block the nodes of `onnxBlock` (LayerNormalization, MatMul,
 * causal attention with Softmax, exact Gelu), a final LayerNormalization and the tied logits
 * (MatMul against the transposed token embedding).
 *
 * examples/ is not part of the npm package: this model runs from a kiln checkout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as kiln from '../index';
import { OnnxGraph } from './onnx';
import { Prng, onnxBlock, onnxCausalMask, type BenchModel, type BlockRole, type Weight } from './models';

/** The example model's config, as examples/gpt.js reads it from the weights' metadata. */
export interface GptConfig {
  vocab: string;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  blockSize: number;
}

/** What the benchmark uses of examples/gpt.js. */
interface GptExample {
  WEIGHTS: string;
  loadGpt(file?: string): Promise<{ cfg: GptConfig; weights: kiln.Tensor[]; forward: (...args: kiln.Tensor[]) => kiln.Tensor; file: string }>;
  weightNames(cfg: GptConfig): string[];
  compileOptions(cfg: GptConfig): kiln.CompileOptions;
}

/** examples/gpt.js, from lib/bench or dist/bench alike. */
export const GPT_EXAMPLE = path.join(__dirname, '..', '..', 'examples', 'gpt.js');

function loadExample(): GptExample {
  if (!fs.existsSync(GPT_EXAMPLE)) {
    throw new Error(`the gpt model is the example ${GPT_EXAMPLE}, which the npm package does not include: run the benchmark from a kiln checkout`);
  }
  // The example requires 'kiln', which resolves to this package (dist/); tests map it to lib/.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(GPT_EXAMPLE) as GptExample;
}

/** Which of `onnxBlock`'s weight roles each of GPT-2's per-block weight names fills. */
const ROLES: Record<BlockRole, string> = {
  ln1_w: 'ln_1.weight',
  ln1_b: 'ln_1.bias',
  qkv_w: 'attn.c_attn.weight',
  qkv_b: 'attn.c_attn.bias',
  proj_w: 'attn.c_proj.weight',
  proj_b: 'attn.c_proj.bias',
  ln2_w: 'ln_2.weight',
  ln2_b: 'ln_2.bias',
  fc1_w: 'mlp.c_fc.weight',
  fc1_b: 'mlp.c_fc.bias',
  fc2_w: 'mlp.c_proj.weight',
  fc2_b: 'mlp.c_proj.bias',
};

export interface GptBenchOptions {
  /** Sequence length of the benchmark input (default: the model's block size, its longest). */
  seq?: number;
  /** The weights file (default: the example's). */
  file?: string;
}

/**
 * The example GPT on one sequence of `seq` token ids (seeded, uniform over the vocabulary) and
 * their positions, both int32 [1, seq]; the output is the logits [1, seq, vocab]. kiln compiles
 * the example's function with the example's options (the sequence dim dynamic), as
 * examples/gpt.js does.
 */
export async function gpt(opts: GptBenchOptions = {}, seed = 3): Promise<BenchModel> {
  const ex = loadExample();
  const model = await ex.loadGpt(opts.file ?? ex.WEIGHTS);
  const { cfg } = model;
  const names = ex.weightNames(cfg);
  const weights: Weight[] = [];
  for (let i = 0; i < names.length; i++) {
    const t = model.weights[i];
    if (t.dtype !== 'float32') throw new Error(`gpt: weight ${names[i]} is ${t.dtype}; the benchmark expects float32`);
    weights.push({ name: names[i], shape: t.shape, data: (await t.toArray()) as Float32Array });
  }
  const T = opts.seq ?? cfg.blockSize;
  if (!Number.isInteger(T) || T < 1 || T > cfg.blockSize) throw new Error(`gpt: seq must be an integer in 1..${cfg.blockSize}, got ${T}`);
  const { nLayer: L, nHead: H, nEmbd: D } = cfg;
  const V = cfg.vocab.length;
  const rng = new Prng(seed);
  const ids = { name: 'ids', shape: [1, T], data: Int32Array.from({ length: T }, () => Math.floor(rng.uniform() * V)) };
  const pos = { name: 'pos', shape: [1, T], data: Int32Array.from({ length: T }, (_, i) => i) };

  const onnx = (): Uint8Array => {
    const g = new OnnxGraph('gpt');
    const w: Record<string, string> = {};
    for (const t of weights) w[t.name] = g.initializer(t.name.replace(/\./g, '_'), t.data, t.shape);
    const idsIn = g.input('ids', 'int32', [1, T]);
    const posIn = g.input('pos', 'int32', [1, T]);
    const embed = (table: string, at: string) => g.node('Gather', [w[table], at], { axis: 0 }); // [1, T, D]
    let x = g.node('Add', [embed('wte.weight', idsIn), embed('wpe.weight', posIn)]);
    const mask = onnxCausalMask(g, T);
    for (let l = 0; l < L; l++) x = onnxBlock(g, x, (role) => w[`h.${l}.${ROLES[role]}`], { batch: 1, seq: T, d: D, heads: H }, mask);
    x = g.node('LayerNormalization', [x, w['ln_f.weight'], w['ln_f.bias']], { axis: -1, epsilon: 1e-5 });
    const logits = g.node('MatMul', [x, g.node('Transpose', [w['wte.weight']], { perm: [1, 0] })]); // tied weights
    g.output(logits, 'float32', [1, T, V]);
    return g.toBytes();
  };

  const perBlock = 2 * T * D * (3 * D + D + 4 * D + 4 * D) + 2 * (2 * H * T * T * (D / H));
  const example = ex.compileOptions(cfg);
  return {
    name: 'gpt',
    config: { layers: L, heads: H, d: D, vocab: V, seq: T },
    inputs: [ids, pos],
    weights,
    outShape: [1, T, V],
    flops: L * perBlock + 2 * T * D * V,
    kilnFn: model.forward,
    compileOptions: { name: example.name, dynamic: example.dynamic },
    onnx,
  };
}
