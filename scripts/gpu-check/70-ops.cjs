/**
 * The CUDA backend against the reference interpreter on the GPU: every program of the
 * shared case list (cases.cjs: every op, views, awkward sizes, dynamic dims at several
 * sizes, an MLP and a GPT block in float32/float16/bfloat16) is built for the device
 * (NVRTC, heuristic configurations), run step by step on buffers whose outputs and temps are
 * poisoned with NaN bytes, and run again through the engine's loaded program (CudaProgram:
 * arena, fresh outputs, CUDA graphs) — both compared with the interpreter on random inputs.
 * Then one program's every autotuner candidate is checked the same way, and every split-K
 * candidate of the split-K cases.
 *
 * KILN_GPU_CHECK_DRY=1 runs it without a GPU: builds everything for sm_90 and checks the
 * ptxas reports only.
 */
'use strict';
const run = require('./cuda-run.cjs');
const shared = require('./cases.cjs');

module.exports = {
  name: 'cuda-ops',
  needs: run.DRY ? undefined : 'nvrtc',
  async run(ctx) {
    const k = run.kiln();
    const groups = shared.cases({ F: k.F, tensor: k.tensor });
    let kernels = 0;
    let maxRegs = 0;
    for (const [group, cs] of Object.entries(groups)) {
      const built = await Promise.all(cs.map((c) => run.build(k, ctx, c).catch((error) => ({ error }))));
      for (const [i, c] of cs.entries()) {
        await ctx.check(`${group}/${c.name}`, async () => {
          const got = built[i];
          if (got.error) throw got.error;
          const { graph, build: b } = got;
          const res = Object.entries(b.resources);
          kernels += res.length;
          maxRegs = Math.max(maxRegs, ...res.map(([, r]) => r.registers));
          const spills = res.filter(([, r]) => r.spillStores || r.spillLoads).map(([n]) => n);
          if (spills.length) throw new Error(`spills in ${spills.join(', ')}`);
          if (run.DRY) return `built ${res.length} kernels (dry run)`;
          const runs = c.runs || [c.specs.map((s) => [...s.shape])];
          const pgraph = b.program.graph;
          for (const shapes of runs) {
            const inputs = run.makeInputs(k, shared, c, graph, shapes);
            const outs = await run.runPlan(k, ctx, pgraph, b, inputs);
            const errors = run.compare(k, c, graph, b.plan, inputs, outs, `[${shapes.join('|')}] plan`);
            if (errors.length) throw new Error(errors.join('; '));
          }
          // The engine's path: a loaded program, its arena and output allocation, graphs on.
          const program = await k.engine.loadCudaProgram({ image: b.image, graph: pgraph, plan: b.plan, device: ctx.device.index });
          try {
            for (const shapes of [...runs, runs[0]]) {
              const inputs = run.makeInputs(k, shared, c, graph, shapes);
              const outs = await program.execute(inputs);
              const errors = run.compare(k, c, graph, b.plan, inputs, outs.map((o) => o.data), `[${shapes.join('|')}] program`);
              if (errors.length) throw new Error(errors.join('; '));
            }
          } finally {
            program.cuda.program.dispose();
          }
          return `${runs.length} run${runs.length > 1 ? 's' : ''}, ${res.length} kernels, <= ${Math.max(...res.map(([, r]) => r.registers))} regs`;
        });
      }
    }
    ctx.metric('kernels built', kernels, '');
    ctx.metric('most registers in a kernel', maxRegs, 'regs');

    // Every candidate configuration the autotuner may choose, for the f16 GPT block.
    const c = groups.composites.find((x) => x.name === 'gpt-block-float16');
    const graph = k.trace(c.fn, c.specs, { dynamic: c.dynamic || {} });
    const program = k.lower(graph);
    const facts = run.factsOf(ctx);
    const gpu = require('node:path').join(__dirname, '..', '..', 'dist', 'passes', 'gpu.js');
    const { candidateConfigs } = require(gpu);
    const variants = Math.max(...program.kernels.map((kk) => candidateConfigs(kk, facts).length));
    for (let v = 1; v < variants; v++) {
      await ctx.check(`candidates/gpt-block-float16 #${v}`, async () => {
        const tuning = Object.fromEntries(program.kernels.map((kk) => {
          const cands = candidateConfigs(kk, facts);
          return [kk.name, cands[Math.min(v, cands.length - 1)]];
        }));
        const { build: b } = await run.build(k, ctx, c, { tuning, program });
        const spills = Object.entries(b.resources).filter(([, r]) => r.spillStores || r.spillLoads);
        if (spills.length) throw new Error(`spills in ${spills.map(([n]) => n).join(', ')}`);
        if (run.DRY) return 'built (dry run)';
        const shapes = c.specs.map((s) => [...s.shape]);
        const inputs = run.makeInputs(k, shared, c, graph, shapes);
        const outs = await run.runPlan(k, ctx, b.program.graph, b, inputs);
        const errors = run.compare(k, c, graph, b.plan, inputs, outs, `candidate ${v}`);
        if (errors.length) throw new Error(errors.join('; '));
        return Object.values(b.tuning).map((t) => t.kind[0] + (t.block || t.bm)).join(' ');
      });
    }

    // Split-K: every split candidate of the split-K cases (tiles, part counts, a 4-stage ring;
    // the dynamic-rows case is split only as a candidate), step by step at every run's sizes.
    const { splitOf } = require(gpu);
    for (const sc of groups.splitK) {
      const sgraph = k.trace(sc.fn, sc.specs, { dynamic: sc.dynamic || {} });
      const sprog = k.lower(sgraph);
      const splits = sprog.kernels.map((kk) => candidateConfigs(kk, facts).filter((x) => splitOf(x)));
      const count = Math.max(0, ...splits.map((x) => x.length));
      for (let v = 0; v < count; v++) {
        await ctx.check(`split-K candidates/${sc.name} #${v}`, async () => {
          const tuning = Object.fromEntries(sprog.kernels.flatMap((kk, i) => (splits[i].length ? [[kk.name, splits[i][Math.min(v, splits[i].length - 1)]]] : [])));
          const { build: b } = await run.build(k, ctx, sc, { tuning, program: sprog });
          const spills = Object.entries(b.resources).filter(([, r]) => r.spillStores || r.spillLoads);
          if (spills.length) throw new Error(`spills in ${spills.map(([n]) => n).join(', ')}`);
          if (!b.plan.steps.some((st) => st.kernel.endsWith('__part'))) throw new Error('the plan has no split-K step');
          if (run.DRY) return `built ${b.plan.steps.length} steps (dry run)`;
          for (const shapes of sc.runs || [sc.specs.map((s) => [...s.shape])]) {
            const inputs = run.makeInputs(k, shared, sc, sgraph, shapes);
            const outs = await run.runPlan(k, ctx, b.program.graph, b, inputs);
            const errors = run.compare(k, sc, sgraph, b.plan, inputs, outs, `[${shapes.join('|')}] split candidate ${v}`);
            if (errors.length) throw new Error(errors.join('; '));
            // Partials combined in a fixed order, no atomics: a second run gives the same bytes.
            const again = await run.runPlan(k, ctx, b.program.graph, b, inputs);
            const bytes = (o) => Buffer.from(o.buffer, o.byteOffset, o.byteLength);
            if (!outs.every((o, j) => bytes(o).equals(bytes(again[j])))) throw new Error(`[${shapes.join('|')}] split candidate ${v}: a second run differs`);
          }
          return Object.values(tuning).map((t) => `${t.bm}x${t.bn}/${t.split}/${t.stages}`).join(' ');
        });
      }
    }
  },
};
