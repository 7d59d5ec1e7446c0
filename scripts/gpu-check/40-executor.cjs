/**
 * The plan executor and CudaProgram on real kernels written to kiln's parameter ABI: ptxas
 * figures (no spills), the ABI check, a 3-kernel / 2-buffer plan run eagerly for two symbol
 * values, and a LaunchPlan with every buffer role through CudaProgram.
 */
'use strict';
const k = require('./kernels.cjs');

module.exports = {
  name: 'executor',
  needs: 'nvrtc',
  async run(ctx) {
    const { drv, cuda, arch, device } = ctx;
    const dev = device.index;
    let image;
    const compiled = await ctx.check('compile ABI kernels', async () => {
      const r = await ctx.compile(k.ELEMENTWISE, 'elementwise.cu');
      image = r.binary;
      const info = arch.parsePtxasLog(r.log);
      const spills = arch.spillingFunctions(info);
      if (spills.length) throw new Error(`spills in ${spills.join(', ')}`);
      return Object.entries(info).map(([name, f]) => `${name} ${f.registers} regs`).join(', ');
    });
    if (!compiled) return;
    const module = new drv.CudaModule(image, dev);
    await ctx.check('ABI mismatch is refused at load', () => {
      const probe = new drv.PlanExecutor(module, { numBuffers: 2, numSymbols: 1, steps: [{ kernel: 'E_mul2', buffers: [1, 0], block: [256] }] });
      const params = probe.stats().kernels[0].params;
      probe.dispose();
      if (params === null) return 'skipped: the driver cannot report parameters (CUDA < 12.4)';
      try {
        new drv.PlanExecutor(module, { numBuffers: 2, numSymbols: 2, steps: [{ kernel: 'E_mul2', buffers: [1, 0], block: [256] }] });
      } catch (e) {
        if (e.code !== 'KILN_CUDA_ABI') throw e;
        return `E_mul2 has ${params} params; 4 refused`;
      }
      throw new Error('a plan passing 4 parameters to a 3-parameter kernel was accepted');
    });
    await ctx.check('3 kernels, 2 buffers, eager', async () => {
      const ex = new drv.PlanExecutor(module, k.threeStepSpec());
      const results = [];
      for (const n of [1_000_000, 4097]) {
        const x = k.ramp(n);
        const xb = new drv.DeviceBuffer(n * 4, dev), yb = new drv.DeviceBuffer(n * 4, dev);
        await xb.write(x);
        await ex.run(new BigUint64Array([xb.ptr, yb.ptr]), new BigInt64Array([BigInt(n)]), k.grids(n), false);
        const y = new Float32Array(n);
        await yb.read(y);
        xb.dispose();
        yb.dispose();
        k.expectEqual(y, k.reference(x), `y(n=${n})`);
        results.push(n);
      }
      const s = ex.stats();
      ex.dispose();
      return `n = ${results.join(', ')}; ${s.kernelLaunches} launches`;
    });
    await ctx.check('CudaProgram: every buffer role', async () => {
      const c = 0.25;
      const program = await cuda.CudaProgram.load(image, { plan: k.programPlan(), ...k.programParts(c), device: dev });
      try {
        for (const n of [5000, 1, 0, 5000]) {
          const x = k.ramp(n);
          const outs = await program.run([{ dtype: 'float32', shape: [n], data: x }]);
          const [y, y2, x2, z] = await Promise.all(outs.map((t) => t.toHost()));
          const want = k.reference(x);
          k.expectEqual(y.data, want, `y(n=${n})`);
          k.expectEqual(y2.data, want, `y copy(n=${n})`);
          k.expectEqual(x2.data, x, `x copy(n=${n})`);
          k.expectEqual(z.data, want.map((v) => Math.fround(v + c)), `z(n=${n})`);
          if (new Set(outs.map((t) => t.buffer)).size !== 4) throw new Error('outputs share buffers');
          for (const t of outs) t.dispose();
        }
        const dx = await cuda.DeviceTensor.fromHost({ dtype: 'float32', shape: [3], data: new Float32Array([1, 2, 3]) }, dev);
        const outs = await program.run([dx]);
        k.expectEqual((await outs[0].toHost()).data, k.reference(new Float32Array([1, 2, 3])), 'y(device input)');
        for (const t of outs) t.dispose();
        dx.dispose();
        return `n = 5000, 1, 0; device input; ${program.stats().runs} runs`;
      } finally {
        program.dispose();
      }
    });
    module.unload();
    await ctx.check('no leaks', () => {
      const s = drv.deviceMemoryStats(dev);
      if (s.liveAllocations !== 0) throw new Error(`${s.liveAllocations} allocations live (${s.liveBytes} bytes)`);
      return `${s.cachedBytes} bytes cached`;
    });
  },
};
