/**
 * CUDA graph capture and replay: a key (pointers, symbols, grids) is captured on its second
 * run and replayed after; replays read the buffers' current contents; a new symbol value or
 * pointer is a new key; past 16 keys the least recently used graph is evicted.
 */
'use strict';
const k = require('./kernels.cjs');

module.exports = {
  name: 'graphs',
  needs: 'nvrtc',
  async run(ctx) {
    const { drv, device } = ctx;
    const dev = device.index;
    const { binary } = await ctx.compile(k.ELEMENTWISE, 'elementwise.cu');
    const module = new drv.CudaModule(binary, dev);
    const ex = new drv.PlanExecutor(module, k.threeStepSpec());
    const n = 100_000;
    const x = new drv.DeviceBuffer(n * 4, dev);
    let y = new drv.DeviceBuffer(n * 4, dev);
    const run = async (m, yb = y) => {
      const data = k.ramp(m, 0.001, Math.random());
      await x.write(data);
      await ex.run(new BigUint64Array([x.ptr, yb.ptr]), new BigInt64Array([BigInt(m)]), k.grids(m), true);
      const out = new Float32Array(m);
      await yb.read(out);
      k.expectEqual(out, k.reference(data), `y(n=${m})`);
    };
    try {
      await ctx.check('capture on 2nd call, replay after', async () => {
        for (let i = 0; i < 10; i++) await run(n);
        const s = ex.stats();
        if (s.graphCaptures !== 1 || s.graphLaunches !== 9) throw new Error(`captures ${s.graphCaptures}, replays ${s.graphLaunches}${s.graphError ? `: ${s.graphError}` : ''}`);
        return '10 runs, new input data each: 1 capture, 9 replays, all correct';
      });
      await ctx.check('new symbol value: new graph', async () => {
        for (let i = 0; i < 3; i++) await run(n / 2);
        await run(n); // the first key's graph is still cached
        const s = ex.stats();
        if (s.graphCaptures !== 2 || s.graphsCached !== 2) throw new Error(`captures ${s.graphCaptures}, cached ${s.graphsCached}`);
        return '2 graphs cached';
      });
      await ctx.check('new pointer: new graph', async () => {
        const y2 = new drv.DeviceBuffer(n * 4 + 4096, dev); // another size class: another address
        for (let i = 0; i < 2; i++) await run(n, y2);
        y2.dispose();
        const s = ex.stats();
        if (s.graphCaptures !== 3) throw new Error(`captures ${s.graphCaptures}`);
        return '3 graphs cached';
      });
      await ctx.check('LRU eviction past 16 keys', async () => {
        for (let m = 1000; m < 1000 + 20 * 37; m += 37) {
          await run(m);
          await run(m);
        }
        const s = ex.stats();
        if (s.graphsCached !== 16 || s.graphEvictions < 1) throw new Error(`cached ${s.graphsCached}, evictions ${s.graphEvictions}`);
        return `${s.graphCaptures} captures, ${s.graphEvictions} evictions, ${s.graphsCached} cached`;
      });
      const s = ex.stats();
      ctx.metric('capture + instantiate', s.captureNs / s.graphCaptures / 1e3, 'us/graph', '3 kernels');
    } finally {
      ex.dispose();
      x.dispose();
      y.dispose();
      y = undefined;
      module.unload();
    }
  },
};
