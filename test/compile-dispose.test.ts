/**
 * `dispose()` of a compiled function on the CPU: later calls are refused, calls in flight
 * finish, and the process forgets the program once no compiled function holds it (the next
 * one of the same key loads the bundle instead of sharing it from memory).
 */
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import * as kiln from '../lib';
import { compile, counters } from '../lib/api/compile';

const dir = mkdtempSync(join(tmpdir(), 'kiln-dispose-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const fn = (x: kiln.Tensor) => x.mul(3).add(1).relu();
const opts = { name: 'dispose-me', device: 'cpu' as const, cache: 'auto' as const, cacheDir: dir };
const x = kiln.tensor([-2, 0, 1, 2], [4]);
const want = [0, 1, 4, 7];

test('a disposed function refuses calls; the program is shared until its last holder disposes', async () => {
  const f = compile(fn, opts);
  expect(await (await f(x)).toArray()).toEqual(new Float32Array(want));
  expect(f.stats?.source).toBe('compiled');
  const g = compile(fn, opts);
  await g(x);
  expect(g.stats?.source).toBe('memory');

  f.dispose();
  f.dispose(); // idempotent
  await expect(f(x)).rejects.toMatchObject({ code: 'KILN_DISPOSED', message: expect.stringMatching(/dispose-me: this compiled function was disposed/) });
  expect(await (await g(x)).toArray()).toEqual(new Float32Array(want)); // g still holds the program
  const h = compile(fn, opts);
  await h(x);
  expect(h.stats?.source).toBe('memory');

  g.dispose();
  h[Symbol.dispose]();
  const before = counters();
  const k = compile(fn, opts);
  expect(await (await k(x)).toArray()).toEqual(new Float32Array(want));
  expect(k.stats?.source).toBe('bundle'); // forgotten by the process, loaded again
  expect(counters()).toEqual(before);
  k.dispose();
});

test('calls in flight when it is disposed finish with their results', async () => {
  const f = compile(fn, opts);
  const first = f(x); // still loading the program
  f.dispose();
  expect(await (await first).toArray()).toEqual(new Float32Array(want));
  await expect(f(x)).rejects.toMatchObject({ code: 'KILN_DISPOSED' });
  const g = compile(fn, opts);
  await g(x);
  expect(g.stats?.source).toBe('bundle'); // f gave its program back once its call finished
  g.dispose();
});
