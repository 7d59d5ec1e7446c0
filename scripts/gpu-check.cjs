#!/usr/bin/env node
/**
 * End-to-end GPU check of kiln's native layer, for GPU machines: NVRTC compiles a vector-add
 * kernel for the device's SM, then alloc, copy in, launch, copy back, verify. Needs only
 * Node, dist/ and the addon (no dev dependencies).
 *
 *   node scripts/gpu-check.cjs [--out DIR]
 *
 * Prints a table and a last line `N passed, N failed`; writes DIR/gpu-check.json. Without
 * a GPU it reports "skipped: <reason>" and exits 0, unless KILN_REQUIRE_GPU=1.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const native = require('../dist/runtime/native.js');

const outIdx = process.argv.indexOf('--out');
const outDir = outIdx > 0 ? process.argv[outIdx + 1] : undefined;
const requireGpu = process.env.KILN_REQUIRE_GPU === '1';

const checks = [];
/** Runs one named step, timing it; a thrown error fails it and stops the dependent steps. */
async function step(name, fn) {
  const t0 = process.hrtime.bigint();
  try {
    const detail = (await fn()) || '';
    checks.push({ name, status: 'pass', ms: Number(process.hrtime.bigint() - t0) / 1e6, detail });
    return true;
  } catch (e) {
    const detail = `${e.code ? e.code + ': ' : ''}${e.message}`.split('\n')[0];
    checks.push({ name, status: 'fail', ms: Number(process.hrtime.bigint() - t0) / 1e6, detail });
    return false;
  }
}

const KERNEL = `
extern "C" __global__ void vector_add(const float* a, const float* b, float* c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}
`;

/** Picks a cubin target for the device, or PTX for the newest arch NVRTC knows if it is too new. */
function targetFor(cc, archs) {
  const sm = `sm_${cc[0]}${cc[1]}`;
  if (archs.includes(sm)) return sm;
  const newest = archs.map((a) => Number(a.slice(3))).sort((x, y) => x - y).pop();
  return `compute_${newest}`;
}

async function gpuChecks(info) {
  const dev = info.driver.devices[0];
  const n = 1_000_003; // not a multiple of the block size: the bounds check must hold
  const bytes = n * 4;
  const a = new Float32Array(n).map((_, i) => i * 0.5);
  const b = new Float32Array(n).map((_, i) => 1 - i);
  const c = new Float32Array(n);
  let binary;
  let module;
  let kernel;
  const bufs = [];
  const target = targetFor(dev.computeCapability, info.nvrtc.available ? info.nvrtc.archs : []);
  const ok =
    (await step(`nvrtc ${target}`, async () => {
      if (!info.nvrtc.available) throw new Error(`NVRTC unavailable: ${info.nvrtc.reason}`);
      const r = await native.nvrtcCompile({ source: KERNEL, name: 'vector_add.cu', target, options: ['--std=c++17'] });
      binary = r.binary;
      return `${r.kind}, ${r.binary.length} bytes`;
    })) &&
    (await step('module load', () => {
      module = new native.CudaModule(binary, dev.index);
      kernel = module.getFunction('vector_add');
    })) &&
    (await step('alloc + copy in', async () => {
      for (let i = 0; i < 3; i++) bufs.push(new native.DeviceBuffer(bytes, dev.index));
      await bufs[0].write(a);
      await bufs[1].write(b);
      return `3 x ${bytes} bytes`;
    })) &&
    (await step('launch + sync', async () => {
      const block = 256;
      kernel.launch([Math.ceil(n / block)], [block], [bufs[0], bufs[1], bufs[2], { i32: n }]);
      await native.synchronize(dev.index);
    })) &&
    (await step('copy out + verify', async () => {
      await bufs[2].read(c);
      for (let i = 0; i < n; i++) {
        const want = Math.fround(a[i] + b[i]);
        if (c[i] !== want) throw new Error(`c[${i}] = ${c[i]}, expected ${want}`);
      }
      return `${n} elements`;
    }));
  await step('free', () => {
    for (const buf of bufs) buf.free();
    if (module) module.unload();
    const stats = native.deviceMemoryStats();
    if (stats.liveAllocations !== 0) throw new Error(`${stats.liveAllocations} allocations still live`);
  });
  return ok;
}

async function main() {
  const info = native.addonInfo();
  console.log(`addon   ${info.addon.source}: ${info.addon.path}`);
  console.log(
    info.driver.available
      ? `driver  ${info.driver.version}; ` +
          info.driver.devices.map((d) => `#${d.index} ${d.name} sm_${d.computeCapability.join('')} ${d.smCount} SMs`).join(', ')
      : `driver  unavailable: ${info.driver.reason}`,
  );
  console.log(
    info.nvrtc.available
      ? `nvrtc   ${info.nvrtc.version.join('.')} (${info.nvrtc.foundBy}) ${info.nvrtc.path}`
      : `nvrtc   unavailable: ${info.nvrtc.reason}`,
  );
  let skipped;
  if (info.driver.available && info.driver.devices.length > 0) {
    await gpuChecks(info);
  } else {
    skipped = info.driver.available ? 'no CUDA device' : info.driver.reason;
    if (requireGpu) checks.push({ name: 'gpu present', status: 'fail', ms: 0, detail: skipped });
  }
  const passed = checks.filter((c) => c.status === 'pass').length;
  const failed = checks.filter((c) => c.status === 'fail').length;
  console.log('');
  if (checks.length > 0) {
    console.log(`${'check'.padEnd(22)} ${'result'.padEnd(6)} ${'ms'.padStart(9)}  detail`);
    for (const c of checks) {
      console.log(`${c.name.padEnd(22)} ${c.status.padEnd(6)} ${c.ms.toFixed(1).padStart(9)}  ${c.detail}`);
    }
  }
  if (skipped !== undefined) console.log(`skipped: ${skipped}`);
  console.log(`${passed} passed, ${failed} failed`);
  if (outDir) {
    fs.mkdirSync(outDir, { recursive: true });
    const report = { info, skipped: skipped ?? null, checks, passed, failed, node: process.version };
    fs.writeFileSync(path.join(outDir, 'gpu-check.json'), JSON.stringify(report, null, 2) + '\n');
  }
  process.exitCode = failed > 0 ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  console.log('0 passed, 1 failed');
  process.exitCode = 1;
});
