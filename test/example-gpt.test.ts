/**
 * The example GPT (examples/gpt.js) end to end on the CPU: weights from its .safetensors
 * file, one kiln.compile with a dynamic sequence dim, logits equal to eager execution
 * (kiln's interpreter) at two sequence lengths, and greedy generation that spells out the
 * message its weights were built to hold. The example requires 'kiln'; here that is the
 * TypeScript source, so the test needs no build.
 */
import * as kiln from '../lib';
import { counters } from '../lib/api/compile';

jest.doMock('kiln', () => kiln, { virtual: true });

interface Model {
  cfg: { vocab: string; nLayer: number; nHead: number; nEmbd: number; blockSize: number };
  weights: kiln.Tensor[];
  forward: (...args: kiln.Tensor[]) => kiln.Tensor;
}
interface Example {
  loadGpt(): Promise<Model>;
  compileOptions(cfg: Model['cfg']): kiln.CompileOptions;
  encode(cfg: Model['cfg'], text: string): { ids: kiln.Tensor; pos: kiln.Tensor };
  generate(f: (...args: kiln.Tensor[]) => unknown, model: Model, prompt: string, maxNew: number): Promise<string>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS example, loaded after the mock
const gpt = require('../examples/gpt.js') as Example;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { MESSAGE } = require('../scripts/make-weights.cjs') as { MESSAGE: string };

/** max |got - want| / max |want|. */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let err = 0;
  let mag = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return err / mag;
}

test('compiled logits match eager at two sequence lengths from one compile; greedy text is the message', async () => {
  const model = await gpt.loadGpt();
  const { cfg, weights, forward } = model;
  const f = kiln.compile(forward, gpt.compileOptions(cfg));
  const before = counters();

  for (const text of [MESSAGE.slice(0, 5), MESSAGE.slice(0, 23)]) {
    const { ids, pos } = gpt.encode(cfg, text);
    const got = (await f(ids, pos, ...weights)) as kiln.Tensor;
    const want = forward(ids, pos, ...weights);
    expect(got.shape).toEqual([1, text.length, cfg.vocab.length]);
    expect(want.shape).toEqual(got.shape);
    expect(relErr(await got.toArray(), await want.toArray())).toBeLessThan(1e-4);
  }
  expect(f.stats?.source).toBe('memory');

  // Greedy decoding on ever longer sequences, all through the same program.
  const text = await gpt.generate(f, model, 'kiln', 12);
  expect(text).toBe(MESSAGE.slice(0, 16));
  expect(counters().traces - before.traces).toBe(1);
  expect(counters().compiles - before.compiles).toBe(1);
});
