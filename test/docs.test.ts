/**
 * The documentation cannot drift from the code:
 * - docs/API.md is what `npm run docs:api` generates now from dist/index.d.ts (built by
 *   `npm test`), and names every export of lib/index.ts, values and types;
 * - README's environment table lists exactly the variables of lib/util/env.ts's registry,
 *   each with the right "in the bundle key" answer;
 * - `kiln --help` and every subcommand's `--help` say what the command does.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as kiln from '../lib/index';
import { main } from '../lib/cli/main';
import { ENV_VARS } from '../lib/util/env';

const root = path.join(__dirname, '..');
const read = (rel: string) => fs.readFileSync(path.join(root, rel), 'utf8');

describe('docs/API.md', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS script
  const { generateApiDoc } = require('../scripts/api-docs.cjs') as { generateApiDoc(): string };
  const committed = read('docs/API.md');

  test('is up to date with the type declarations (npm run docs:api regenerates it)', () => {
    const fresh = generateApiDoc();
    if (fresh !== committed) {
      const a = committed.split('\n');
      const b = fresh.split('\n');
      const at = a.findIndex((line, i) => line !== b[i]);
      throw new Error(`docs/API.md is out of date: run \`npm run docs:api\` and commit it.\nFirst difference, line ${at + 1}:\n  committed: ${a[at]}\n  generated: ${b[at]}`);
    }
  }, 60000);

  test('names every export of lib/index.ts, values and types', () => {
    // Values at run time; type-only names from the entry's export declarations.
    const names = new Set(Object.keys(kiln));
    const sf = ts.createSourceFile('index.ts', read('lib/index.ts'), ts.ScriptTarget.ES2022, true);
    for (const stmt of sf.statements) {
      if (!ts.isExportDeclaration(stmt) || !stmt.exportClause || !ts.isNamedExports(stmt.exportClause)) continue;
      for (const el of stmt.exportClause.elements) names.add(el.name.text);
    }
    expect(names.size).toBeGreaterThan(60);
    const contents = committed.slice(committed.indexOf('## Contents'), committed.indexOf('\n## ', committed.indexOf('## Contents') + 1));
    const missing = [...names].filter((n) => !contents.includes(`\`${n}\``));
    expect(missing).toEqual([]);
    // Each documented symbol has its section (op functions share one signature block).
    for (const n of ['compile', 'build', 'tensor', 'Tensor', 'CompileOptions', 'CompileStats', 'KilnError', 'CacheError', 'DType', 'Safetensors']) {
      expect(committed).toContain(`\n### ${n}\n`);
    }
    expect(committed).toContain('kiln.matmul(a: Tensor, b: Tensor): Tensor');
  });
});

describe('README environment table', () => {
  /** The table under "## Environment variables": each row's variable names and its key column. */
  function readmeVars(): Map<string, string> {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('## Environment variables'), readme.indexOf('\n## ', readme.indexOf('## Environment variables') + 1));
    const vars = new Map<string, string>();
    for (const row of section.split('\n').filter((l) => l.startsWith('| `'))) {
      const cells = row.split(/(?<!\\)\|/).map((c) => c.trim());
      for (const m of cells[1].matchAll(/`([A-Z_][A-Z0-9_]*)`/g)) vars.set(m[1], cells[cells.length - 2]);
    }
    return vars;
  }

  test('lists every variable of the registry, and nothing else', () => {
    const documented = readmeVars();
    expect([...documented.keys()].sort()).toEqual(ENV_VARS.map((v) => v.name).sort());
  });

  test('says which variables are part of the bundle key, as the registry does', () => {
    const documented = readmeVars();
    for (const v of ENV_VARS) expect([v.name, documented.get(v.name)]).toEqual([v.name, v.keyedFor ? `${v.keyedFor} only` : v.affectsCode ? 'yes' : 'no']);
  });
});

describe("docs/API.md's errors and warnings", () => {
  const api = read('docs/API.md');
  const section = api.slice(api.indexOf('\n## Errors'));
  /** Each error class of the section and the codes listed under it. */
  const listed = new Map<string, string[]>();
  for (const part of section.split('\n### ').slice(1)) {
    const name = part.slice(0, part.indexOf('\n'));
    listed.set(name, [.../^Codes: (.*)\.$/m.exec(part)?.[1].matchAll(/`(KILN_[A-Z0-9_]+)`/g) ?? []].map((m) => m[1]));
  }
  const listedUnder = (code: string) => [...listed].filter(([, codes]) => codes.includes(code)).map(([name]) => name);

  test('names every code in lib/ and native/ (found here apart from the generator: every quoted KILN_ code)', () => {
    // Quoted KILN_ names that are no codes: the registry's variables, translateNativeError's
    // prefixes, and a macro parameter of the generated CUDA.
    const notCodes = new Set([...ENV_VARS.map((v) => v.name), 'KILN_CUDA', 'KILN_NVRTC', 'KILN_D']);
    const files = (dir: string, ext: RegExp): string[] =>
      fs.readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' }).filter((f) => ext.test(f)).map((f) => path.join(dir, f));
    const where = new Map<string, string>();
    for (const f of [...files('lib', /\.ts$/), ...files('native', /\.(cc|h)$/)]) {
      const text = fs.readFileSync(path.join(root, f), 'utf8').replace(/\/\*[^]*?\*\//g, '').replace(/\/\/.*$/gm, '');
      for (const m of text.matchAll(/(['"])(KILN_[A-Z0-9_]+)\1/g)) if (!notCodes.has(m[2])) where.set(m[2], f);
    }
    expect(where.size).toBeGreaterThan(60); // the scan finds them
    const documented = new Set(section.match(/KILN_[A-Z0-9_]+/g));
    expect([...where].filter(([code]) => !documented.has(code)).map(([code, f]) => `${code} (${f})`)).toEqual([]);
  });

  test('lists each code under the class it is thrown as', () => {
    expect(listedUnder('KILN_NVRTC_UNAVAILABLE')).toEqual(['NvrtcError']); // kiln.build for sm_XY without NVRTC
    for (const code of ['KILN_NVRTC_BAD_PATH', 'KILN_NVRTC_COMPILE']) expect(listedUnder(code)).toEqual(['NvrtcError']);
    for (const code of ['KILN_DIM_OUT_OF_RANGE', 'KILN_DTYPE']) expect(listedUnder(code)).toContain('ShapeError'); // x.sum(5); where() with a float condition
    expect(listedUnder('KILN_NESTED_COMPILE')).toEqual(['TraceError']);
    expect(listedUnder('KILN_FILE_READ')).toEqual(['FileError']);
    expect(listedUnder('KILN_BAD_ENV')).toEqual(['ArgumentError']);
    // One class per code: a caller's `catch` by class and by code agree.
    const codes = [...listed.values()].flat();
    expect(codes.filter((c) => listedUnder(c).length > 1).map((c) => `${c}: ${listedUnder(c).join(', ')}`)).toEqual([]);
  });

  test("lists the native addon's codes under the class lib/ translates them to", () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- lazy: the addon's loader
    const { translateNativeError } = require('../lib/runtime/native') as typeof import('../lib/runtime/native');
    for (const code of ['KILN_CUDA_OOM', 'KILN_CUDA_ERROR', 'KILN_CUDA_UNAVAILABLE', 'KILN_CUDA_LAUNCH_CONFIG', 'KILN_CUDA_ABI', 'KILN_NVRTC_ERROR', 'KILN_ARGUMENT', 'KILN_DLOPEN', 'KILN_NATIVE']) {
      const e = translateNativeError({ code, message: 'm' });
      const classes = listedUnder(code);
      expect([code, classes.length > 0 && classes.every((c) => e instanceof (kiln as unknown as Record<string, new () => unknown>)[c])]).toEqual([code, true]);
    }
    expect(listedUnder('KILN_DLOPEN')).toEqual(['KilnError']);
  });

  test('says what each warning means (KILN_PTX_JIT among them)', () => {
    const warnings = section.slice(section.indexOf('### Warnings'));
    for (const code of ['KILN_PTX_JIT', 'KILN_BUNDLE_LOAD', 'KILN_CACHE_WRITE', 'KILN_CUDA_SPILL']) expect(warnings).toMatch(new RegExp(`^\\| \`${code}\` \\| \\w.{20,}`, 'm'));
  });
});

describe('the environment registry', () => {
  test('every variable kiln reads by name, in lib/ and native/, is registered', () => {
    // Others' variables: the system's PATH, Node's CA certificates (the startup benchmark's
    // children drop them), libgomp's own (the addon leaves them alone when the user set them).
    const foreign = new Set(['PATH', 'NODE_EXTRA_CA_CERTS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT']);
    const files = (dir: string, ext: RegExp): string[] =>
      fs.readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' }).filter((f) => ext.test(f)).map((f) => path.join(dir, f));
    const read = new Map<string, string>();
    for (const f of [...files('lib', /\.ts$/), ...files('native', /\.(cc|h)$/)]) {
      const text = fs.readFileSync(path.join(root, f), 'utf8');
      const pattern = f.startsWith('lib') ? /\benv(?:\.([A-Z][A-Z0-9_]*)\b|\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\])/g : /getenv\("()()([A-Z][A-Z0-9_]*)"\)/g;
      for (const m of text.matchAll(pattern)) read.set(m[1] || m[2] || m[3], f);
    }
    expect([read.has('KILN_CPU_THREADS'), read.has('KILN_NVRTC_JOBS')]).toEqual([true, true]); // the scan sees both kinds of read
    const registered = new Set(ENV_VARS.map((v) => v.name));
    const stray = [...read].filter(([name]) => !registered.has(name) && !foreign.has(name)).map(([name, f]) => `${name} (${f})`);
    expect(stray).toEqual([]);
  });
});

describe('kiln --help and each command help', () => {
  async function help(argv: string[]): Promise<{ code: number; out: string }> {
    const lines: string[] = [];
    const log = jest.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    const err = jest.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      return { code: await main(argv), out: lines.join('\n') };
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
  }

  test('kiln --help lists every command with what it does, and every environment variable', async () => {
    const { code, out } = await help(['--help']);
    expect(code).toBe(0);
    for (const [cmd, does] of [
      ['doctor', /show what kiln found/],
      ['build', /build bundles ahead of time/],
      ['bench', /benchmarks: kiln vs onnxruntime-node on the CPU.*cold vs warm start.*BENCHMARKS\.md/],
      ['cache', /list, show, verify, prune and clear compiled bundles/],
    ] as const) {
      expect(out).toMatch(new RegExp(`^  ${cmd} +${does.source}`, 'm'));
    }
    for (const v of ENV_VARS) expect(out).toMatch(new RegExp(`^  ${v.name} +\\S`, 'm'));
  });

  // Each: the argv, a sentence that says what the command does, and an option it documents.
  test.each([
    [['doctor', '--help'], /show what kiln found \(addon, CUDA driver, GPUs, NVRTC, C\+\+ compiler, cache\) and the backend it would use/, '--json'],
    [['build', '--help'], /build bundles ahead of time from a module of function specs/, '--target'],
    [['bench', '--help'], /Times kiln's CPU backend against onnxruntime-node on the same models/, '--models'],
    [['bench', 'startup', '--help'], /Times fresh processes from start to the first result of a compiled model: cold/, '--reps'],
    [['bench', 'report', '--help'], /Rewrites the generated sections of the benchmark report/, '--doc'],
    [['cache', '--help'], /list, show, verify, prune and clear compiled bundles|ls +list bundles/, '--cache-dir'],
    [['cache', 'ls', '--help'], /Lists cached and shipped bundles/, '--json'],
    [['cache', 'show', '--help'], /Explains one bundle's manifest/, '--json'],
    [['cache', 'verify', '--help'], /Re-checks every artifact checksum/, '--no-sources'],
    [['cache', 'prune', '--help'], /Evicts least-recently-used bundles/, '--max-bytes'],
    [['cache', 'clear', '--help'], /Removes every bundle from the cache/, '--yes'],
  ])('kiln %j', async (argv, does, option) => {
    const { code, out } = await help(argv);
    expect(code).toBe(0);
    expect(out).toMatch(does);
    expect(out).toContain(option);
    expect(out).toContain(`kiln ${argv.slice(0, -1).join(' ')}`);
  });
});
