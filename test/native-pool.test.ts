/**
 * The caching device allocator's logic (native/pool.h), compiled with the system C++
 * compiler against a host backend with a byte budget: size classes, reuse, best fit, trim,
 * and out-of-memory recovery (trim and retry once, then a report; the pool stays usable).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const cases = [
  'size classes',
  'reuse after free',
  'best fit within 25%',
  'trim releases the cache',
  'OOM trims and retries',
  'OOM reports and stays usable',
];

describe('native/pool.h (caching allocator)', () => {
  let lines: string[] = [];
  beforeAll(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pool-'));
    const exe = path.join(dir, 'pool_test');
    const src = path.join(__dirname, 'fixtures', 'native', 'pool_test.cc');
    execFileSync(process.env.CXX || 'g++', ['-std=c++17', '-O1', '-Wall', '-Wextra', '-Werror', '-o', exe, src]);
    const r = spawnSync(exe, { encoding: 'utf8' });
    lines = r.stdout.trim().split('\n');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each(cases)('%s', (name) => {
    const line = lines.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name}: `));
    expect(line).toBe(`PASS ${name}`);
  });
});
