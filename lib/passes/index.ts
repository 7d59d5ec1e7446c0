/**
 * lib/passes: graph rewrites, views as index arithmetic, fusion and scheduling, and the
 * launch plan. `lower` is the entry point the engine calls.
 */
import type { Graph } from '../ir';
import type { LaunchPlan } from '../ir/plan';
import type { Kernel } from './kernel';
import { optimize } from './pipeline';
import { buildPlan } from './plan';
import { schedule } from './schedule';

export type { Kernel, KNode, KParam, KStage, KStore, KOperand } from './kernel';
export { buildKernel, Irregular } from './kernel';
export { canFuse, scoreFusion } from './fusion';
export { arenaLayout, peakBytes, bufferElems, ARENA_ALIGN, type ArenaPlacement } from './memory';
export { PIPELINE, optimize, type Pass } from './pipeline';
export { graphRewrite, match, type Pattern, type Rule, type Match } from './rewrite';
export { ALGEBRA_RULES, FOLD_RULES, VIEW_RULES, scalarValue, type ElementwiseOp } from './simplify';
export { schedule, dimName, type Schedule } from './schedule';
export * from './view';
export * from './index_expr';

/** A lowered program: kernels in launch order, their plan, and the optimized graph. */
export interface Program {
  readonly kernels: Kernel[];
  readonly plan: LaunchPlan;
  readonly graph: Graph;
}

/** Optimize, schedule and plan a traced graph. */
export function lower(graph: Graph): Program {
  const g = optimize(graph);
  const sched = schedule(g);
  const plan = buildPlan(g, sched);
  return { kernels: sched.kernels, plan, graph: g };
}
