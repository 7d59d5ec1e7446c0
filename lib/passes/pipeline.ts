/**
 * kiln's optimization pipeline: one flat list of named passes, in order, each with the
 * reason for its place. `lower` runs it, then schedules kernels and builds the plan.
 */
import type { Graph } from '../ir';
import { graphRewrite, withOutputs } from './rewrite';
import { ALGEBRA_RULES, FOLD_RULES, VIEW_RULES } from './simplify';

/** A named graph-to-graph pass. */
export interface Pass {
  readonly name: string;
  readonly why: string;
  readonly run: (g: Graph) => Graph;
}

/** The passes, in order. */
export const PIPELINE: readonly Pass[] = [
  {
    name: 'fold-constants',
    why: 'scalar-only arithmetic (scales, eps, 1/n) becomes one CONST before anything looks at shapes',
    run: (g) => graphRewrite(g, FOLD_RULES),
  },
  {
    name: 'simplify',
    why: 'identities exposed by folding (x*1, x+0, casts there and back) disappear, with views canonicalized alongside',
    run: (g) => graphRewrite(g, [...FOLD_RULES, ...ALGEBRA_RULES, ...VIEW_RULES]),
  },
  {
    name: 'cse',
    why: 'rebuilding through the node table interns equal subtrees to one node, so rewritten duplicates merge',
    run: (g) => graphRewrite(g, []),
  },
  {
    name: 'dce',
    why: 'last: only what the outputs reach is scheduled, and unused constants leave the graph',
    run: (g) => withOutputs(g, g.outputs),
  },
];

/** Run every pass of the pipeline. */
export function optimize(graph: Graph): Graph {
  return PIPELINE.reduce((g, p) => p.run(g), graph);
}
