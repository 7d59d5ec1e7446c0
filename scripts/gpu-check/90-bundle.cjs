/**
 * CUDA bundles on the GPU, in fresh processes as an app starts: a cold
 * `kiln.compile(fn, { device: 'cuda' })` traces, compiles (autotuned) and publishes a bundle;
 * a warm process with failOnRecompile loads it with zero traces and compiles, no cold-path
 * module (passes, renderer, NVRTC driver), and bit-identical outputs at every dynamic size;
 * a `kiln build --target <this GPU's sm_XY>` bundle shipped through KILN_BUNDLE_PATH loads in
 * another process with zero compiles (heuristic configurations: outputs within float
 * tolerance of the tuned ones). Outputs of a CUDA program are 'cuda' tensors.
 *
 * KILN_GPU_CHECK_DRY=1 runs it without a GPU: `kiln build --target sm_80,sm_90` in a child,
 * `kiln cache verify` / `show` of what it wrote, and the app's typed KILN_NO_CUDA_DEVICE.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { DRY } = require('./cuda-run.cjs');

const ROOT = path.join(__dirname, '..', '..');
// The kiln command: bin/kiln.js, or the same two lines over dist/ where a payload has no bin/.
const CLI = `require(${JSON.stringify(path.join(ROOT, 'dist', 'cli', 'main.js'))}).main(process.argv.slice(1)).then((c) => { process.exitCode = c; });`;
const KILN_BIN = fs.existsSync(path.join(ROOT, 'bin', 'kiln.js')) ? [path.join(ROOT, 'bin', 'kiln.js')] : ['-e', CLI, '--'];

// The model: an MLP with a row softmax (matmuls, a fused epilogue, a reduction), dynamic batch.
const MODEL = `'use strict';
function mlp(x, w1, b1, w2) {
  return x.matmul(w1).add(b1).gelu().matmul(w2).softmax(-1);
}
module.exports = {
  fn: mlp,
  inputs: [{ shape: [64, 256] }, { shape: [256, 512] }, { shape: [512] }, { shape: [512, 128] }],
  options: { name: 'gpu-check-bundle', dynamic: { 0: [0] } },
};
`;

// The app: compiles the model for CUDA, runs it at three batch sizes, prints one JSON line.
const APP = `'use strict';
const { performance } = require('node:perf_hooks');
const boot = performance.now();
const kiln = require(process.env.KILN_DIST);
const spec = require('./model.js');
const fill = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed) * 0.5);
(async () => {
  const args = JSON.parse(process.argv[2]);
  const out = { outputs: [], times: { boot, require: performance.now() - boot } };
  const since = performance.now();
  if (args.options.probe) {
    // The CUDA context and one upload, alone: what any process using the GPU pays first.
    kiln.tensor(new Float32Array(4), [4], 'float32', 'cuda').dispose();
    out.times.context = performance.now() - since;
    console.log(JSON.stringify(out));
    return;
  }
  try {
    const f = kiln.compile(spec.fn, { ...spec.options, device: 'cuda', ...args.options });
    const ws = spec.inputs.slice(1).map((s, j) => kiln.tensor(fill(s.shape.reduce((a, d) => a * d, 1), j + 1), s.shape));
    for (const batch of [64, 7, 300]) {
      const y = await f(kiln.tensor(fill(batch * 256, 100 + batch), [batch, 256]), ...ws);
      if (!out.stats) { out.stats = f.stats; out.counters = kiln.counters(); }
      const data = await y.toArray();
      out.times.firstOutput ??= performance.now() - since;
      out.outputs.push({ batch, device: y.device, shape: y.shape, bytes: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') });
      y.dispose();
    }
  } catch (e) {
    out.error = { name: e.name, code: e.code, message: e.message };
  }
  out.coldModules = Object.keys(require.cache)
    .map((p) => /[\\\\/]dist[\\\\/]((codegen|passes|engine)[\\\\/][^\\\\/]+)\\.js$/.exec(p)?.[1])
    .filter((m) => m && m !== 'passes/memory' && !/^engine\\/(store|bundle|bundle-target|cuda-facts|cuda-bundle|cuda-load|run|program)$/.test(m))
    .sort();
  console.log(JSON.stringify(out));
})();
`;

/** A fresh environment: none of the runner's KILN_* settings. */
function env(extra = {}) {
  const e = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KILN_')) e[k] = v;
  return { ...e, KILN_DIST: path.join(ROOT, 'dist', 'index.js'), ...extra };
}

function node(args, opts) {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300_000, ...opts });
  if (r.error) throw r.error;
  return r;
}

/** Runs the app in a fresh process; its JSON result. */
function app(dir, options, extraEnv = {}) {
  const t0 = process.hrtime.bigint();
  const r = node([path.join(dir, 'app.js'), JSON.stringify({ options })], { cwd: dir, env: env(extraEnv) });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const line = r.stdout.trim().split('\n').pop() || '';
  try {
    return { ...JSON.parse(line), wallMs };
  } catch {
    throw new Error(`app exited ${r.status} without a result: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

const bytes = (r) => r.outputs.map((o) => o.bytes);
const floats = (b64) => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};

function expectOk(r, what) {
  if (r.error) throw new Error(`${what}: ${r.error.code}: ${r.error.message}`);
  const notCuda = r.outputs.filter((o) => o.device !== 'cuda');
  if (notCuda.length) throw new Error(`${what}: outputs on ${notCuda[0].device}, not cuda`);
}

/** Largest |a - b| over every output of two runs. */
function maxDiff(a, b) {
  let m = 0;
  a.outputs.forEach((o, i) => {
    const x = floats(o.bytes);
    const y = floats(b.outputs[i].bytes);
    for (let j = 0; j < x.length; j++) m = Math.max(m, Math.abs(x[j] - y[j]));
  });
  return m;
}

/** `kiln build --target <targets> --out <out>` of the app's model. */
function kilnBuild(dir, targets, out) {
  const r = node([...KILN_BIN, 'build', path.join(dir, 'model.js'), '--target', targets, '--out', out, '--json'], { cwd: dir, env: env() });
  if (r.status !== 0) throw new Error(`kiln build exited ${r.status}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`);
  return JSON.parse(r.stdout);
}

module.exports = {
  name: 'cuda-bundle',
  needs: DRY ? undefined : 'nvrtc',
  async run(ctx) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-gpu-bundle-'));
    const dir = path.join(tmp, 'app');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'kiln-gpu-check-bundle', private: true }));
    fs.writeFileSync(path.join(dir, 'model.js'), MODEL);
    fs.writeFileSync(path.join(dir, 'app.js'), APP);
    const cache = path.join(tmp, 'cache');
    try {
      if (DRY) return await dry(ctx, dir, tmp);
      let cold;
      const coldOk = await ctx.check('cold compile publishes a bundle', () => {
        cold = app(dir, { cacheDir: cache });
        expectOk(cold, 'cold');
        if (cold.stats.source !== 'compiled' || !cold.stats.bundleDir) throw new Error(`cold: source ${cold.stats.source}, bundleDir ${cold.stats.bundleDir}`);
        const files = fs.readdirSync(cold.stats.bundleDir).sort().join(' ');
        if (!/kernels\.(cubin|ptx)/.test(files)) throw new Error(`cold: the bundle holds ${files}`);
        ctx.metric('bundle: cold first call', cold.stats.traceMs + cold.stats.compileMs + cold.stats.loadMs, 'ms', 'trace + compile (tuned) + load');
        return `${cold.stats.kernels} kernels, ${files}`;
      });
      if (coldOk) {
        await ctx.check('warm start: zero compiles, same bits', () => {
          const warm = app(dir, { cacheDir: cache, failOnRecompile: true });
          expectOk(warm, 'warm');
          if (warm.stats.source !== 'bundle') throw new Error(`warm: source ${warm.stats.source}`);
          if (warm.counters.traces || warm.counters.compiles) throw new Error(`warm: ${JSON.stringify(warm.counters)}`);
          if (warm.coldModules.length) throw new Error(`warm: loaded cold-path modules ${warm.coldModules.join(', ')}`);
          if (bytes(warm).join() !== bytes(cold).join()) throw new Error(`warm: outputs differ from the cold run's (max |diff| ${maxDiff(warm, cold)})`);
          ctx.metric('bundle: warm load', warm.stats.loadMs, 'ms', 'verify + read + module load + constants');
          // Whole processes (start, three calls at three batch sizes, exit), against bare Node.
          const bare = Number(process.hrtime.bigint());
          node(['-e', '0'], { env: env() });
          const bareMs = (Number(process.hrtime.bigint()) - bare) / 1e6;
          ctx.metric('startup: cold app process', cold.wallMs, 'ms', 'trace + compile + tune + 3 calls');
          ctx.metric('startup: warm app process', warm.wallMs, 'ms', `bare node -e 0: ${bareMs.toFixed(0)} ms`);
          ctx.metric('startup: warm ÷ cold', warm.wallMs / cold.wallMs, '', 'target <= 0.05');
          const probe = app(dir, { probe: true });
          const t = warm.times;
          ctx.metric('startup warm: node until the app runs', t.boot, 'ms');
          ctx.metric('startup warm: require kiln', t.require, 'ms');
          ctx.metric('startup warm: first output (load + first call + download)', t.firstOutput, 'ms', `CUDA context + one upload alone: ${probe.times.context.toFixed(0)} ms`);
          return `loaded in ${warm.stats.loadMs.toFixed(1)} ms; process ${warm.wallMs.toFixed(0)} ms warm vs ${cold.wallMs.toFixed(0)} ms cold`;
        });
      }
      // The bundle device: 'cuda' looks up is keyed by the driver's sm_XY; an NVRTC older than
      // the GPU compiles PTX instead (ctx.target), for which no offline build has that key.
      if (ctx.target.kind !== 'cubin') {
        await ctx.check('kiln build --target sm_XY', () => `skipped: NVRTC is older than the GPU (${ctx.target.target})`);
        return;
      }
      const target = ctx.target.target;
      const shipped = path.join(tmp, 'shipped');
      const buildInto = (t, out) =>
        ctx.check(`kiln build --target ${t}`, () => {
          const [job] = kilnBuild(dir, t, out);
          if (job.status !== 'built') throw new Error(`kiln build: ${job.status} ${job.error ? job.error.message : ''}`);
          return `${job.result.key.slice(0, 12)} in ${(job.ms / 1000).toFixed(1)} s`;
        });
      const builtOk = await buildInto(target, shipped);
      if (builtOk) {
        await ctx.check('shipped bundle: zero compiles (KILN_BUNDLE_PATH)', () => {
          const own = path.join(tmp, 'consumer-cache');
          const r = app(dir, { cacheDir: own, failOnRecompile: true }, { KILN_BUNDLE_PATH: shipped });
          expectOk(r, 'shipped');
          if (r.stats.source !== 'bundle' || !r.stats.bundleDir.startsWith(shipped)) throw new Error(`shipped: source ${r.stats.source} from ${r.stats.bundleDir}`);
          if (r.counters.traces || r.counters.compiles) throw new Error(`shipped: ${JSON.stringify(r.counters)}`);
          if (cold) {
            const d = maxDiff(r, cold);
            if (!(d < 1e-4)) throw new Error(`shipped: outputs differ from the tuned cold run's by ${d}`);
            return `max |diff| vs tuned ${d.toExponential(1)}`;
          }
          return 'loaded';
        });
      }
      // A PTX bundle (compute_XY) has a key of its own; device: 'cuda' finds it through the
      // store's fallback targets when its sm_XY key misses, and the driver JIT-compiles it.
      const ptx = `compute_${ctx.target.arch}`;
      const shippedPtx = path.join(tmp, 'shipped-ptx');
      const ptxOk = await buildInto(ptx, shippedPtx);
      if (ptxOk) {
        await ctx.check(`shipped ${ptx} bundle found by fallback: zero compiles`, () => {
          const r = app(dir, { cacheDir: path.join(tmp, 'consumer-ptx'), failOnRecompile: true }, { KILN_BUNDLE_PATH: shippedPtx });
          expectOk(r, 'shipped PTX');
          if (r.stats.source !== 'bundle' || !r.stats.bundleDir.startsWith(shippedPtx)) throw new Error(`shipped PTX: source ${r.stats.source} from ${r.stats.bundleDir}`);
          if (r.counters.traces || r.counters.compiles) throw new Error(`shipped PTX: ${JSON.stringify(r.counters)}`);
          return cold ? `max |diff| vs tuned ${maxDiff(r, cold).toExponential(1)}` : 'loaded';
        });
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
};

/** Without a GPU: what can be checked of the above (builds, the CLI, the typed error). */
async function dry(ctx, dir, tmp) {
  const out = path.join(tmp, 'shipped');
  const ok = await ctx.check('kiln build --target sm_80,sm_90 (dry run)', () => {
    const jobs = kilnBuild(dir, 'sm_80,sm_90', out);
    const got = jobs.map((j) => `${j.target}:${j.status}`).join(' ');
    if (got !== 'sm_80:built sm_90:built') throw new Error(got);
    if (jobs[0].result.key === jobs[1].result.key) throw new Error('sm_80 and sm_90 share a key');
    return got;
  });
  if (ok) {
    await ctx.check('kiln cache verify + show (dry run)', () => {
      const v = node([...KILN_BIN, 'cache', 'verify', '--cache-dir', out], { cwd: dir, env: env() });
      if (v.status !== 0 || !/2 ok, 0 failed/.test(v.stdout)) throw new Error(`verify exited ${v.status}: ${v.stdout.trim().split('\n').pop()}`);
      const key = JSON.parse(node([...KILN_BIN, 'cache', 'ls', '--json', '--cache-dir', out], { env: env() }).stdout).find((b) => b.target === 'sm_90').key;
      const s = node([...KILN_BIN, 'cache', 'show', key.slice(0, 12), '--cache-dir', out], { env: env() });
      if (!/kernels \(ptxas's report for sm_90/.test(s.stdout)) throw new Error(`show: ${s.stdout.slice(0, 200)}`);
      return 'verified; show lists the kernels';
    });
  }
  await ctx.check("device: 'cuda' without a GPU is KILN_NO_CUDA_DEVICE (dry run)", () => {
    const r = app(dir, { cacheDir: path.join(tmp, 'cache') }, { KILN_BUNDLE_PATH: out });
    if (ctx.device) return 'skipped: this machine has a GPU';
    if (!r.error || r.error.code !== 'KILN_NO_CUDA_DEVICE') throw new Error(`expected KILN_NO_CUDA_DEVICE, got ${JSON.stringify(r.error || r.stats)}`);
    return r.error.message.slice(0, 60);
  });
}
