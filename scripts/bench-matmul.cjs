#!/usr/bin/env node
// Matmul throughput of kiln's generated C++ (lib/codegen/gemm.ts): compiles a few matmul
// programs into one shared object, times them at 1 and all threads, prints GFLOP/s next to
// the CPU's FMA peak (cores × SIMD FLOP/cycle × the clock /proc/cpuinfo reports), and
// writes bench-results/matmul.json. Each weight matmul is timed twice: B packed on every
// call (`<entry>`) and B pre-packed in its pack slot (`<entry>_packed`, as CpuProgram runs
// it from a tensor's third call on). Usage: node scripts/bench-matmul.cjs [--iters N]
require('../test/fixtures/native/ts-register.cjs');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { cppFlags, renderCppUnit } = require('../lib/codegen');
const { cpuInfo } = require('../lib/runtime/toolchain');
const { lower } = require('../lib/passes');
const { trace } = require('../lib/tensor/trace');
const { encodeStorage, allocStorage } = require('../lib/ir');
const { cpuLoad } = require('../lib/runtime/native');

const iters = Number(process.argv[process.argv.indexOf('--iters') + 1]) || 20;
const cases = [
  { name: '64x1024x1024 f32', m: 64, n: 1024, k: 1024, dtype: 'float32' },
  { name: '256x1024x1024 f32', m: 256, n: 1024, k: 1024, dtype: 'float32' },
  { name: '512x512x512 f32', m: 512, n: 512, k: 512, dtype: 'float32' },
  { name: '64x1024x1024 f32 +bias+gelu', m: 64, n: 1024, k: 1024, dtype: 'float32', epilogue: true },
  { name: '64x1024x1024 f16', m: 64, n: 1024, k: 1024, dtype: 'float16' },
  // the transformer block's shapes (benchmark model 'block')
  { name: '128x2304x768 f32 (qkv)', m: 128, n: 2304, k: 768, dtype: 'float32' },
  { name: '128x768x768 f32 (proj)', m: 128, n: 768, k: 768, dtype: 'float32' },
  { name: '128x3072x768 f32 +bias+gelu (fc1)', m: 128, n: 3072, k: 768, dtype: 'float32', epilogue: true },
  { name: '128x768x3072 f32 (fc2)', m: 128, n: 768, k: 3072, dtype: 'float32' },
  { name: '12x 128x128x64 f32 (q.kT)', m: 128, n: 128, k: 64, dtype: 'float32', attention: true },
];

const programs = cases.map((c) => {
  if (c.attention) {
    // q.k^T per head: q and k are slices of one [T, 3*768] qkv activation (no pack slot)
    const heads = (t) => t.reshape([1, c.m, 12, c.k]).transpose(1, 2);
    return lower(trace((qkv) => heads(qkv.slice(-1, 0, 768)).matmul(heads(qkv.slice(-1, 768, 1536)).transpose(-2, -1)), [{ shape: [1, c.m, 2304], dtype: c.dtype }]));
  }
  const specs = [{ shape: [c.m, c.k], dtype: c.dtype }, { shape: [c.k, c.n], dtype: c.dtype }, ...(c.epilogue ? [{ shape: [c.n], dtype: c.dtype }] : [])];
  const fn = c.epilogue ? (x, w, b) => x.matmul(w).add(b).gelu() : (x, w) => x.matmul(w);
  return lower(trace(fn, specs));
});
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-mm-'));
const src = path.join(dir, 'mm.cpp');
const so = path.join(dir, 'mm.so');
fs.writeFileSync(src, renderCppUnit(programs.map((program, i) => ({ program, entry: `mm${i}` }))));
execFileSync('g++', [...cppFlags(cpuInfo().features), '-o', so, src]);
const lib = cpuLoad(so);

const cpu = fs.readFileSync('/proc/cpuinfo', 'utf8');
const model = /model name\s*:\s*(.*)/.exec(cpu)?.[1] ?? 'unknown';
const mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(cpu)?.[1] ?? 0);
const flags = /flags\s*:\s*(.*)/.exec(cpu)?.[1].split(' ') ?? [];
const lanes = flags.includes('avx512f') ? 16 : flags.includes('avx2') ? 8 : 4;
const fmaUnits = 2; // FMA pipes per core on current x86 server cores
const cores = os.cpus().length;
const peakPerCore = (mhz / 1000) * lanes * 2 * fmaUnits;

const rows = [];
cases.forEach((c, i) => {
  const p = programs[i];
  const rnd = (n) => Array.from({ length: n }, () => Math.random() * 2 - 1);
  const bufs = p.plan.buffers.map((b) => {
    const n = Number(b.elems);
    return b.role === 'input' ? encodeStorage(b.dtype, rnd(n)) : allocStorage(b.dtype, n);
  });
  const flops = 2 * c.m * c.n * c.k * (c.attention ? 12 : 1);
  // Pack slots (lib/codegen/cpp.ts): one buffer per slot, state 1 packs it, 2 uses it.
  const slotInfo = new BigInt64Array(1 + 3 * 16);
  lib.call(`mm${i}_pack_slots`, [slotInfo], [16]);
  const slots = Array.from({ length: Number(slotInfo[0]) }, (_, s) => new ArrayBuffer(Number(slotInfo[2 + 3 * s])));
  const modes = [{ mode: 'B packed per call', entry: `mm${i}`, args: bufs, ints: [] }];
  if (slots.length) modes.push({ mode: 'B pre-packed', entry: `mm${i}_packed`, args: [...bufs, ...slots], ints: slots.map(() => 2) });
  if (slots.length) lib.call(`mm${i}_packed`, [...bufs, ...slots], slots.map(() => 1));
  for (const { mode, entry, args, ints } of modes)
  for (const threads of [1, cores]) {
    lib.call('kiln_set_threads', [], [threads]);
    for (let w = 0; w < 3; w++) lib.call(entry, args, ints);
    const times = [];
    const cpus = [];
    for (let it = 0; it < iters; it++) {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      lib.call(entry, args, ints);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      const c = process.cpuUsage(c0);
      cpus.push((c.user + c.system) / 1e6);
    }
    cpus.sort((a, b) => a - b);
    // On a shared machine wall time includes time the kernel was not running; for one
    // thread, CPU time is the kernel's own time (the best of both is reported).
    const cpuGflops = threads === 1 ? flops / cpus[cpus.length >> 1] / 1e9 : NaN;
    times.sort((a, b) => a - b);
    const best = times[0];
    const median = times[times.length >> 1];
    const gflops = flops / median / 1e9;
    const bestGflops = flops / best / 1e9;
    rows.push({ case: c.name, mode, kernels: p.kernels.map((k) => k.name).join(' '), threads, medianMs: median * 1e3, bestMs: best * 1e3, gflops, bestGflops, cpuGflops, peakGflops: peakPerCore * threads, ofPeak: bestGflops / (peakPerCore * threads) });
  }
});

console.log(`CPU: ${model}, ${cores} cores, ${mhz} MHz, ${lanes}-lane FMA; peak ${peakPerCore.toFixed(1)} GFLOP/s per core`);
console.log('| case | B | kernels | threads | median ms | best ms | GFLOP/s (median) | GFLOP/s (best) | GFLOP/s (CPU time, median) | of peak (best) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) console.log(`| ${r.case} | ${r.mode} | ${r.kernels} | ${r.threads} | ${r.medianMs.toFixed(2)} | ${r.bestMs.toFixed(2)} | ${r.gflops.toFixed(1)} | ${r.bestGflops.toFixed(1)} | ${Number.isNaN(r.cpuGflops) ? '' : r.cpuGflops.toFixed(1)} | ${(100 * r.ofPeak).toFixed(0)}% |`);
fs.mkdirSync('bench-results', { recursive: true });
fs.writeFileSync('bench-results/matmul.json', JSON.stringify({ cpu: model, cores, mhz, lanes, loadAverage: os.loadavg(), date: new Date().toISOString(), rows }, null, 2));
console.log(`load average (1 min): ${os.loadavg()[0].toFixed(2)} on ${cores} cores`);
