/**
 * The launch plan (lib/ir/plan.ts) of a schedule: one buffer per input, constant and
 * kernel root, one step per kernel in order, and buffer lifetimes for arena reuse. Buffer
 * ids: inputs first (bufs[i] is input i), then constants, then kernel outputs in step order.
 */
import { dimProd, dimToJSON, toposort, type Graph, type Node } from '../ir';
import type { LaunchPlan, PlanBuffer, PlanStep } from '../ir/plan';
import type { Schedule } from './schedule';

/** Build the plan and fill each kernel parameter's buffer id. */
export function buildPlan(graph: Graph, sched: Schedule): LaunchPlan {
  const idOf = new Map<Node, number>();
  const buffers: Omit<PlanBuffer, 'first' | 'last'>[] = [];
  const add = (n: Node, role: PlanBuffer['role'], source?: number | string): void => {
    if (idOf.has(n)) return;
    idOf.set(n, buffers.length);
    buffers.push({ id: buffers.length, dtype: n.dtype, elems: dimToJSON(dimProd(n.shape)), role, ...(source === undefined ? {} : { source }) });
  };
  graph.inputs.forEach((n, i) => add(n, 'input', i));
  for (const n of toposort(graph)) if (n.op === 'TENSOR_CONST') add(n, 'const', n.arg as string);
  const outputs = new Set(sched.outputBuffers);
  for (const k of sched.kernels) add(k.root, outputs.has(k.root) ? 'output' : 'temp');

  const steps: PlanStep[] = sched.kernels.map((k) => {
    for (const p of k.params) p.buf = idOf.get(p.node) as number;
    return { kernel: k.name, kind: k.kind, buffers: k.params.map((p) => p.buf) };
  });
  const first = buffers.map(() => Infinity);
  const last = buffers.map(() => -1);
  steps.forEach((s, i) =>
    s.buffers.forEach((b) => {
      first[b] = Math.min(first[b], i);
      last[b] = Math.max(last[b], i);
    }),
  );
  const end = Math.max(0, steps.length - 1);
  const planBuffers: PlanBuffer[] = buffers.map((b) => {
    // Only temps share arena space; everything else lives for the whole call.
    if (b.role !== 'temp') return { ...b, first: 0, last: end };
    return { ...b, first: first[b.id], last: last[b.id] };
  });
  return {
    version: 1,
    symbols: graph.symbols.map((s) => s.name),
    buffers: planBuffers,
    steps,
    outputs: graph.outputs.map((o, i) => {
      const buf = sched.outputBuffers[i];
      return { buffer: idOf.get(buf) as number, dtype: o.dtype, shape: o.shape.map(dimToJSON) };
    }),
  };
}
