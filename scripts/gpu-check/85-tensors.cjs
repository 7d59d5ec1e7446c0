/**
 * Tensors on 'cuda' live in device memory, on the real driver: `kiln.tensor(..., 'cuda')`
 * uploads once at creation (no host copy kept) and compiled programs read that upload on
 * every call; `tensorFromDevice` round-trips every dtype; dispose frees the device memory at
 * once (the pool's counters say so), also while a download is in flight; an eager op on a
 * device tensor downloads it once; a CUDA program's output goes back in as an input with no
 * copy; a forgotten tensor is freed by the GC (exactly once); `kiln.compile` with
 * device 'cuda' returns tensors that stay on the GPU.
 *
 * KILN_GPU_CHECK_DRY=1 runs it without a GPU: builds the program for sm_90 and checks that
 * 'cuda' tensors stay host-backed there and that the API bridge hands programs host data.
 */
'use strict';
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');
const run = require('./cuda-run.cjs');

const dist = path.join(__dirname, '..', '..', 'dist');
const req = (p) => require(path.join(dist, p));

const DTYPES = ['float32', 'float16', 'bfloat16', 'int32', 'bool'];

/** Values every dtype holds exactly (so a round trip must be bit-exact). */
function valuesOf(dtype, n) {
  return Array.from({ length: n }, (_, i) => (dtype === 'bool' ? Number(i % 3 === 0) : dtype === 'int32' ? i * 7 - 300 : (i % 64) * 0.25 - 8));
}

/** What toArray must give for `values` in `dtype`. */
function expected(dtype, values) {
  if (dtype === 'bool') return Uint8Array.from(values);
  if (dtype === 'int32') return Int32Array.from(values);
  return Float32Array.from(values);
}

function same(got, want, label) {
  if (got.constructor !== want.constructor) throw new Error(`${label}: ${got.constructor.name}, want ${want.constructor.name}`);
  if (got.length !== want.length) throw new Error(`${label}: ${got.length} values, want ${want.length}`);
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) throw new Error(`${label}[${i}]: got ${got[i]}, want ${want[i]}`);
}

module.exports = {
  name: 'tensors',
  needs: run.DRY ? undefined : 'nvrtc',
  async run(ctx) {
    const k = run.kiln();
    const kiln = req('index.js');
    const api = req('api/tensors.js');
    const { Tensor } = req('tensor/tensor.js');
    const { DeviceTensor } = k.cudaRt;
    const double = (x) => x.mul(2).add(1);
    const spec = { fn: double, specs: [{ dtype: 'float32', shape: [4097] }] };

    if (run.DRY) {
      await ctx.check('build and host-backed tensors (dry run)', async () => {
        const { build: b } = await run.build(k, ctx, spec);
        const x = kiln.tensor(valuesOf('float32', 4097), [4097], 'float32', 'cuda');
        if (x.isOnGpu || !String(x).endsWith(', host)')) throw new Error(`${x} is on the GPU without one`);
        const input = api.programInput('f', x, 0);
        if (input instanceof DeviceTensor || input.data.length !== 4097) throw new Error('programInput did not give host data');
        x.dispose();
        return `built ${Object.keys(b.resources).length} kernel(s)`;
      });
      return;
    }

    const dev = ctx.device.index;
    const stats = () => k.drv.deviceMemoryStats(dev);
    const hostOf = (t) => Tensor.unwrap(t).hostStorage;

    await ctx.check("kiln.tensor(..., 'cuda') uploads once", async () => {
      const out = [];
      for (const dtype of DTYPES) {
        const n = 1000;
        const values = valuesOf(dtype, n);
        const before = stats();
        const x = kiln.tensor(values, [10, 100], dtype, 'cuda');
        const after = stats();
        if (!x.isOnGpu || x.device !== 'cuda' || String(x) !== `Tensor(${dtype}[10,100], cuda)`) throw new Error(`${dtype}: ${x} not on the GPU`);
        if (after.liveAllocations !== before.liveAllocations + 1) throw new Error(`${dtype}: ${after.liveAllocations - before.liveAllocations} allocations`);
        if (hostOf(x) !== null) throw new Error(`${dtype}: a host copy was kept`);
        const a = api.programInput('f', x, 0);
        const b = api.programInput('f', x, 0);
        if (!(a instanceof DeviceTensor) || a !== b) throw new Error(`${dtype}: programInput is not the tensor's one DeviceTensor`);
        if (stats().liveAllocations !== after.liveAllocations) throw new Error(`${dtype}: programInput uploaded again`);
        same(await x.toArray(), expected(dtype, values), dtype);
        if (hostOf(x) !== null) throw new Error(`${dtype}: toArray kept a host copy`);
        x.dispose();
        if (stats().liveAllocations !== before.liveAllocations) throw new Error(`${dtype}: dispose did not free`);
        out.push(dtype);
      }
      return out.join(' ');
    });

    await ctx.check('tensorFromDevice round trip, all dtypes', async () => {
      for (const dtype of DTYPES) {
        const values = valuesOf(dtype, 4097);
        const d = await DeviceTensor.fromHost({ dtype, shape: [17, 241], data: k.ir.encodeStorage(dtype, values) }, dev);
        const x = api.tensorFromDevice(d);
        if (x.device !== 'cuda' || x.dtype !== dtype || x.shape.join() !== '17,241' || !x.isOnGpu) throw new Error(`${dtype}: ${x}`);
        same(await x.toArray(), expected(dtype, values), dtype);
        if (api.programInput('f', x, 0) !== d) throw new Error(`${dtype}: programInput copied the device tensor`);
        x.dispose();
        if (!d.disposed) throw new Error(`${dtype}: the DeviceTensor survived dispose`);
      }
      return DTYPES.join(' ');
    });

    await ctx.check('dispose frees device memory at once', async () => {
      const n = 1 << 20;
      const before = stats();
      const d = await DeviceTensor.fromHost({ dtype: 'float32', shape: [n], data: new Float32Array(n).fill(3) }, dev);
      const x = api.tensorFromDevice(d);
      const held = stats();
      if (held.liveBytes - before.liveBytes < 4 * n) throw new Error(`only ${held.liveBytes - before.liveBytes} live bytes more`);
      x.dispose();
      x.dispose(); // idempotent: no second free
      const after = stats();
      if (after.liveBytes !== before.liveBytes || after.liveAllocations !== before.liveAllocations || after.jsLiveBuffers !== before.jsLiveBuffers) {
        throw new Error(`live ${after.liveBytes} bytes / ${after.liveAllocations} allocations, want ${before.liveBytes} / ${before.liveAllocations}`);
      }
      let code;
      try {
        await x.toArray();
      } catch (e) {
        code = e.code;
      }
      if (code !== 'KILN_DISPOSED') throw new Error(`toArray after dispose: ${code}`);
      // Disposed while its download is in flight: the download completes, then the block is freed.
      const y = kiln.tensor(new Float32Array(n).fill(5), [n], 'float32', 'cuda');
      const pending = y.toArray();
      y.dispose();
      const got = await pending;
      if (got[n - 1] !== 5) throw new Error(`in-flight download read ${got[n - 1]}`);
      const end = stats();
      if (end.liveAllocations !== before.liveAllocations) throw new Error('the block disposed during a download was not freed after it');
      return `${(held.liveBytes - before.liveBytes) / 2 ** 20} MiB freed`;
    });

    await ctx.check('eager ops on a device tensor', async () => {
      const x = kiln.tensor([1, 2, 3, 4, 5, 6], [2, 3], 'float16', 'cuda');
      const y = x.add(1).mul(x).sum(1);
      if (y.device !== 'cuda' || y.isOnGpu) throw new Error(`${y}: an eager result should be host data on 'cuda'`);
      same(await y.toArray(), Float32Array.from([2 + 6 + 12, 20 + 30 + 42]), 'sum');
      if (hostOf(x) === null || !x.isOnGpu) throw new Error('the download was not kept beside the device data');
      const r = x.reshape([3, 2]).transpose(0, 1);
      same(await r.toArray(), Float32Array.from([1, 3, 5, 2, 4, 6]), 'reshape/transpose');
      const before = stats().liveAllocations;
      const u = api.programInput('f', y, 0); // uploaded once, then kept
      if (!(u instanceof DeviceTensor) || api.programInput('f', y, 0) !== u || stats().liveAllocations !== before + 1) throw new Error('eager result not uploaded once');
      for (const t of [x, y, r]) t.dispose();
      if (stats().liveAllocations !== before - 1) throw new Error('dispose left device memory');
      return 'downloaded once, uploaded once';
    });

    await ctx.check('program output back in as input, no copy', async () => {
      const { graph, build: b } = await run.build(k, ctx, spec);
      const program = await k.engine.loadCudaProgram({ image: b.image, graph: b.program.graph, plan: b.plan, device: dev });
      try {
        const values = valuesOf('float32', 4097);
        const x = kiln.tensor(values, [4097], 'float32', 'cuda');
        const s0 = stats();
        const [o1] = await program.cuda.run([api.programInput('f', x, 0)]);
        const s1 = stats();
        const y = api.tensorFromDevice(o1);
        const input = api.programInput('f', y, 0);
        if (input !== o1) throw new Error('the output was not passed back as itself');
        const [o2] = await program.cuda.run([input]);
        const s2 = stats();
        const z = api.tensorFromDevice(o2);
        const want = Float32Array.from(values, (v) => (v * 2 + 1) * 2 + 1);
        same(await z.toArray(), want, 'z');
        // A device input costs the call only its output; a host input would add an upload.
        const host = await program.cuda.run([{ dtype: 'float32', shape: [4097], data: Float32Array.from(values) }]);
        const s3 = stats();
        host.forEach((t) => t.dispose());
        const perCall = [s1.allocations - s0.allocations, s2.allocations - s1.allocations, s3.allocations - s2.allocations];
        if (perCall[0] !== 1 || perCall[1] !== 1 || perCall[2] !== 2) throw new Error(`allocations per call ${perCall.join(', ')}; want 1, 1, 2`);
        for (const t of [x, y, z]) t.dispose();
        void graph;
        return `allocations per call: device input ${perCall[1]}, host input ${perCall[2]}`;
      } finally {
        program.cuda.program.dispose();
      }
    });

    await ctx.check('a forgotten tensor is freed by the GC', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc'); // a gc function without restarting node
      const settle = async () => {
        gc();
        await new Promise((r) => setTimeout(r, 10)); // finalizers run in a later task
      };
      for (let i = 0; i < 3; i++) await settle(); // earlier garbage first
      const before = stats();
      (() => {
        kiln.tensor(new Float32Array(1 << 16), [1 << 16], 'float32', 'cuda');
      })();
      for (let i = 0; i < 10 && stats().gcFreedBuffers === before.gcFreedBuffers; i++) await settle();
      const after = stats();
      if (after.gcFreedBuffers !== before.gcFreedBuffers + 1 || after.liveAllocations !== before.liveAllocations) {
        throw new Error(`gc freed ${after.gcFreedBuffers - before.gcFreedBuffers} buffers; ${after.liveAllocations - before.liveAllocations} allocations left`);
      }
      return 'freed once';
    });

    await ctx.check("kiln.compile device 'cuda' keeps outputs on the GPU", async () => {
      const f = kiln.compile(double, { device: 'cuda', cache: 'off' });
      const x = kiln.tensor(valuesOf('float32', 64), [64], 'float32', 'cuda');
      const y = await f(x);
      const z = await f(y);
      same(await z.toArray(), Float32Array.from(valuesOf('float32', 64), (v) => (v * 2 + 1) * 2 + 1), 'z');
      const onGpu = [y.isOnGpu, z.isOnGpu];
      for (const t of [x, y, z]) t.dispose();
      if (!onGpu[0] || !onGpu[1]) throw new Error(`outputs are host data (${onGpu}): kiln.compile does not wrap DeviceTensors yet`);
      return 'outputs on the GPU';
    });

    await ctx.check("a disposed compiled function frees its program's device memory", async () => {
      const fn = (x) => x.mul(2).add(1).relu();
      const before = stats();
      const f = kiln.compile(fn, { name: 'gpu-dispose', device: 'cuda', cache: 'off' });
      const x = kiln.tensor(valuesOf('float32', 4096), [4096], 'float32', 'cuda');
      const pending = f(x); // in flight while it is disposed
      f.dispose();
      const y = await pending;
      same(await y.toArray(), Float32Array.from(valuesOf('float32', 4096), (v) => Math.max(0, v * 2 + 1)), 'y');
      for (const t of [x, y]) t.dispose();
      const after = stats();
      if (after.liveAllocations !== before.liveAllocations) throw new Error(`${after.liveAllocations - before.liveAllocations} device allocations left after dispose`);
      let code;
      try {
        await f(x);
      } catch (e) {
        code = e.code;
      }
      if (code !== 'KILN_DISPOSED') throw new Error(`a call after dispose: ${code}`);
      return 'program freed after its call finished';
    });

    await ctx.check('row tiles past 65535 run (grid.x); column tiles past it are a typed error, and the function still runs', async () => {
      // float32 matmuls with dynamic rows, then dynamic columns: 64- or 128-wide tiles.
      const rowsF = kiln.compile((x, w) => x.matmul(w), { name: 'gpu-grid-rows', device: 'cuda', cache: 'off', dynamic: { 0: [0] } });
      const rows = 65536 * 128 + 5;
      const x = kiln.tensor(Float32Array.from({ length: rows }, (_, i) => i % 1000), [rows, 1], 'float32', 'cuda');
      const y = await rowsF(x, kiln.tensor([2], [1, 1], 'float32', 'cuda'));
      const got = await y.toArray();
      for (const i of [0, 1, 999, rows - 1]) if (got[i] !== (i % 1000) * 2) throw new Error(`${rows} rows: output ${i} is ${got[i]}, want ${(i % 1000) * 2}`);
      for (const t of [x, y]) t.dispose();
      const colsF = kiln.compile((x, w) => x.matmul(w), { name: 'gpu-grid-cols', device: 'cuda', cache: 'off', dynamic: { 1: [1] } });
      const one = kiln.tensor([3], [1, 1], 'float32', 'cuda');
      const cols = 65536 * 128;
      let err;
      try {
        await colsF(one, kiln.tensor(new Float32Array(cols), [1, cols], 'float32', 'cuda'));
      } catch (e) {
        err = e;
      }
      if (err?.code !== 'KILN_CUDA_LAUNCH_CONFIG') throw new Error(`${cols} columns: ${err ? `${err.code} ${err.message}` : 'no error'}`);
      const again = await colsF(one, kiln.tensor([1, 2], [1, 2], 'float32', 'cuda'));
      same(await again.toArray(), Float32Array.from([3, 6]), 'again');
      return `${rows} rows ran; ${err.message.split(':')[0]}`;
    });
  },
};
