/**
 * The benchmark report generator (lib/bench/report.ts, charts.ts) as pure functions: JSON
 * results in, markdown and SVG out. Only the text between its own markers changes; other
 * sections (another engineer's markers, hand-written notes) stay byte for byte; the SVG is
 * well-formed, escaped, and carries its values, title, axis labels and machine caption.
 */
import { linearTicks, niceNumber } from '../lib/bench/charts';
import type { ModelResult } from '../lib/bench/cpu';
import { markers, renderReport, replaceSection, type CpuReport, type StartupReport } from '../lib/bench/report';
import { startupBench, type StartupResult } from '../lib/bench/startup';
import type { Timing } from '../lib/bench/stats';

const timing = (median: number): Timing & { gflops: number; cpuMs: number } => ({ median, p10: median * 0.9, p90: median * 1.2, min: median * 0.85, mean: median, samples: 10, gflops: 1 / median, cpuMs: median });

function model(name: string, config: Record<string, number>, kiln: number, ort: number): ModelResult {
  return { model: name, config, flops: 1e9, relErr: 2.4e-7, agree: true, kiln: timing(kiln), ort: timing(ort), ratio: kiln / ort, ratioMin: (kiln * 0.85) / (ort * 0.85), ortSessionMs: 10 };
}

const cpu: CpuReport = {
  benchmark: 'cpu',
  date: '2026-11-26T10:20:13.500Z',
  cpu: 'Intel(R) Xeon <Test> & Co',
  simd: ['sse4_2', 'avx', 'avx2', 'fma'],
  cores: 16,
  threads: 4,
  loadAverage1m: { before: 0.5, after: 0.7 },
  kilnMode: 'compiled',
  ortPrepack: true,
  sizes: 'full',
  iters: 10,
  warmup: 5,
  tolerance: 1e-4,
  versions: { node: 'v20.20.2', kiln: '0.1.0', onnxruntime: '1.30.0' },
  results: [model('mlp', { batch: 64, width: 1024, layers: 4 }, 15, 16.5), model('block', { batch: 1, seq: 128, d: 768, heads: 12 }, 43.4, 45.1), model('gpt', { layers: 2, heads: 4, d: 64, vocab: 46, seq: 56 }, 3.16, 1.13)],
};

function startupModel(name: string, config: Record<string, number>, cold: number, warm: number): StartupResult {
  return {
    model: name,
    config,
    runs: [],
    cold: { firstMs: cold, steadyMs: 6.26 },
    warm: { firstMs: warm, steadyMs: 6.23, importMs: 143, loadMs: 13.7, callMs: 61 },
    ratio: warm / cold,
    warmFromBundle: true,
  };
}

const startup: StartupReport = {
  benchmark: 'startup',
  date: '2026-11-25T09:00:00.000Z',
  cpu: 'AMD EPYC',
  simd: ['avx2', 'fma'],
  cores: 2,
  threads: 2,
  node: 'v20.20.2',
  versions: { node: 'v20.20.2', kiln: '0.1.0' },
  reps: 3,
  calls: 30,
  results: [startupModel('mlp', { batch: 64, width: 1024, layers: 4 }, 5018, 259), startupModel('block', { batch: 1, seq: 128, d: 768, heads: 12 }, 6919, 409)],
};

/** Every tag closed in order, attributes quoted: enough to catch a broken hand-written SVG. */
function expectWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    if (m[1]) expect(stack.pop()).toBe(m[2]);
    else if (!m[4]) stack.push(m[2]);
  }
  expect(stack).toEqual([]);
  // Every '<' starts a tag and every '&' an entity.
  expect(svg.replace(/<(\/?)([a-zA-Z]+)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g, '')).not.toMatch(/[<>]|&(?!(amp|lt|gt|quot);)/);
}

describe('markdown', () => {
  test('a missing report is created with an intro and both sections, charts linked', () => {
    const { doc, files } = renderReport({ doc: undefined, cpu, startup });
    expect(doc).toMatch(/^# Benchmarks\n/);
    const cpuAt = doc.indexOf(markers('cpu').start);
    const startupAt = doc.indexOf(markers('startup').start);
    expect(cpuAt).toBeGreaterThan(0);
    expect(startupAt).toBeGreaterThan(cpuAt);
    expect(doc).toContain('![CPU latency per call, kiln vs onnxruntime-node, per model](img/bench-cpu.svg)');
    expect(doc).toContain('](img/bench-startup.svg)');
    expect(Object.keys(files).sort()).toEqual(['img/bench-cpu.svg', 'img/bench-startup.svg']);
  });

  test('tables name the machine, threads, date and versions, one row per model', () => {
    const { doc } = renderReport({ doc: undefined, cpu, startup });
    expect(doc).toContain('Measured 2026-11-26 on Intel(R) Xeon <Test> & Co (16 cores; avx, avx2, fma), **4 threads** for both engines');
    expect(doc).toContain('kiln 0.1.0, onnxruntime-node 1.30.0, Node v20.20.2');
    expect(doc).toContain('| gpt | 2 blocks, d 64, seq 56 | 3.16 | 1.13 | **2.80×** |');
    expect(doc).toContain('| mlp | 4×1024, batch 64 | 15.0 | 16.5 | **0.91×** |');
    expect(doc).toContain('Measured 2026-11-25 on AMD EPYC (2 cores; avx2, fma), 2 kernel threads;\nkiln 0.1.0, Node v20.20.2.');
    expect(doc).toContain('| block | d 768, 12 heads, seq 128 | 6.92 s | 409 ms | **0.059** |');
  });

  test('startup: the refined warm breakdown and the bare Node start, when the results have them', () => {
    const fine = (m: StartupResult): StartupResult => ({ ...m, warm: { ...m.warm, checkpointMs: 18.2, tensorsMs: 31.4, callMs: 21.5 } });
    const nodeStart = { bareMs: 38.4, samples: 10, withCaCertsMs: 121, dropped: ['NODE_EXTRA_CA_CERTS'] };
    const { doc } = renderReport({ doc: undefined, startup: { ...startup, nodeStart, results: startup.results.map(fine) } });
    expect(doc).toContain('| model | sizes | cold: first result | warm: first result | warm ÷ cold | warm: Node + kiln import | warm: weights file | warm: kiln.tensor | warm: bundle load | warm: first call |');
    expect(doc).toContain('| mlp | 4×1024, batch 64 | 5.02 s | 259 ms | **0.052** | 143 ms | 18.2 ms | 31.4 ms | 13.7 ms | 21.5 ms | 6.26 / 6.23 | bundle, 0 compiles |');
    expect(doc).toContain(
      "Bare Node start (`node -e`, the children's environment, median of 10): 38.4 ms; 121 ms with this machine's NODE_EXTRA_CA_CERTS. The children ran without NODE_EXTRA_CA_CERTS (`--keep-ca-certs` keeps it).",
    );
    // Older files keep their columns.
    expect(renderReport({ doc: undefined, startup }).doc).toContain('| model | sizes | cold: first result | warm: first result | warm ÷ cold | warm: Node + kiln import | warm: bundle load | ms per call cold / warm |');
  });

  test('only the text between our markers changes; other sections and notes stay byte for byte', () => {
    const before = [
      '# Benchmarks',
      '',
      'A hand-written intro.',
      '',
      '## GPU',
      '<!-- bench:gpu:start -->',
      'another engineer’s generated table',
      '<!-- bench:gpu:end -->',
      '',
      '## CPU',
      '<!-- bench:cpu:start -->',
      'old cpu numbers',
      '<!-- bench:cpu:end -->',
      'Notes after the CPU section, kept.',
      '',
      '## Startup',
      '<!-- bench:startup:start -->',
      'old startup numbers',
      '<!-- bench:startup:end -->',
      '',
    ].join('\n');
    const { doc } = renderReport({ doc: before, cpu, startup });
    expect(doc).not.toContain('old cpu numbers');
    expect(doc).not.toContain('old startup numbers');
    const strip = (s: string) => s.replace(/(<!-- bench:(cpu|startup):start -->)[\s\S]*?(<!-- bench:\2:end -->)/g, '$1$3');
    expect(strip(doc)).toBe(strip(before));
    expect(doc).toContain('<!-- bench:gpu:start -->\nanother engineer’s generated table\n<!-- bench:gpu:end -->');
    // Idempotent, and a report with only one benchmark leaves the other section alone.
    expect(renderReport({ doc, cpu, startup }).doc).toBe(doc);
    const cpuOnly = renderReport({ doc: before, cpu });
    expect(cpuOnly.doc).toContain('old startup numbers');
    expect(Object.keys(cpuOnly.files)).toEqual(['img/bench-cpu.svg']);
  });

  test('a missing section is appended; broken markers are an error, not a guess', () => {
    expect(replaceSection('# Title\n\ntext\n', 'cpu', 'BODY', 'CPU')).toBe('# Title\n\ntext\n\n## CPU\n\n<!-- bench:cpu:start -->\nBODY\n<!-- bench:cpu:end -->\n');
    const { start, end } = markers('cpu');
    expect(() => replaceSection(`${end}\n${start}\n`, 'cpu', 'x')).toThrow(/once each, in that order/);
    expect(() => replaceSection(`${start}\n${end}\n${start}\n${end}\n`, 'cpu', 'x')).toThrow(/once each/);
    expect(() => replaceSection(`${start}\n`, 'cpu', 'x')).toThrow(/once each/);
  });

  test('a run that is not the full compiled benchmark says so', () => {
    const { doc } = renderReport({ doc: undefined, cpu: { ...cpu, kilnMode: 'eager', sizes: 'small', ortPrepack: false } });
    expect(doc).toContain('Note: kiln ran **eager** (not compiled), **small** sizes, onnxruntime without weight pre-packing.');
  });
});

describe('charts', () => {
  const { files } = renderReport({ doc: undefined, cpu, startup });

  test('latency chart: title, axis label, values and ratios on the bars, escaped caption', () => {
    const svg = files['img/bench-cpu.svg'];
    expectWellFormed(svg);
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="\d+" height="\d+"/);
    expect(svg).toContain('<title>CPU latency per call: kiln vs onnxruntime-node</title>');
    expect(svg).toContain('>ms per call</text>');
    for (const label of ['15.0 ms', '16.5 ms', '43.4 ms', '45.1 ms', '3.16 ms', '1.13 ms', 'kiln ÷ ort = 0.91×', 'kiln ÷ ort = 2.80×', '>gpt<', '2 blocks, d 64, seq 56']) expect(svg).toContain(label);
    expect(svg).toContain('Intel(R) Xeon &lt;Test&gt; &amp; Co, 16 cores, 4 threads · kiln 0.1.0 · onnxruntime-node 1.30.0 · Node v20.20.2 · 2026-11-26');
  });

  test('startup chart: log axis in decades, cold and warm values, warm ÷ cold', () => {
    const svg = files['img/bench-startup.svg'];
    expectWellFormed(svg);
    for (const label of ['>100 ms<', '>1 s<', '>10 s<', '5.02 s', '259 ms', '6.92 s', '409 ms', 'warm ÷ cold = 0.052', 'time to first result (log scale)']) expect(svg).toContain(label);
    expect(svg).toContain('AMD EPYC, 2 cores, 2 threads · kiln 0.1.0 · Node v20.20.2 · 2026-11-25');
  });

  test('same JSON, same bytes; one model or many still draw', () => {
    expect(renderReport({ doc: undefined, cpu, startup }).files).toEqual(files);
    for (const results of [cpu.results.slice(0, 1), [...cpu.results, ...cpu.results]]) {
      expectWellFormed(renderReport({ doc: undefined, cpu: { ...cpu, results } }).files['img/bench-cpu.svg']);
    }
    expectWellFormed(renderReport({ doc: undefined, startup: { ...startup, versions: undefined } }).files['img/bench-startup.svg']);
  });

  test('round axes', () => {
    expect([niceNumber(0.3), niceNumber(4), niceNumber(21), niceNumber(50)]).toEqual([0.5, 5, 25, 50]);
    expect(linearTicks(18)).toEqual([0, 5, 10, 15, 20]);
    expect(linearTicks(47)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(linearTicks(1.3)).toEqual([0, 0.5, 1, 1.5]);
  });
});

describe('kiln bench startup command line', () => {
  const run = async (argv: string[]): Promise<{ code: number; err: string }> => {
    const spy = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const code = await startupBench(argv);
      return { code, err: spy.mock.calls.map((c) => String(c[0])).join('\n') };
    } finally {
      spy.mockRestore();
    }
  };

  test('--device takes cpu or cuda; a GPU run does not rewrite the CPU report', async () => {
    expect(await run(['--device', 'tpu'])).toEqual({ code: 2, err: expect.stringContaining("--device must be cpu or cuda, got 'tpu'") });
    expect(await run(['--device'])).toEqual({ code: 2, err: expect.stringContaining("--device must be cpu or cuda, got ''") });
    expect(await run(['--device', 'cuda', '--report'])).toEqual({ code: 2, err: expect.stringContaining('--report rewrites the CPU figures') });
  });
});
