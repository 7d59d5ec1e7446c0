/**
 * NVRTC compiles of every kernel the CUDA renderer generates for the shared case list
 * (every op program of the C++ codegen tests, awkward sizes, dynamic dims, and an MLP and a
 * GPT block in float32/float16/bfloat16) for sm_80 and sm_90: each must compile with zero
 * register spills (ptxas's report; a stack frame alone is allowed: sinf/cosf keep their
 * slow-path reduction there). One NVRTC program per case group, compiled in parallel. The
 * autotuner's other candidate configurations are compiled for the composite programs and
 * a few row kernels. Skipped without NVRTC unless KILN_REQUIRE_NVRTC=1.
 */
import { splitOf } from '../lib/passes/gpu';
import { addonInfo } from '../lib/runtime/native';
import { compileUnit, cudaCases, lowerCase, renderUnit, type CudaCase } from './cuda-harness';

const info = addonInfo();
const required = process.env.KILN_REQUIRE_NVRTC === '1';
const nvrtcIt = info.nvrtc.available || required ? it : it.skip;
if (!info.nvrtc.available && !required) console.warn(`CUDA codegen compile tests skipped: ${info.nvrtc.reason}`);

/** Compiles groups of cases for `arch`; returns problems (spills, missing kernels) and a summary. */
async function compileGroups(groups: [string, CudaCase[]][], arch: number, candidates: boolean): Promise<{ problems: string[]; summary: string }> {
  const units = groups.map(([group, cs]) => ({ group, ...renderUnit(cs.map(lowerCase), { arch }, candidates) }));
  const compiled = await Promise.all(units.map((u) => compileUnit(u.source, `${u.group}.cu`, `sm_${arch}`)));
  const problems: string[] = [];
  let kernels = 0;
  let maxRegs = 0;
  units.forEach((u, i) => {
    for (const v of u.variants) {
      // A two-level configuration (split reduction, split-K matmul) is two kernels: `<name>__part` and `<name>`.
      for (const name of splitOf(v.config) ? [`${v.name}__part`, v.name] : [v.name]) {
        const f = compiled[i].info[name];
        kernels++;
        if (!f) problems.push(`${v.caseName}/${name}: missing from ptxas's report`);
        else {
          maxRegs = Math.max(maxRegs, f.registers);
          if (f.spillStores || f.spillLoads) problems.push(`${v.caseName}/${name} ${JSON.stringify(v.config)}: ${f.spillStores}B spill stores, ${f.spillLoads}B spill loads`);
        }
      }
    }
  });
  const times = compiled.map((c, i) => `${units[i].group} ${Math.round(c.ms)} ms`).join(', ');
  return { problems, summary: `sm_${arch}: ${kernels} kernels, at most ${maxRegs} registers; ${times}` };
}

describe('CUDA kernels compile with NVRTC without spills', () => {
  const groups = Object.entries(cudaCases());
  for (const arch of [80, 90]) {
    nvrtcIt(`sm_${arch}: every kernel of every case`, async () => {
      const { problems, summary } = await compileGroups(groups, arch, false);
      console.log(summary);
      expect(problems).toEqual([]);
    }, 300_000);
  }

  nvrtcIt('sm_90: every autotuner candidate of the composite programs and wide rows', async () => {
    const all = cudaCases();
    const pick = (names: string[]): CudaCase[] => Object.values(all).flat().filter((c) => names.includes(c.name));
    const subset: [string, CudaCase[]][] = [
      ['tune-f16', pick(['gpt-block-float16'])],
      ['tune-f32', pick(['mlp-float32', 'softmax-wide', 'layerNorm-row-in-shared', 'sum-axis0'])],
      ['tune-splitk', pick(['splitk-f16-bias-gelu', 'splitk-bf16-bias-residual', 'splitk-dyn-rows'])],
    ];
    const { problems, summary } = await compileGroups(subset, 90, true);
    console.log(summary);
    expect(problems).toEqual([]);
  }, 300_000);
});
