/**
 * What a warm start loads, checked in fresh processes on dist/ (`npm run build:ts` first):
 * the native binding needs no child_process (only NVRTC discovery spawns python3), and the
 * startup benchmark's app (lib/bench/startup-child.ts) loads none of the benchmark driver
 * (its spawn, report writer, ONNX builder), so `kiln bench startup` charges a warm start
 * only for Node, kiln and the app's own work.
 */
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import { join } from 'path';

const dist = join(__dirname, '..', 'dist');

/** Requires `modules` in a fresh Node and returns the built-in modules and dist/ files it loaded. */
function loadedBy(modules: string[]): { builtins: string[]; files: string[] } {
  if (!existsSync(join(dist, 'index.js'))) throw new Error('dist/ is missing: run `npm run build:ts` (npm test does)');
  const script = `
    for (const m of ${JSON.stringify(modules)}) require(m);
    const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
    console.log(JSON.stringify({ builtins, files: Object.keys(require.cache) }));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) throw new Error(r.stderr);
  const out = JSON.parse(r.stdout) as { builtins: string[]; files: string[] };
  return { builtins: out.builtins, files: out.files.map((f) => f.slice(dist.length + 1)).filter((f) => !f.startsWith('.')) };
}

test('the native binding loads without child_process', () => {
  const { builtins } = loadedBy([join(dist, 'runtime', 'native.js')]);
  expect(builtins).not.toContain('child_process');
});

test("the startup benchmark's app loads kiln and the models, none of the benchmark driver", () => {
  const { files } = loadedBy([join(dist, 'bench', 'startup-child.js'), join(dist, 'bench', 'models.js')]);
  expect(files).toContain('index.js');
  expect(files.filter((f) => f.startsWith('bench/')).sort()).toEqual(['bench/models.js', 'bench/startup-child.js']);
  expect(files.filter((f) => f.startsWith('cli/'))).toEqual([]);
});

test('importing kiln loads no child_process (only compiling or finding NVRTC spawns) and no fs/promises', () => {
  const { builtins } = loadedBy([join(dist, 'index.js')]);
  expect(builtins).not.toContain('child_process');
  expect(builtins).not.toContain('fs/promises');
});
