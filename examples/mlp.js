'use strict';
/**
 * The smallest complete kiln program: an MLP classifier whose weights come from a
 * .safetensors file, compiled once for any batch size.
 *
 *   node examples/mlp.js [batch]
 *
 * It runs the same function eagerly (kiln's reference interpreter) and compiled, and
 * prints how far apart they are. Run it twice: the second process loads the compiled
 * program from its bundle on disk instead of compiling it.
 *
 * Run from a checkout after `npm install` (which builds dist/), or copy it into a project
 * that depends on kiln.
 */
const path = require('node:path');
const kiln = require('kiln'); // this package, by its own name (Node resolves a package's self-reference)

/** x [batch, 16] → class probabilities [batch, 4]; weights are [in, out]. */
function mlp(x, w0, b0, w1, b1, w2, b2) {
  const h = x.matmul(w0).add(b0).gelu();
  const h2 = h.matmul(w1).add(b1).gelu();
  return h2.matmul(w2).add(b2).softmax(-1);
}

async function main() {
  const batch = Number(process.argv[2] ?? 8);
  const { tensors } = await kiln.loadSafetensors(path.join(__dirname, 'weights', 'mlp.safetensors'));
  const weights = [0, 1, 2].flatMap((i) => [tensors[`layers.${i}.weight`], tensors[`layers.${i}.bias`]]);

  // Some inputs: a smooth pattern, so the output is the same on every run.
  const features = weights[0].shape[0];
  const x = kiln.tensor(Float32Array.from({ length: batch * features }, (_, i) => Math.sin(i * 0.37)), [batch, features]);

  // Input 0's dim 0 (the batch) is dynamic: one compiled program serves every batch size.
  const compiled = kiln.compile(mlp, { device: 'auto', dynamic: { 0: [0] } });
  const y = await compiled(x, ...weights);
  const s = compiled.stats;
  console.log(`${s.source === 'compiled' ? 'compiled' : `loaded from ${s.source}`}: ${s.kernels} kernels on ${y.device}` +
    ` (trace ${s.traceMs.toFixed(0)} ms, compile ${s.compileMs.toFixed(0)} ms, load ${s.loadMs.toFixed(1)} ms)`);
  if (s.bundleDir) console.log(`bundle: ${s.bundleDir}`);

  const got = await y.toArray();
  const want = await mlp(x, ...weights).toArray(); // the same function, run eagerly
  const maxDiff = got.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
  const classes = y.shape[1];
  for (let b = 0; b < Math.min(batch, 4); b++) {
    const p = Array.from(got.subarray(b * classes, (b + 1) * classes));
    console.log(`row ${b}: class ${p.indexOf(Math.max(...p))}, probabilities ${p.map((v) => v.toFixed(3)).join(' ')}`);
  }
  console.log(`compiled vs eager: max difference ${maxDiff.toExponential(1)} over ${got.length} values`);

  // Another batch size: no new compile.
  const x3 = kiln.tensor(new Float32Array(3 * features).fill(0.5), [3, features]);
  const y3 = await compiled(x3, ...weights);
  console.log(`batch 3 → ${JSON.stringify(y3.shape)} from ${compiled.stats.source} (no recompile)`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
