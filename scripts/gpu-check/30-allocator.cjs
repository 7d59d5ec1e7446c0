/**
 * The caching allocator on the real driver: a freed block is handed out again, trim gives
 * the cache back, an impossible request is a KILN_CUDA_OOM report, and a request that only
 * fits once the cache is released succeeds (trim and retry) — the process stays usable. A
 * worker thread that exits with buffers it never disposed leaves none of them live.
 */
'use strict';
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const GiB = 2 ** 30;

module.exports = {
  name: 'allocator',
  needs: 'gpu',
  async run(ctx) {
    const { drv, device } = ctx;
    const dev = device.index;
    const stats = () => drv.deviceMemoryStats(dev);
    await ctx.check('freed block is reused', () => {
      drv.trimDeviceMemory(dev); // earlier sections' blocks could fit too
      const a = new drv.DeviceBuffer(3 * 2 ** 20 + 5, dev);
      const ptr = a.ptr;
      a.dispose();
      const before = stats().cacheHits;
      const b = new drv.DeviceBuffer(3 * 2 ** 20 + 100, dev); // the same size class (3.5 MiB)
      const hit = b.ptr === ptr && stats().cacheHits === before + 1;
      b.dispose();
      if (!hit) throw new Error('the cached block was not reused');
      return `0x${ptr.toString(16)} twice`;
    });
    await ctx.check('trim releases the cache', () => {
      const released = drv.trimDeviceMemory(dev);
      const s = stats();
      if (s.cachedBytes !== 0) throw new Error(`${s.cachedBytes} bytes still cached`);
      return `${released} bytes released`;
    });
    await ctx.check('impossible request: KILN_CUDA_OOM', () => {
      const want = device.totalMemory * 2;
      try {
        new drv.DeviceBuffer(want, dev).dispose();
      } catch (e) {
        if (e.code !== 'KILN_CUDA_OOM' || e.cudaError !== 'CUDA_ERROR_OUT_OF_MEMORY' || e.requestedBytes !== want) throw e;
        const ok = new drv.DeviceBuffer(1024, dev); // still usable
        ok.dispose();
        return e.message.slice(0, 90) + '...';
      }
      throw new Error('allocating twice the device memory succeeded');
    });
    await ctx.check('OOM recovers by trimming the cache', () => {
      const chunks = [];
      const t0 = performance.now();
      try {
        for (let i = 0; i < device.totalMemory / GiB + 4; i++) chunks.push(new drv.DeviceBuffer(GiB, dev));
        throw new Error('the device never ran out of memory');
      } catch (e) {
        if (e.code !== 'KILN_CUDA_OOM') throw e;
      } finally {
        for (const c of chunks) c.dispose(); // all cached now: the driver has no free memory
      }
      ctx.metric('filled device with 1 GiB blocks', chunks.length, 'blocks', `${(performance.now() - t0).toFixed(0)} ms`);
      const before = stats();
      const big = new drv.DeviceBuffer(2 * GiB + 1, dev); // a size no cached block fits
      const after = stats();
      big.dispose();
      drv.trimDeviceMemory(dev);
      if (after.oomRecoveries !== before.oomRecoveries + 1) throw new Error('no recovery was counted');
      return `${chunks.length} GiB cached, then 2 GiB allocated after trim`;
    });
    await ctx.check("a worker's undisposed buffers are freed when it exits", async () => {
      const before = stats().liveAllocations;
      const driver = path.join(__dirname, '..', '..', 'dist', 'runtime', 'cuda-driver.js');
      const code = `const drv = require(${JSON.stringify(driver)});
        globalThis.kept = [1, 2, 3].map((i) => new drv.DeviceBuffer(i << 20, ${dev}));
        require('node:worker_threads').parentPort.postMessage(drv.deviceMemoryStats(${dev}).liveAllocations);`;
      const worker = new Worker(code, { eval: true });
      const during = await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      await worker.terminate();
      const after = stats().liveAllocations;
      if (during !== before + 3) throw new Error(`the worker's 3 buffers: live ${before} → ${during}`);
      if (after !== before) throw new Error(`${after - before} of the exited worker's buffers are still live`);
      return `live allocations ${before} → ${during} in the worker → ${after} after it exited`;
    });
    const s = stats();
    ctx.metric('allocations / cache hits', `${s.allocations} / ${s.cacheHits}`, '');
    ctx.metric('peak reserved', s.peakReservedBytes / GiB, 'GiB');
  },
};
