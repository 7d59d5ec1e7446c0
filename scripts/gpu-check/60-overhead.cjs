/**
 * Host overhead per call, with and without CUDA graphs, over 2000 calls of a 3-kernel plan
 * on 1024 elements (GPU time is negligible): issuing all calls then awaiting them (host
 * throughput), awaiting each call (round trip), and the native enqueue time alone. Then the
 * same through CudaProgram.run (symbol binding, output allocation, tensors): the host's part
 * of a call (until run() returns its Promise) and the native executor's share of it, calls
 * issued back to back (4 in flight) and each awaited; with graphs, that a replayed call's
 * outputs are right, its output copies replayed in the graph. The awaited figures again in
 * two fresh processes, JS-thread poll on and off (KILN_CUDA_POLL_US=0: the addon reads it
 * once), and the CPU time spent while awaiting
 * long GPU work (the poll and the waiter thread's cuEventSynchronize), and a faulting kernel
 * rejecting its Promise with the poll on and off (each in a child: a fault kills the context),
 * and a lone awaited run settling in a child whose queueMicrotask never runs anything (as test
 * fake timers installed before the first GPU call leave it).
 */
'use strict';
const path = require('node:path');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const k = require('./kernels.cjs');

const CALLS = 2000;
const us = (ns) => Number(ns) / CALLS / 1e3;
const POLL = 'KILN_CUDA_POLL_US';

const FAULT = `extern "C" __global__ void fault(float* out, long long s0) { out[s0] = 1.0f; }`;

/** In a child process: runs FAULT on a bad pointer and returns how its Promise settled. */
const faultChild = (dist, cubin, dev) => `
  const drv = require(${JSON.stringify(path.join(dist, 'cuda-driver.js'))});
  const m = new drv.CudaModule(require('node:fs').readFileSync(${JSON.stringify(cubin)}), ${dev});
  const ex = new drv.PlanExecutor(m, { numBuffers: 1, numSymbols: 1, steps: [{ kernel: 'fault', buffers: [0], block: [1] }] });
  ex.run(new BigUint64Array([8n]), new BigInt64Array([0n]), new Uint32Array([1, 1, 1])).then(
    () => console.log(JSON.stringify({ resolved: true })),
    (e) => console.log(JSON.stringify({ code: e.code, cudaError: e.cudaError, message: e.message })));`;

/** In a child process: queueMicrotask made a no-op before the first GPU run, then 3 awaited runs. */
const fakeTimersChild = (dist, cubin, dev) => `
  globalThis.queueMicrotask = () => {};
  const drv = require(${JSON.stringify(path.join(dist, 'cuda-driver.js'))});
  const m = new drv.CudaModule(require('node:fs').readFileSync(${JSON.stringify(cubin)}), ${dev});
  const ex = new drv.PlanExecutor(m, ${JSON.stringify(k.threeStepSpec())});
  const n = 1024, x = new drv.DeviceBuffer(n * 4, ${dev}), y = new drv.DeviceBuffer(n * 4, ${dev});
  const args = [new BigUint64Array([x.ptr, y.ptr]), new BigInt64Array([BigInt(n)]), new Uint32Array(${JSON.stringify(Array.from(k.grids(1024)))})];
  let settled = 0;
  const timeout = setTimeout(() => { console.log(JSON.stringify({ settled })); process.exit(0); }, 5000);
  (async () => {
    for (let i = 0; i < 3; i++) { await ex.run(...args); settled++; }
    clearTimeout(timeout);
    console.log(JSON.stringify({ settled, pollUs: require(${JSON.stringify(path.join(dist, 'native.js'))}).addon().info().completionPollUs }));
  })();`;

const SPIN = `
extern "C" __global__ void spin(float* out, long long cycles) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
  if (threadIdx.x == 0) out[0] = 1.0f;
}
`;

/** Microseconds per awaited call of `call`, after 100 warm-up calls. */
async function awaitedUs(call) {
  for (let i = 0; i < 100; i++) await call();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) await call();
  return us(process.hrtime.bigint() - t0);
}

/** The awaited round trips measured in the main thread, in this thread (a worker). */
async function awaitedFigures({ drv, cuda, binary, dev }) {
  const module = new drv.CudaModule(binary, dev);
  const ex = new drv.PlanExecutor(module, k.threeStepSpec());
  const n = 1024;
  const x = new drv.DeviceBuffer(n * 4, dev), y = new drv.DeviceBuffer(n * 4, dev);
  const ptrs = new BigUint64Array([x.ptr, y.ptr]), syms = new BigInt64Array([BigInt(n)]), grids = k.grids(n);
  const program = await cuda.CudaProgram.load(binary, { plan: k.programPlan(), ...k.programParts(1), device: dev });
  const input = await cuda.DeviceTensor.fromHost({ dtype: 'float32', shape: [n], data: k.ramp(n) }, dev);
  try {
    return {
      eager: await awaitedUs(() => ex.run(ptrs, syms, grids, false)),
      graph: await awaitedUs(() => ex.run(ptrs, syms, grids, true)),
      program: await awaitedUs(async () => {
        for (const t of await program.run([input], { graphs: true })) t.dispose();
      }),
    };
  } finally {
    input.dispose();
    program.dispose();
    ex.dispose();
    x.dispose();
    y.dispose();
    module.unload();
  }
}

// As a child (`node 60-overhead.cjs --awaited CUBIN DEVICE`): prints awaitedFigures as JSON.
if (require.main === module && process.argv[2] === '--awaited') {
  const dist = path.join(__dirname, '..', '..', 'dist', 'runtime');
  const drv = require(path.join(dist, 'cuda-driver.js'));
  const cuda = require(path.join(dist, 'cuda.js'));
  const pollUs = require(path.join(dist, 'native.js')).addon().info().completionPollUs;
  const binary = require('node:fs').readFileSync(process.argv[3]);
  awaitedFigures({ drv, cuda, binary, dev: Number(process.argv[4]) }).then((figures) => console.log(JSON.stringify({ pollUs, figures })));
}

/** awaitedFigures in a fresh process with KILN_CUDA_POLL_US=`poll` (undefined: unset). */
function awaitedInChild(cubin, dev, poll) {
  const env = { ...process.env };
  if (poll === undefined) delete env[POLL];
  else env[POLL] = poll;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [__filename, '--awaited', cubin, String(dev)], { env, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`child (${POLL}=${poll}): ${err.message} ${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()));
    });
  });
}

/** Writes `binary` to a temp file for a child process; returns its path. */
function tempCubin(binary, name) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-overhead-')), name);
  fs.writeFileSync(file, binary);
  return file;
}

module.exports = {
  name: 'overhead',
  needs: 'nvrtc',
  async run(ctx) {
    const { drv, cuda, device } = ctx;
    const dev = device.index;
    const pollUs = ctx.native.addon().info().completionPollUs;
    const { binary } = await ctx.compile(k.ELEMENTWISE, 'elementwise.cu');
    const module = new drv.CudaModule(binary, dev);
    const ex = new drv.PlanExecutor(module, k.threeStepSpec());
    const n = 1024;
    const x = new drv.DeviceBuffer(n * 4, dev), y = new drv.DeviceBuffer(n * 4, dev);
    const ptrs = new BigUint64Array([x.ptr, y.ptr]), syms = new BigInt64Array([BigInt(n)]), grids = k.grids(n);
    try {
      for (const graph of [false, true]) {
        const mode = graph ? 'graph' : 'eager';
        await ctx.check(`executor ${mode}: ${CALLS} calls`, async () => {
          for (let i = 0; i < 100; i++) await ex.run(ptrs, syms, grids, graph); // warm up (and capture)
          const s0 = ex.stats();
          const t0 = process.hrtime.bigint();
          const pending = [];
          for (let i = 0; i < CALLS; i++) pending.push(ex.run(ptrs, syms, grids, graph));
          await Promise.all(pending);
          const t1 = process.hrtime.bigint();
          for (let i = 0; i < CALLS; i++) await ex.run(ptrs, syms, grids, graph);
          const t2 = process.hrtime.bigint();
          const s1 = ex.stats();
          const replays = s1.graphLaunches - s0.graphLaunches;
          if (graph && replays !== 2 * CALLS) throw new Error(`only ${replays} of ${2 * CALLS} calls replayed a graph`);
          ctx.metric(`executor ${mode}: issued back to back`, us(t1 - t0), 'us/call');
          ctx.metric(`executor ${mode}: each awaited`, us(t2 - t1), 'us/call', `poll ${pollUs} us${graph ? '; target <= 20' : ''}`);
          ctx.metric(`executor ${mode}: native enqueue`, (s1.enqueueNs - s0.enqueueNs) / (2 * CALLS) / 1e3, 'us/call');
          return `${us(t2 - t1).toFixed(1)} us/call awaited`;
        });
      }
      const program = await cuda.CudaProgram.load(binary, { plan: k.programPlan(), ...k.programParts(1), device: dev });
      const input = await cuda.DeviceTensor.fromHost({ dtype: 'float32', shape: [n], data: k.ramp(n) }, dev);
      try {
        for (const graphs of [false, true]) {
          const mode = graphs ? 'graph' : 'eager';
          await ctx.check(`CudaProgram.run ${mode}: ${CALLS} calls`, async () => {
            let issueNs = 0n;
            const call = async () => {
              const t = process.hrtime.bigint();
              const done = program.run([input], { graphs });
              issueNs += process.hrtime.bigint() - t;
              for (const t of await done) t.dispose(); // recycled outputs: same pointers
            };
            for (let i = 0; i < 100; i++) await call();
            issueNs = 0n;
            const s0 = program.stats();
            const t0 = process.hrtime.bigint();
            for (let i = 0; i < CALLS; i++) await call();
            const t1 = process.hrtime.bigint();
            const sAwaited = program.stats();
            // Back to back, 4 in flight: outputs recycle through a few pointer sets, so graphs replay.
            const inflight = [];
            for (let i = 0; i < CALLS; i++) {
              inflight.push(program.run([input], { graphs }));
              if (inflight.length === 4) for (const t of await inflight.shift()) t.dispose();
            }
            while (inflight.length > 0) for (const t of await inflight.shift()) t.dispose();
            const t2 = process.hrtime.bigint();
            const s1 = program.stats();
            ctx.metric(`CudaProgram.run ${mode}: host part`, us(issueNs), 'us/call', 'until run() returns; target <= 15');
            ctx.metric(`CudaProgram.run ${mode}: native enqueue`, (sAwaited.enqueueNs - s0.enqueueNs) / CALLS / 1e3, 'us/call', 'the executor\'s share of the host part');
            ctx.metric(`CudaProgram.run ${mode}: issued back to back`, us(t2 - t1), 'us/call', '4 in flight');
            ctx.metric(`CudaProgram.run ${mode}: each awaited`, us(t1 - t0), 'us/call', `4 kernels, 4 outputs; poll ${pollUs} us`);
            return `${us(t1 - t0).toFixed(1)} us/call awaited, ${us(t2 - t1).toFixed(1)} back to back; ` +
              `${s1.graphLaunches - s0.graphLaunches} graph replays, ${s1.graphCaptures - s0.graphCaptures} captures`;
          });
        }
        await ctx.check('CudaProgram.run graph: a replayed call\'s outputs, copies included', async () => {
          // Awaited calls that dispose their outputs get the same blocks back: one replays soon.
          for (let i = 0; i < 4; i++) {
            const s0 = program.stats();
            const outs = await program.run([input], { graphs: true });
            const s1 = program.stats();
            try {
              if (s1.graphLaunches === s0.graphLaunches) continue;
              const [y, y2, x2, z] = await Promise.all(outs.map((t) => t.toHost()));
              const x = k.ramp(n), want = k.reference(x);
              k.expectEqual(y.data, want, 'y');
              k.expectEqual(y2.data, want, 'y copy');
              k.expectEqual(x2.data, x, 'x copy');
              k.expectEqual(z.data, want.map((v) => Math.fround(v + 1)), 'z');
              if (s1.copies !== s0.copies) throw new Error(`${s1.copies - s0.copies} copies queued outside the graph`);
              return `call ${i + 1} replayed; its 4 outputs are right`;
            } finally {
              for (const t of outs) t.dispose();
            }
          }
          throw new Error('4 awaited calls in a row, none replayed a graph');
        });
      } finally {
        input.dispose();
        program.dispose();
      }
      await ctx.check('awaited, JS-thread poll on and off (children)', async () => {
        const cubin = tempCubin(binary, 'elementwise.cubin');
        const on = await awaitedInChild(cubin, dev, undefined);
        const off = await awaitedInChild(cubin, dev, '0');
        if (off.pollUs !== 0) throw new Error(`the child's addon reads ${POLL}=${off.pollUs}, not 0`);
        const names = { eager: 'executor eager', graph: 'executor graph', program: 'CudaProgram.run graph' };
        for (const [key, name] of Object.entries(names)) {
          ctx.metric(`${name}: each awaited, poll ${on.pollUs} us (child)`, on.figures[key], 'us/call');
          ctx.metric(`${name}: each awaited, poll off (child)`, off.figures[key], 'us/call');
        }
        return Object.keys(names).map((key) => `${key} ${on.figures[key].toFixed(1)} vs ${off.figures[key].toFixed(1)} off`).join(', ');
      });
      await ctx.check('CPU while awaiting long GPU work', async () => {
        const spin = await ctx.compile(SPIN, 'spin.cu');
        const spinModule = new drv.CudaModule(spin.binary, dev);
        const spinEx = new drv.PlanExecutor(spinModule, { numBuffers: 1, numSymbols: 1, steps: [{ kernel: 'spin', buffers: [0], block: [32] }] });
        try {
          const run = (cycles) => spinEx.run(new BigUint64Array([x.ptr]), new BigInt64Array([BigInt(cycles)]), new Uint32Array([1, 1, 1]));
          await run(1000);
          const c0 = process.cpuUsage();
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < 3; i++) await run(40_000_000); // ~20 ms at 2 GHz
          const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
          const c1 = process.cpuUsage(c0);
          const busy = (c1.user + c1.system) / wallUs;
          ctx.metric('CPU busy while awaiting GPU work', busy * 100, '%', `3 awaited runs of ${(wallUs / 3e3).toFixed(1)} ms; 100 = one core spinning`);
          // Runs longer than the JS-thread poll: settled by the waiter.
          const awaited = async (cycles) => {
            const t = process.hrtime.bigint();
            for (let i = 0; i < 20; i++) await run(cycles);
            return Number(process.hrtime.bigint() - t) / 20e3;
          };
          const shortUs = await awaited(1_000_000), longUs = await awaited(4_000_000);
          ctx.metric('awaited ~0.5 ms GPU run', shortUs, 'us/call', 'clock64 spin: SM clock dependent');
          ctx.metric('awaited ~2 ms GPU run', longUs, 'us/call', 'clock64 spin: SM clock dependent');
          return `${(busy * 100).toFixed(0)}% of a core over ${(wallUs / 1e3).toFixed(0)} ms; runs of ~0.5 and ~2 ms: ${shortUs.toFixed(0)}, ${longUs.toFixed(0)} us awaited`;
        } finally {
          spinEx.dispose();
          spinModule.unload();
        }
      });
      await ctx.check('a faulting kernel rejects, poll on and off (children)', async () => {
        const cubin = tempCubin((await ctx.compile(FAULT, 'fault.cu')).binary, 'fault.cubin');
        const script = faultChild(path.join(__dirname, '..', '..', 'dist', 'runtime'), cubin, dev);
        const child = (poll) => new Promise((resolve, reject) => {
          const env = { ...process.env };
          if (poll === undefined) delete env[POLL];
          else env[POLL] = poll;
          execFile(process.execPath, ['-e', script], { env, timeout: 20_000 }, (err, stdout, stderr) => {
            if (err) reject(new Error(`child (${POLL}=${poll}): ${err.message} ${stderr}`));
            else resolve(JSON.parse(stdout.trim().split('\n').pop()));
          });
        });
        const [on, off] = await Promise.all([child(undefined), child('0')]);
        for (const r of [on, off]) {
          if (r.code !== 'KILN_CUDA_ERROR' || r.cudaError !== 'CUDA_ERROR_ILLEGAL_ADDRESS') throw new Error(`expected a CUDA_ERROR_ILLEGAL_ADDRESS rejection, got ${JSON.stringify(r)}`);
        }
        return `poll on: ${on.message}; poll off: ${off.message}`;
      });
      await ctx.check('a lone awaited run settles with queueMicrotask replaced (child)', async () => {
        const cubin = tempCubin(binary, 'elementwise.cubin');
        const script = fakeTimersChild(path.join(__dirname, '..', '..', 'dist', 'runtime'), cubin, dev);
        const r = await new Promise((resolve, reject) => {
          execFile(process.execPath, ['-e', script], { timeout: 20_000 }, (err, stdout, stderr) => {
            if (err) reject(new Error(`child: ${err.message} ${stderr}`));
            else resolve(JSON.parse(stdout.trim().split('\n').pop()));
          });
        });
        if (r.settled !== 3) throw new Error(`only ${r.settled} of 3 awaited runs settled within 5 s`);
        return `3 of 3 settled, poll ${r.pollUs} us`;
      });
    } finally {
      ex.dispose();
      x.dispose();
      y.dispose();
      module.unload();
    }
  },
};
