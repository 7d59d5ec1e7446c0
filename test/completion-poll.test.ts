/**
 * KILN_CUDA_POLL_US, the JS-thread poll of a short CUDA run (native/completion.h): how the
 * addon reads it, as info() reports it. The poll itself needs a GPU
 * (scripts/gpu-check/60-overhead.cjs measures it on and off).
 */
import { ENV_VARS } from '../lib/util/env';
import { runInChild } from './fixtures/native/run';

describe('KILN_CUDA_POLL_US', () => {
  it('is registered, and does not affect compiled code', () => {
    expect(ENV_VARS.find((v) => v.name === 'KILN_CUDA_POLL_US')).toMatchObject({ affectsCode: false });
  });

  it('is read by the addon: microseconds 0..10000, else the default of 50', () => {
    // One child: the main thread's process.env writes through to the C environment.
    const values = ['', '0', '20', '10000', '10001', '-1', '12us', 'off'];
    const got = runInChild(`
      const raw = native.addon();
      const out = { unset: (delete process.env.KILN_CUDA_POLL_US, raw.info().completionPollUs) };
      for (const v of ${JSON.stringify(values)}) {
        process.env.KILN_CUDA_POLL_US = v;
        out[v] = raw.info().completionPollUs;
      }
      return out;`);
    expect(got).toEqual({ unset: 50, '': 50, '0': 0, '20': 20, '10000': 10000, '10001': 50, '-1': 50, '12us': 50, off: 50 });
  });
});
