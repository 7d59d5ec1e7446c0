/**
 * Helpers of the CUDA backend's GPU sections (70-ops, 95-bench): kiln's modules from dist/,
 * building a traced program for the device's target, running a CUDA plan step by step on
 * buffers this file owns (outputs and temps poisoned with 0xff bytes — NaN for floats — so a
 * kernel that skips an element it owns is caught), timing plans as replayed CUDA graphs, and
 * comparing against the reference interpreter.
 *
 * Dry mode (KILN_GPU_CHECK_DRY=1): the sections run on a machine without a GPU, building
 * (NVRTC) everything they would run, for sm_90a (an H100 or H200) — a check of the JS paths
 * before GPU time.
 */
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const dist = path.join(__dirname, '..', '..', 'dist');
const req = (p) => require(path.join(dist, p));

const DRY = process.env.KILN_GPU_CHECK_DRY === '1';

/** kiln's modules the sections use. */
function kiln() {
  return {
    F: req('tensor/functional.js'),
    tensor: req('tensor/tensor.js').tensor,
    trace: req('tensor/trace.js').trace,
    lower: req('passes/index.js').lower,
    passes: req('passes/index.js'),
    engine: req('engine/cuda.js'),
    interp: req('runtime/interpreter.js'),
    ir: req('ir/index.js'),
    cudaRt: req('runtime/cuda.js'),
    drv: req('runtime/cuda-driver.js'),
  };
}

/** The compile target: the device's, or sm_90 in dry mode. */
function targetOf(ctx) {
  if (ctx.target) return ctx.target;
  if (DRY) return { target: 'sm_90a', kind: 'cubin', arch: 90 }; // what an H100 or H200 compiles for
  throw ctx.targetError || new Error('no compile target');
}

/** The device facts kiln's tuner and build use for this run's target (the card's SM count when there is one). */
function factsOf(ctx, opts = {}) {
  return kiln().engine.cudaFacts(targetOf(ctx), { ...opts, ...(ctx.device ? { smCount: ctx.device.smCount } : {}) });
}

/** Traces and builds one case ({ fn, specs, dynamic }) for the target. */
async function build(k, ctx, c, opts = {}) {
  const graph = k.trace(c.fn, c.specs, { dynamic: c.dynamic || {} });
  const t = targetOf(ctx);
  const b = await k.engine.buildCuda(graph, t, { ...(ctx.device ? { smCount: ctx.device.smCount } : {}), ...opts });
  return { graph, build: b };
}

/** Random inputs of `shapes` for a case (the case's generator, seeded by name and shapes). */
function makeInputs(k, shared, c, graph, shapes) {
  const rng = new shared.Rng(shared.seedOf(`${c.name}:${shapes.join('|')}`));
  return shapes.map((shape, j) => {
    const dtype = graph.inputs[j].dtype;
    const n = shape.reduce((a, d) => a * d, 1);
    return { dtype, shape, data: k.ir.encodeStorage(dtype, (c.gen || shared.defaultGen)(j, dtype, n, rng)) };
  });
}

/** Grid dims of every step (3 per step) for symbol values. */
function gridsOf(k, plan, values) {
  const grids = new Uint32Array(3 * plan.steps.length);
  plan.steps.forEach((s, i) => {
    for (let j = 0; j < 3; j++) grids[3 * i + j] = j < s.grid.length ? k.cudaRt.evalGridDim(k.cudaRt.parseGridDim(s.grid[j]), values) : 1;
  });
  return grids;
}

/**
 * Device buffers for every plan buffer at symbol values `values`: inputs and constants
 * uploaded, outputs and temps filled with 0xff bytes. Returns the buffers and their pointers.
 */
async function planBuffers(k, graph, plan, values, inputs, dev) {
  const elems = k.passes.bufferElems(plan, values);
  const bufs = [];
  const uploads = [];
  for (const b of plan.buffers) {
    const bytes = elems.get(b.id) * k.ir.ITEMSIZE[b.dtype];
    const buf = new k.drv.DeviceBuffer(Math.max(bytes, 16), dev);
    bufs.push(buf);
    if (b.role === 'input' && inputs && bytes > 0) uploads.push(buf.write(inputs[b.source].data));
    else if (b.role === 'const' && bytes > 0) uploads.push(buf.write(graph.constants.get(String(b.source)).data));
    else buf.fill(b.role === 'input' ? 0 : 0xff);
  }
  await Promise.all(uploads);
  return { bufs, elems, ptrs: BigUint64Array.from(bufs, (b) => b.ptr) };
}

/**
 * Runs a built program's plan once on poisoned buffers through a PlanExecutor (eager
 * launches); returns the outputs as host storage in plan order.
 */
async function runPlan(k, ctx, graph, b, inputs) {
  const dev = ctx.device.index;
  const plan = b.plan;
  const values = k.interp.bindSymbols(graph, inputs);
  const module = new k.drv.CudaModule(b.image, dev);
  const { bufs, elems, ptrs } = await planBuffers(k, graph, plan, values, inputs, dev);
  try {
    const steps = plan.steps.map((s) => ({ kernel: s.kernel, buffers: s.buffers, block: s.block, sharedBytes: s.sharedBytes || 0 }));
    if (steps.length) {
      const ex = new k.drv.PlanExecutor(module, { numBuffers: plan.buffers.length, numSymbols: plan.symbols.length, steps });
      try {
        await ex.run(ptrs, BigInt64Array.from(plan.symbols, (s) => BigInt(values[s])), gridsOf(k, plan, values), false);
      } finally {
        ex.dispose();
      }
    }
    return await Promise.all(
      plan.outputs.map(async (o) => {
        const data = k.ir.allocStorage(o.dtype, elems.get(o.buffer));
        if (data.length) await bufs[o.buffer].read(data);
        return data;
      }),
    );
  } finally {
    for (const buf of bufs) buf.dispose();
    module.unload();
  }
}

/**
 * Times a built program: its plan's steps repeated `reps` times in one executor, replayed as
 * a CUDA graph; returns microseconds per plan execution (best of `rounds`). Inputs are zeros
 * unless `inputs` (host storage per graph input) is given.
 */
async function timePlan(k, ctx, graph, b, values, { reps = 20, rounds = 5, inputs = null, only = null } = {}) {
  const dev = ctx.device.index;
  const plan = b.plan;
  const module = new k.drv.CudaModule(b.image, dev);
  const { bufs, ptrs } = await planBuffers(k, graph, plan, values, inputs, dev);
  // `only`: the indices of the steps to time (default all), e.g. one kernel of a program.
  const picked = only ?? plan.steps.map((_, i) => i);
  const one = picked.map((i) => plan.steps[i]).map((s) => ({ kernel: s.kernel, buffers: s.buffers, block: s.block, sharedBytes: s.sharedBytes || 0 }));
  const steps = Array.from({ length: reps }, () => one).flat();
  const gridAll = gridsOf(k, plan, values);
  const grid1 = picked.flatMap((i) => [...gridAll.subarray(3 * i, 3 * i + 3)]);
  const grids = new Uint32Array(grid1.length * reps);
  for (let r = 0; r < reps; r++) grids.set(grid1, r * grid1.length);
  const ex = new k.drv.PlanExecutor(module, { numBuffers: plan.buffers.length, numSymbols: plan.symbols.length, steps });
  const syms = BigInt64Array.from(plan.symbols, (s) => BigInt(values[s]));
  try {
    await ex.run(ptrs, syms, grids, true);
    await ex.run(ptrs, syms, grids, true);
    let best = Infinity;
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      await ex.run(ptrs, syms, grids, true);
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e3 / reps);
    }
    return best;
  } finally {
    ex.dispose();
    for (const buf of bufs) buf.dispose();
    module.unload();
  }
}

/** float16 / bfloat16 ulp distance (as test/helpers/ref.ts measures it). */
function ulps(k, dtype, a, b) {
  const bits = dtype === 'float16' ? k.ir.f16Bits : k.ir.bf16Bits;
  const key = (x) => {
    const u = bits(x);
    const sign = dtype === 'float16' ? 0x8000 : 0x8000;
    return u & sign ? -(u & 0x7fff) : u & 0x7fff;
  };
  return Math.abs(key(a) - key(b));
}

/** Mismatches (at most 5) of `got` (host storage per output) against the interpreter. */
function compare(k, c, graph, plan, inputs, got, label) {
  const want = k.interp.interpret(graph, inputs);
  const errors = [];
  plan.outputs.forEach((o, i) => {
    const g = k.ir.decodeStorage(o.dtype, got[i]);
    const w = k.ir.decodeStorage(o.dtype, want[i].data);
    if (g.length !== w.length) errors.push(`${label} output ${i}: ${g.length} values, want ${w.length}`);
    for (let e = 0; e < w.length && errors.length < 5; e++) {
      const a = g[e];
      const b = w[e];
      let ok;
      if (Number.isNaN(a) || Number.isNaN(b)) ok = Number.isNaN(a) && Number.isNaN(b);
      else if (!Number.isFinite(b)) ok = a === b;
      else if ((o.dtype === 'float16' || o.dtype === 'bfloat16') && c.rtol === undefined) ok = ulps(k, o.dtype, a, b) <= (c.ulps || 1);
      else if (o.dtype === 'float32' || o.dtype === 'float16' || o.dtype === 'bfloat16') ok = Math.abs(a - b) <= (c.atol ?? 1e-6) + (c.rtol ?? 1e-5) * Math.abs(b);
      else ok = a === b;
      if (!ok) errors.push(`${label} output ${i}[${e}]: got ${a}, want ${b}`);
    }
  });
  return errors;
}

/**
 * Runs a PyTorch script (`source`, given the path of `job` written as JSON; both files named
 * `name` in `dir`) within the section's deadline (KILN_GPU_CHECK_DEADLINE). Returns its last
 * printed JSON line — with `partial` saying why when it did not finish (scripts print what
 * they have after each part, so a run cut short still reports) — or { error } when PyTorch
 * with CUDA is not there or the script printed nothing.
 */
function runTorch(source, job, dir, name) {
  const deadline = Number(process.env.KILN_GPU_CHECK_DEADLINE) || Date.now() + 900_000;
  const left = () => Math.max(5000, deadline - Date.now() - 3000);
  const probe = spawnSync('python3', ['-c', 'import torch; assert torch.cuda.is_available()'], { encoding: 'utf8', timeout: Math.min(60_000, left()) });
  if (probe.status !== 0) return { error: `PyTorch with CUDA not available (${(probe.stderr || probe.error?.message || '').trim().split('\n').pop()})` };
  const script = path.join(dir, `${name}.py`);
  const jobFile = path.join(dir, `${name}.json`);
  fs.writeFileSync(script, source);
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const timeout = left();
  const r = spawnSync('python3', [script, jobFile], { encoding: 'utf8', timeout, killSignal: 'SIGKILL', maxBuffer: 1 << 24 });
  const lines = (r.stdout || '').trim().split('\n').filter((l) => l.startsWith('{'));
  const why = r.error?.code === 'ETIMEDOUT' ? `cut short after ${(timeout / 1000).toFixed(0)} s` : `exit ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-2).join(' ')}`;
  if (lines.length === 0) return { error: `torch script gave no figures (${why})` };
  const out = JSON.parse(lines.pop());
  return r.status === 0 ? out : { ...out, partial: why };
}

module.exports = { DRY, kiln, targetOf, factsOf, build, makeInputs, runPlan, timePlan, compare, planBuffers, gridsOf, runTorch };
