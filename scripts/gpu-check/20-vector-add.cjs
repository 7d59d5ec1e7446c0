/** NVRTC compile for the device, module load, copies in, one launch, copy out, verify. */
'use strict';

const KERNEL = `
extern "C" __global__ void vector_add(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}
`;

module.exports = {
  name: 'vector-add',
  needs: 'nvrtc',
  async run(ctx) {
    const { drv, device } = ctx;
    const n = 1_000_003; // not a multiple of the block size: the bounds check must hold
    const a = Float32Array.from({ length: n }, (_, i) => i * 0.5);
    const b = Float32Array.from({ length: n }, (_, i) => 1 - i);
    const c = new Float32Array(n);
    let binary, module, kernel;
    const bufs = [];
    const ok =
      (await ctx.check(`nvrtc ${ctx.target.target}`, async () => {
        const r = await ctx.compile(KERNEL, 'vector_add.cu');
        binary = r.binary;
        return `${r.kind}, ${r.binary.length} bytes`;
      })) &&
      (await ctx.check('module load', () => {
        module = new drv.CudaModule(binary, device.index);
        kernel = module.getFunction('vector_add');
      })) &&
      (await ctx.check('alloc + copy in', async () => {
        for (let i = 0; i < 3; i++) bufs.push(new drv.DeviceBuffer(n * 4, device.index));
        await Promise.all([bufs[0].write(a), bufs[1].write(b)]);
        return `3 x ${n * 4} bytes`;
      })) &&
      (await ctx.check('launch + sync', async () => {
        kernel.launch([Math.ceil(n / 256)], [256], [bufs[0], bufs[1], bufs[2], { i32: n }]);
        await drv.synchronize(device.index);
      })) &&
      (await ctx.check('copy out + verify', async () => {
        await bufs[2].read(c);
        for (let i = 0; i < n; i++) {
          const want = Math.fround(a[i] + b[i]);
          if (c[i] !== want) throw new Error(`c[${i}] = ${c[i]}, expected ${want}`);
        }
        return `${n} elements`;
      }));
    await ctx.check('free', () => {
      for (const buf of bufs) buf.dispose();
      if (module) module.unload();
      const live = drv.deviceMemoryStats(device.index).liveAllocations;
      if (live !== 0) throw new Error(`${live} allocations still live`);
      return ok ? '' : 'after a failure';
    });
  },
};
