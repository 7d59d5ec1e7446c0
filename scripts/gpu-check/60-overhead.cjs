/**
 * Host overhead per call, with and without CUDA graphs, over 2000 calls of a 3-kernel plan
 * on 1024 elements (GPU time is negligible): issuing all calls then awaiting them (host
 * throughput), awaiting each call (round trip), and the native enqueue time alone. Then the
 * same through CudaProgram.run (symbol binding, output allocation, tensors).
 */
'use strict';
const k = require('./kernels.cjs');

const CALLS = 2000;
const us = (ns) => Number(ns) / CALLS / 1e3;

module.exports = {
  name: 'overhead',
  needs: 'nvrtc',
  async run(ctx) {
    const { drv, cuda, device } = ctx;
    const dev = device.index;
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
          ctx.metric(`executor ${mode}: each awaited`, us(t2 - t1), 'us/call', graph ? 'target <= 20' : '');
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
            const call = async () => {
              for (const t of await program.run([input], { graphs })) t.dispose(); // recycled outputs: same pointers
            };
            for (let i = 0; i < 100; i++) await call();
            const s0 = program.stats();
            const t0 = process.hrtime.bigint();
            for (let i = 0; i < CALLS; i++) await call();
            const t1 = process.hrtime.bigint();
            const s1 = program.stats();
            ctx.metric(`CudaProgram.run ${mode}: each awaited`, us(t1 - t0), 'us/call', '4 kernels, 4 outputs');
            return `${us(t1 - t0).toFixed(1)} us/call, ${s1.graphLaunches - s0.graphLaunches} graph replays`;
          });
        }
      } finally {
        input.dispose();
        program.dispose();
      }
    } finally {
      ex.dispose();
      x.dispose();
      y.dispose();
      module.unload();
    }
  },
};
