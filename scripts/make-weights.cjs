#!/usr/bin/env node
'use strict';
/**
 * Makes the example models' weights: examples/weights/gpt.safetensors and mlp.safetensors.
 *
 *   node scripts/make-weights.cjs [outDir]      (default examples/weights; needs dist/)
 *
 * Deterministic: a seeded PRNG (mulberry32) and float64 arithmetic with Math.sqrt only
 * (correctly rounded everywhere), so every Node version writes the same bytes and a test
 * checks the committed files against this script.
 *
 * The GPT's weights are constructed, not trained (kiln has no training): the MLP of its
 * last block is a lookup table from position to the next character of MESSAGE, and
 * everything else is small seeded noise. So greedy generation from a prefix of MESSAGE
 * spells out the rest of it — if, and only if, every kernel computed the right numbers.
 * The attention and the first block still contribute a few percent to every activation,
 * which the tests compare against kiln's interpreter.
 */

/** Characters of the GPT's vocabulary (token id = index). */
const VOCAB = "\n !',-.:;?0123456789abcdefghijklmnopqrstuvwxyz";
/** What the GPT "knows": it continues any prefix of this, one character per position. */
const MESSAGE = 'kiln: traced, fused, compiled once. warm ever after.\n';
const GPT = { nLayer: 2, nHead: 4, nEmbd: 64, blockSize: 56 };

/** mulberry32: a small, well-mixed 32-bit PRNG; uniform floats in [0, 1). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uniform = (rand, n, scale) => Float64Array.from({ length: n }, () => (2 * rand() - 1) * scale);

/**
 * `count` orthonormal vectors of `dim` entries, each with mean zero (so layerNorm keeps
 * their directions), by Gram-Schmidt on seeded noise. count < dim.
 */
function centeredOrthonormal(rand, count, dim) {
  const out = [];
  while (out.length < count) {
    const v = uniform(rand, dim, 1);
    const mean = v.reduce((s, x) => s + x, 0) / dim;
    for (let i = 0; i < dim; i++) v[i] -= mean;
    for (const u of out) {
      let dot = 0;
      for (let i = 0; i < dim; i++) dot += v[i] * u[i];
      for (let i = 0; i < dim; i++) v[i] -= dot * u[i];
    }
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    if (norm < 1e-3) continue; // (never in practice) nearly dependent: draw again
    out.push(v.map((x) => x / norm));
  }
  return out;
}

const f32 = (shape, values) => ({ dtype: 'float32', shape, data: Float32Array.from(values) });

/** The GPT's tensors (GPT-2 names and layouts: weights are [in, out]) and metadata. */
function makeGpt() {
  const { nLayer, nHead, nEmbd: d, blockSize } = GPT;
  const V = VOCAB.length;
  const hidden = 4 * d;
  if (MESSAGE.length > blockSize || blockSize >= d || V >= d) throw new Error('make-weights: MESSAGE, blockSize and VOCAB must fit the model');
  for (const ch of MESSAGE) if (!VOCAB.includes(ch)) throw new Error(`make-weights: ${JSON.stringify(ch)} is not in VOCAB`);
  const rand = rng(0x6b696c6e); // "kiln"
  const noise = (shape, scale) => f32(shape, uniform(rand, shape.reduce((a, b) => a * b, 1), scale));
  const near = (n, center, scale) => f32([n], uniform(rand, n, scale).map((x) => center + x));

  // Token and position embeddings: orthonormal directions; positions 8× stronger, so the
  // residual stream is dominated by where a token is, not what it is.
  const tok = centeredOrthonormal(rand, V, d);
  const pos = centeredOrthonormal(rand, blockSize, d);
  const t = {};
  t['wte.weight'] = f32([V, d], tok.flatMap((v) => [...v]));
  t['wpe.weight'] = f32([blockSize, d], pos.flatMap((v) => [...v].map((x) => x * Math.sqrt(d))));

  for (let l = 0; l < nLayer; l++) {
    const p = `h.${l}.`;
    t[`${p}ln_1.weight`] = near(d, 1, 0.05);
    t[`${p}ln_1.bias`] = near(d, 0, 0.02);
    t[`${p}attn.c_attn.weight`] = noise([d, 3 * d], 0.05);
    t[`${p}attn.c_attn.bias`] = noise([3 * d], 0.02);
    t[`${p}attn.c_proj.weight`] = noise([d, d], 0.05);
    t[`${p}attn.c_proj.bias`] = noise([d], 0.02);
    t[`${p}ln_2.weight`] = near(d, 1, 0.05);
    t[`${p}ln_2.bias`] = near(d, 0, 0.02);
    const fc = noise([d, hidden], 0.05);
    const fcBias = noise([hidden], 0.02);
    const proj = noise([hidden, d], 0.05);
    if (l === nLayer - 1) {
      // The lookup table: hidden unit j fires (≈ 6) only at position j, where layerNorm's
      // output points along wpe[j]; it then writes 8 × the direction of the next character.
      const gain = 1.5;
      for (let j = 0; j + 1 < MESSAGE.length; j++) {
        for (let i = 0; i < d; i++) fc.data[i * hidden + j] = gain * pos[j][i];
        fcBias.data[j] = -gain * 0.5 * Math.sqrt(d);
        const next = tok[VOCAB.indexOf(MESSAGE[j + 1])];
        for (let i = 0; i < d; i++) proj.data[j * d + i] = 8 * next[i];
      }
    }
    t[`${p}mlp.c_fc.weight`] = fc;
    t[`${p}mlp.c_fc.bias`] = fcBias;
    t[`${p}mlp.c_proj.weight`] = proj;
    t[`${p}mlp.c_proj.bias`] = noise([d], 0.02);
  }
  t['ln_f.weight'] = near(d, 1, 0.05);
  t['ln_f.bias'] = near(d, 0, 0.02);
  const metadata = {
    format: 'kiln-example-gpt',
    vocab: VOCAB,
    n_layer: String(nLayer),
    n_head: String(nHead),
    n_embd: String(d),
    block_size: String(blockSize),
    note: 'constructed, not trained: the last MLP maps each position to the next character of a message (scripts/make-weights.cjs)',
  };
  return { tensors: t, metadata };
}

/** A small MLP classifier: 16 features → 64 (GELU) → 64 (GELU) → 4 classes. */
function makeMlp() {
  const rand = rng(0x6d6c70); // "mlp"
  const sizes = [16, 64, 64, 4];
  const t = {};
  for (let i = 0; i + 1 < sizes.length; i++) {
    const [n, m] = [sizes[i], sizes[i + 1]];
    t[`layers.${i}.weight`] = f32([n, m], uniform(rand, n * m, Math.sqrt(3 / n))); // variance 1/n
    t[`layers.${i}.bias`] = f32([m], uniform(rand, m, 0.1));
  }
  return { tensors: t, metadata: { format: 'kiln-example-mlp', sizes: sizes.join(',') } };
}

module.exports = { VOCAB, MESSAGE, GPT, makeGpt, makeMlp };

if (require.main === module) {
  const path = require('node:path');
  const fs = require('node:fs');
  const outDir = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'examples', 'weights'));
  let kiln;
  try {
    kiln = require('..');
  } catch (e) {
    console.error(`make-weights: cannot load kiln (${e.message}); run \`npm run build:ts\` first`);
    process.exit(1);
  }
  fs.mkdirSync(outDir, { recursive: true });
  (async () => {
    for (const [file, make] of [['gpt.safetensors', makeGpt], ['mlp.safetensors', makeMlp]]) {
      const { tensors, metadata } = make();
      const asTensors = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, kiln.tensor(v.data, v.shape, v.dtype)]));
      const out = path.join(outDir, file);
      await kiln.saveSafetensors(out, asTensors, metadata);
      const n = Object.values(tensors).reduce((s, v) => s + v.data.length, 0);
      console.log(`wrote ${path.relative(process.cwd(), out)}: ${Object.keys(tensors).length} tensors, ${n} parameters, ${fs.statSync(out).size} bytes`);
    }
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
