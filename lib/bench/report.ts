/**
 * The benchmark report: docs/BENCHMARKS.md's generated sections and the charts in docs/img/,
 * regenerated from bench-results/*.json by `kiln bench --report`, `kiln bench startup
 * --report`, `kiln bench report` and `npm run bench`.
 *
 * Only the text between a section's markers is rewritten:
 *   <!-- bench:cpu:start --> … <!-- bench:cpu:end -->
 *   <!-- bench:startup:start --> … <!-- bench:startup:end -->
 * Everything else in the file (the intro, other people's sections with other markers, notes
 * written by hand) is kept byte for byte. A missing file is created with a short intro; a
 * missing section is appended with a heading. `renderReport` is pure (JSON in, files out);
 * `writeReport` does the reading and writing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fmtMs, latencyChart, sizeLabel, startupChart, type ChartMachine } from './charts';
import type { ModelResult } from './cpu';
import type { NodeStart, StartupResult } from './startup';
import { parseCommandLine, UsageError } from './command-line';

/** bench-results/cpu.json, as `kiln bench` writes it. */
export interface CpuReport {
  benchmark: 'cpu';
  date: string;
  cpu: string;
  simd: string[];
  cores: number;
  threads: number;
  loadAverage1m?: { before: number; after: number };
  kilnMode: string;
  ortPrepack: boolean;
  sizes: string;
  iters: number;
  warmup: number;
  tolerance: number;
  versions: { node: string; kiln: string; onnxruntime: string };
  results: ModelResult[];
}

/** bench-results/startup.json, as `kiln bench startup` writes it. */
export interface StartupReport {
  benchmark: 'startup';
  date: string;
  cpu: string;
  simd?: string[];
  cores: number;
  threads: number;
  node: string;
  /** Absent in files written before versions were recorded. */
  versions?: { node: string; kiln: string };
  reps: number;
  calls: number;
  loadAverage1m?: { before: number; after: number };
  /** Bare Node starts measured alongside (absent in older files). */
  nodeStart?: NodeStart;
  results: StartupResult[];
}

/** The report's sections, by marker name, with the chart each links. */
export const SECTIONS = {
  cpu: { heading: 'CPU: kiln vs onnxruntime-node', chart: 'img/bench-cpu.svg' },
  startup: { heading: 'Startup: cold vs warm', chart: 'img/bench-startup.svg' },
} as const;
export type SectionName = keyof typeof SECTIONS;

export const markers = (name: string): { start: string; end: string } => ({ start: `<!-- bench:${name}:start -->`, end: `<!-- bench:${name}:end -->` });

const INTRO = `# Benchmarks

Measured results of kiln's benchmarks, regenerated from \`bench-results/*.json\` by
\`npm run bench\` (or \`kiln bench --report\`, \`kiln bench startup --report\`, and
\`kiln bench report\` to rewrite this page from the JSON alone). Every figure names the machine
and the date that produced it; numbers from another machine will differ. How the CPU benchmark
measures, and what the numbers mean: [BENCH-CPU.md](BENCH-CPU.md). Text between the
\`<!-- bench:… -->\` markers is generated; anything outside them is kept as written.
`;

const date = (iso: string) => iso.slice(0, 10);
const fixed = (v: number, d: number) => (Number.isFinite(v) ? v.toFixed(d) : '—');
const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const gflops = (v: number) => (v >= 10 ? v.toFixed(1) : v.toPrecision(2));
const load = (l?: { before: number; after: number }) => (l ? `; 1-minute load average ${l.before.toFixed(2)} before, ${l.after.toFixed(2)} after` : '');
const simdList = (s?: string[]) => (s?.length ? `; ${s.filter((f) => /avx|fma|neon|sve/i.test(f)).join(', ') || s.join(', ')}` : '');

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** The machine line of a chart's caption. */
export function cpuMachine(r: CpuReport): ChartMachine {
  return { cpu: r.cpu, cores: r.cores, threads: r.threads, date: r.date, versions: `kiln ${r.versions.kiln} · onnxruntime-node ${r.versions.onnxruntime} · Node ${r.versions.node}` };
}

export function startupMachine(r: StartupReport): ChartMachine {
  return { cpu: r.cpu, cores: r.cores, threads: r.threads, date: r.date, versions: `kiln ${r.versions?.kiln ?? '(version not recorded)'} · Node ${r.versions?.node ?? r.node}` };
}

/** The generated body of the CPU section (markdown). */
export function cpuSection(r: CpuReport, chart: string = SECTIONS.cpu.chart): string {
  const notes = [
    r.kilnMode !== 'compiled' ? `kiln ran **${r.kilnMode}** (not compiled)` : '',
    r.sizes !== 'full' ? `**${r.sizes}** sizes` : '',
    r.ortPrepack ? '' : 'onnxruntime without weight pre-packing',
  ].filter(Boolean);
  const rows = r.results.map((m) => [
    m.model,
    sizeLabel(m.model, m.config),
    ms(m.kiln.median),
    ms(m.ort.median),
    `**${fixed(m.ratio, 2)}×**`,
    `${fixed(m.ratioMin, 2)}×`,
    `${gflops(m.kiln.gflops)} / ${gflops(m.ort.gflops)}`,
    `${m.relErr.toExponential(1)}${m.agree ? '' : ' (disagree)'}`,
  ]);
  return [
    `Measured ${date(r.date)} on ${r.cpu} (${r.cores} cores${simdList(r.simd)}), **${r.threads} thread${r.threads === 1 ? '' : 's'}** for both engines;`,
    `kiln ${r.versions.kiln}, onnxruntime-node ${r.versions.onnxruntime}, Node ${r.versions.node}. Median of ${r.iters} interleaved iterations after ${r.warmup} warm-up,`,
    `from the call until the output is in a JS typed array${load(r.loadAverage1m)}.${notes.length ? ` Note: ${notes.join(', ')}.` : ''}`,
    `Target: kiln ÷ onnxruntime ≤ 1.00.`,
    '',
    `![CPU latency per call, kiln vs onnxruntime-node, per model](${chart})`,
    '',
    table(['model', 'sizes', 'kiln ms', 'onnxruntime ms', 'kiln ÷ ort (median)', 'kiln ÷ ort (fastest)', 'GFLOP/s kiln / ort', 'max rel. error'], rows),
  ].join('\n');
}

/** The generated body of the startup section (markdown). */
export function startupSection(r: StartupReport, chart: string = SECTIONS.startup.chart): string {
  // Files since the breakdown was refined time the weights file and kiln.tensor apart from the first call.
  const fine = r.results.every((m) => m.warm.checkpointMs !== undefined && m.warm.tensorsMs !== undefined);
  const rows = r.results.map((m) => [
    m.model,
    sizeLabel(m.model, m.config),
    fmtMs(m.cold.firstMs),
    fmtMs(m.warm.firstMs),
    `**${fixed(m.ratio, 3)}**`,
    `${ms(m.warm.importMs)} ms`,
    ...(fine ? [`${ms(m.warm.checkpointMs ?? NaN)} ms`, `${ms(m.warm.tensorsMs ?? NaN)} ms`] : []),
    `${ms(m.warm.loadMs)} ms`,
    ...(fine ? [`${ms(m.warm.callMs)} ms`] : []),
    `${ms(m.cold.steadyMs)} / ${ms(m.warm.steadyMs)}`,
    m.warmFromBundle ? 'bundle, 0 compiles' : '**not a bundle**',
  ]);
  const head = [
    'model',
    'sizes',
    'cold: first result',
    'warm: first result',
    'warm ÷ cold',
    'warm: Node + kiln import',
    ...(fine ? ['warm: weights file', 'warm: kiln.tensor'] : []),
    'warm: bundle load',
    ...(fine ? ['warm: first call'] : []),
    'ms per call cold / warm',
    'warm start from',
  ];
  const n = r.nodeStart;
  const nodeLine = n
    ? [
        `Bare Node start (\`node -e\`, the children's environment, median of ${n.samples}): ${ms(n.bareMs)} ms` +
          (n.withCaCertsMs !== undefined ? `; ${ms(n.withCaCertsMs)} ms with this machine's NODE_EXTRA_CA_CERTS` : '') +
          (n.dropped.length ? `. The children ran without ${n.dropped.join(', ')} (\`--keep-ca-certs\` keeps it).` : '.'),
      ]
    : [];
  return [
    `Measured ${date(r.date)} on ${r.cpu} (${r.cores} cores${simdList(r.simd)}), ${r.threads} kernel thread${r.threads === 1 ? '' : 's'};`,
    `kiln ${r.versions?.kiln ?? '(version not recorded)'}, Node ${r.versions?.node ?? r.node}. Fresh processes, ${r.reps} cold/warm pair${r.reps === 1 ? '' : 's'} per model (medians),`,
    `from spawn to the first result read back${load(r.loadAverage1m)}. Target: warm ÷ cold ≤ 0.05.`,
    ...nodeLine,
    '',
    `![Cold vs warm start per model](${chart})`,
    '',
    table(head, rows),
  ].join('\n');
}

/**
 * `doc` with the text between `name`'s markers replaced by `body`. A section that is not
 * there is appended (heading, markers, body); other text is untouched. Markers out of order
 * or present more than once are an error rather than a guess.
 */
export function replaceSection(doc: string, name: string, body: string, heading: string = name): string {
  const { start, end } = markers(name);
  const count = (s: string) => doc.split(s).length - 1;
  const [ns, ne] = [count(start), count(end)];
  if (ns === 0 && ne === 0) {
    const sep = doc === '' ? '' : doc.endsWith('\n\n') ? '' : doc.endsWith('\n') ? '\n' : '\n\n';
    return `${doc}${sep}## ${heading}\n\n${start}\n${body}\n${end}\n`;
  }
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  if (ns !== 1 || ne !== 1 || j < i) throw new Error(`the ${start} … ${end} markers must appear once each, in that order`);
  return `${doc.slice(0, i + start.length)}\n${body}\n${doc.slice(j)}`;
}

export interface ReportInput {
  /** The current markdown file, or undefined when it does not exist yet. */
  doc: string | undefined;
  cpu?: CpuReport;
  startup?: StartupReport;
}

/** The new markdown and the chart files (paths relative to the markdown file's folder). */
export function renderReport(input: ReportInput): { doc: string; files: Record<string, string> } {
  let doc = input.doc ?? INTRO;
  const files: Record<string, string> = {};
  if (input.cpu) {
    doc = replaceSection(doc, 'cpu', cpuSection(input.cpu), SECTIONS.cpu.heading);
    files[SECTIONS.cpu.chart] = latencyChart(input.cpu.results, cpuMachine(input.cpu));
  }
  if (input.startup) {
    doc = replaceSection(doc, 'startup', startupSection(input.startup), SECTIONS.startup.heading);
    files[SECTIONS.startup.chart] = startupChart(input.startup.results, startupMachine(input.startup));
  }
  return { doc, files };
}

export interface WriteReportOptions {
  /** Default bench-results/cpu.json and bench-results/startup.json; a file that does not exist is skipped. */
  cpuJson?: string;
  startupJson?: string;
  /** Default docs/BENCHMARKS.md; the charts go to img/ beside it. */
  doc?: string;
}

function readJson<T extends { benchmark: string }>(file: string, kind: string): T | undefined {
  if (!fs.existsSync(file)) return undefined;
  const data = JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  if (data.benchmark !== kind) throw new Error(`${file} holds '${data.benchmark}' results, not '${kind}'`);
  return data;
}

/** Regenerates the report from the JSON files; returns the paths it wrote. */
export function writeReport(opts: WriteReportOptions = {}): string[] {
  const docPath = opts.doc ?? path.join('docs', 'BENCHMARKS.md');
  const cpu = readJson<CpuReport>(opts.cpuJson ?? path.join('bench-results', 'cpu.json'), 'cpu');
  const startup = readJson<StartupReport>(opts.startupJson ?? path.join('bench-results', 'startup.json'), 'startup');
  if (!cpu && !startup) throw new Error('no results to report: run `kiln bench` or `kiln bench startup` first (bench-results/*.json)');
  const { doc, files } = renderReport({ doc: fs.existsSync(docPath) ? fs.readFileSync(docPath, 'utf8') : undefined, cpu, startup });
  const written: string[] = [];
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(path.dirname(docPath), rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    written.push(p);
  }
  fs.writeFileSync(docPath, doc);
  return [docPath, ...written];
}

export const REPORT_USAGE = `kiln bench report [--doc PATH] [--cpu-json PATH] [--startup-json PATH]

Rewrites the generated sections of the benchmark report (docs/BENCHMARKS.md, between its
<!-- bench:cpu:… --> and <!-- bench:startup:… --> markers) and its SVG charts (docs/img/)
from the benchmarks' JSON results, without running a benchmark. Text outside the markers
is kept.

  --doc PATH            the markdown file (default docs/BENCHMARKS.md; charts go to img/ beside it)
  --cpu-json PATH       kiln bench results (default bench-results/cpu.json)
  --startup-json PATH   kiln bench startup results (default bench-results/startup.json)`;

/** `kiln bench report`: resolves to the exit code. */
export function reportCommand(argv: string[]): number {
  const opts = parseCommandLine(argv, 'kiln bench report', REPORT_USAGE, parseReportArgs);
  if (typeof opts === 'number') return opts; // --help, or a usage error
  for (const p of writeReport(opts)) console.log(`wrote ${p}`);
  return 0;
}

function parseReportArgs(argv: string[]): WriteReportOptions {
  const opts: WriteReportOptions = {};
  const flags: Record<string, keyof WriteReportOptions> = { '--doc': 'doc', '--cpu-json': 'cpuJson', '--startup-json': 'startupJson' };
  for (let i = 0; i < argv.length; i++) {
    const key = flags[argv[i]];
    if (!key) throw new UsageError(`unknown option '${argv[i]}'`);
    if (argv[i + 1] === undefined) throw new UsageError(`${argv[i]} needs a path`);
    opts[key] = argv[++i];
  }
  return opts;
}
