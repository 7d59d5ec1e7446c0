'use strict';
/**
 * A small GPT-style character model, compiled by kiln and run with greedy decoding.
 *
 *   node examples/gpt.js ["prompt"] [new tokens]
 *
 * The model is GPT-2's architecture at toy size: token + position embeddings, pre-norm
 * blocks of causal multi-head attention and a GELU MLP, a final layerNorm, and logits
 * against the token embedding (tied weights). Its weights are read from a .safetensors
 * file and passed to the compiled function as inputs, so one compiled program (and one
 * bundle on disk) serves any weights of the same shapes.
 *
 * The sequence dim is dynamic: every generated token runs the model on a longer sequence,
 * and all of them use the one program compiled on the first call.
 *
 * Run from a checkout after `npm install` (which builds dist/), or copy it into a project
 * that depends on kiln. This file is the model's one definition: the demo (npm start), the
 * tests and the CPU benchmark (`kiln bench --models gpt`, lib/bench/gpt.ts) require it.
 */
const path = require('node:path');
const kiln = require('kiln'); // this package, by its own name (Node resolves a package's self-reference)

const WEIGHTS = path.join(__dirname, 'weights', 'gpt.safetensors');

/** Reads the model's config from the weights file's metadata. */
function configOf(metadata, tensors) {
  const int = (k) => {
    const v = Number(metadata[k]);
    if (!Number.isInteger(v) || v <= 0) throw new Error(`gpt: weights metadata ${k} must be a positive integer, got ${JSON.stringify(metadata[k])}`);
    return v;
  };
  const cfg = { vocab: metadata.vocab, nLayer: int('n_layer'), nHead: int('n_head'), nEmbd: int('n_embd'), blockSize: int('block_size') };
  if (typeof cfg.vocab !== 'string' || cfg.vocab.length !== tensors['wte.weight'].shape[0]) throw new Error('gpt: weights metadata vocab must list one character per row of wte.weight');
  return cfg;
}

/** The names of the weights, in the order the compiled function takes them. */
function weightNames(cfg) {
  const names = ['wte.weight', 'wpe.weight'];
  for (let l = 0; l < cfg.nLayer; l++) {
    for (const n of ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias',
      'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias']) {
      names.push(`h.${l}.${n}`);
    }
  }
  names.push('ln_f.weight', 'ln_f.bias');
  return names;
}

/**
 * The model as a function of tensors: ids and positions [batch, T] (int32) and the weights
 * in `weightNames` order → logits [batch, T, vocab]. Runs eagerly as plain JS, or is traced
 * by kiln.compile. T may be a symbolic dim inside a trace: it is only passed on to reshape.
 */
function makeForward(cfg) {
  const names = weightNames(cfg);
  const { nLayer, nHead } = cfg;
  const headDim = cfg.nEmbd / nHead;
  return function gpt(ids, pos, ...weights) {
    const w = {};
    names.forEach((n, i) => (w[n] = weights[i]));
    const [B, T] = ids.dims;
    const d = cfg.nEmbd;
    const heads = (t) => t.reshape([B, T, nHead, headDim]).transpose(1, 2); // [B, H, T, headDim]

    let x = kiln.embedding(ids, w['wte.weight']).add(kiln.embedding(pos, w['wpe.weight']));
    for (let l = 0; l < nLayer; l++) {
      const p = `h.${l}.`;
      const a = kiln.layerNorm(x, w[`${p}ln_1.weight`], w[`${p}ln_1.bias`]);
      const qkv = a.matmul(w[`${p}attn.c_attn.weight`]).add(w[`${p}attn.c_attn.bias`]);
      const q = heads(qkv.slice(2, 0, d));
      const k = heads(qkv.slice(2, d, 2 * d));
      const v = heads(qkv.slice(2, 2 * d, 3 * d));
      const y = kiln.scaledDotProductAttention(q, k, v, { causal: true }).transpose(1, 2).reshape([B, T, d]);
      x = x.add(y.matmul(w[`${p}attn.c_proj.weight`]).add(w[`${p}attn.c_proj.bias`]));
      const m = kiln.layerNorm(x, w[`${p}ln_2.weight`], w[`${p}ln_2.bias`]);
      const hidden = m.matmul(w[`${p}mlp.c_fc.weight`]).add(w[`${p}mlp.c_fc.bias`]).gelu();
      x = x.add(hidden.matmul(w[`${p}mlp.c_proj.weight`]).add(w[`${p}mlp.c_proj.bias`]));
    }
    x = kiln.layerNorm(x, w['ln_f.weight'], w['ln_f.bias']);
    return x.matmul(w['wte.weight'].transpose(0, 1));
  };
}

/** Loads the weights and config; `weights` are the tensors in `weightNames` order. */
async function loadGpt(file = WEIGHTS) {
  const { tensors, metadata } = await kiln.loadSafetensors(file);
  const cfg = configOf(metadata, tensors);
  const weights = weightNames(cfg).map((n) => {
    if (!tensors[n]) throw new Error(`gpt: ${file} has no tensor ${n}`);
    return tensors[n];
  });
  return { cfg, weights, forward: makeForward(cfg), file };
}

/**
 * kiln.compile options for the model: the sequence dim of ids and positions is dynamic.
 * The name carries the config that is not visible in the inputs' shapes (the head count),
 * so models that differ only there get different bundles.
 */
function compileOptions(cfg, extra = {}) {
  return { name: `gpt-l${cfg.nLayer}-h${cfg.nHead}`, device: 'auto', dynamic: { 0: [1], 1: [1] }, ...extra };
}

/** Token ids of `text` (one per character) as an int32 [1, T] tensor, and their positions. */
function encode(cfg, text) {
  const ids = [...text].map((ch) => {
    const i = cfg.vocab.indexOf(ch);
    if (i < 0) throw new Error(`gpt: ${JSON.stringify(ch)} is not in the vocabulary ${JSON.stringify(cfg.vocab)}`);
    return i;
  });
  return {
    ids: kiln.tensor(Int32Array.from(ids), [1, ids.length], 'int32'),
    pos: kiln.tensor(Int32Array.from(ids, (_, i) => i), [1, ids.length], 'int32'),
  };
}

/**
 * One step of greedy decoding: runs `f` (the compiled model, or the plain function for an
 * eager run) on the whole of `text` and returns the most likely next character.
 */
async function nextChar(f, model, text) {
  const { cfg, weights } = model;
  const { ids, pos } = encode(cfg, text);
  const logits = await f(ids, pos, ...weights); // [1, T, vocab]
  const all = await logits.toArray();
  const last = all.subarray(all.length - cfg.vocab.length);
  let best = 0;
  for (let j = 1; j < last.length; j++) if (last[j] > last[best]) best = j;
  return cfg.vocab[best];
}

/**
 * Greedy generation of up to `maxNew` characters (stopping at a newline or the model's
 * block size). `onToken(ch, ms)` sees each character as it comes.
 */
async function generate(f, model, prompt, maxNew, onToken = () => {}) {
  let text = prompt;
  while (text.length - prompt.length < maxNew && text.length < model.cfg.blockSize) {
    const t0 = performance.now();
    const ch = await nextChar(f, model, text);
    text += ch;
    onToken(ch, performance.now() - t0);
    if (ch === '\n') break;
  }
  return text;
}

module.exports = { WEIGHTS, loadGpt, makeForward, weightNames, compileOptions, encode, nextChar, generate };

if (require.main === module) {
  (async () => {
    const prompt = process.argv[2] ?? 'kiln: ';
    const maxNew = Number(process.argv[3] ?? 64);
    const model = await loadGpt();
    const gpt = kiln.compile(model.forward, compileOptions(model.cfg));
    let s; // the first call's stats: where the program came from, and what that took
    process.stdout.write(prompt);
    const text = await generate(gpt, model, prompt, maxNew, (ch) => {
      s ??= gpt.stats;
      process.stdout.write(ch);
    });
    if (!text.endsWith('\n')) process.stdout.write('\n');
    if (s) console.log(`\n[${s.source}: ${s.kernels} kernels; trace ${s.traceMs.toFixed(0)} ms, compile ${s.compileMs.toFixed(0)} ms, load ${s.loadMs.toFixed(1)} ms${s.bundleDir ? `; bundle ${s.bundleDir}` : ''}]`);
  })().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
