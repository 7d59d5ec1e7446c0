/**
 * Memory planning for a launch plan. Temps live in one arena per call; two temps may share
 * bytes when their lifetimes (first..last step) do not overlap. Sizes may be symbolic, so
 * placement runs at call time for concrete symbol values: greedy by size, largest first,
 * each at the lowest offset that clears every placed temp it is alive with (the
 * "greedy by size" offset planner of TFLite and ONNX Runtime). Pure: no runtime imports,
 * so the runtime receives it as a function.
 */
import { evalDim, ITEMSIZE, parseDim } from '../ir';
import type { LaunchPlan, PlanBuffer } from '../ir/plan';
import { KilnError } from '../util/errors';

/** Arena offsets are aligned to a cache line (and to every SIMD width). */
export const ARENA_ALIGN = 64;

/** Where each temp lives: byte offsets by buffer id, the arena size, and every buffer's element count. */
export interface ArenaPlacement {
  readonly offsets: Map<number, number>;
  readonly bytes: number;
  readonly elems: Map<number, number>;
}

const alignUp = (n: number): number => Math.ceil(n / ARENA_ALIGN) * ARENA_ALIGN;

/** Element count of every buffer for these symbol values. */
export function bufferElems(plan: LaunchPlan, syms: Readonly<Record<string, number>>): Map<number, number> {
  const out = new Map<number, number>();
  for (const b of plan.buffers) {
    const n = evalDim(parseDim(b.elems), syms);
    if (!Number.isSafeInteger(n) || n < 0) throw new KilnError('KILN_BAD_PLAN', `buffer ${b.id} has ${n} elements for ${JSON.stringify(syms)}`);
    out.set(b.id, n);
  }
  return out;
}

const bytesOf = (b: PlanBuffer, elems: ReadonlyMap<number, number>): number => (elems.get(b.id) as number) * ITEMSIZE[b.dtype];
const overlaps = (a: PlanBuffer, b: PlanBuffer): boolean => a.first <= b.last && b.first <= a.last;

/** Place the plan's temps in one arena for concrete symbol values. */
export function arenaLayout(plan: LaunchPlan, syms: Readonly<Record<string, number>>): ArenaPlacement {
  const elems = bufferElems(plan, syms);
  const temps = plan.buffers.filter((b) => b.role === 'temp');
  const size = new Map(temps.map((b) => [b.id, alignUp(bytesOf(b, elems))]));
  const order = [...temps].sort((a, b) => (size.get(b.id) as number) - (size.get(a.id) as number) || a.id - b.id);
  const placed: { buf: PlanBuffer; at: number; end: number }[] = [];
  const offsets = new Map<number, number>();
  let bytes = 0;
  for (const buf of order) {
    const need = size.get(buf.id) as number;
    const live = placed.filter((p) => overlaps(p.buf, buf)).sort((a, b) => a.at - b.at);
    let at = 0;
    for (const p of live) {
      if (at + need <= p.at) break; // fits in the gap below p
      at = Math.max(at, p.end);
    }
    placed.push({ buf, at, end: at + need });
    offsets.set(buf.id, at);
    bytes = Math.max(bytes, at + need);
  }
  return { offsets, bytes, elems };
}

/**
 * The most bytes the plan holds at once for these symbol values: all inputs, outputs and
 * constants (alive for the whole call) plus the temps alive at the busiest step. The arena
 * from `arenaLayout` is at least the temp part of this.
 */
export function peakBytes(plan: LaunchPlan, syms: Readonly<Record<string, number>>): number {
  const elems = bufferElems(plan, syms);
  const fixed = plan.buffers.filter((b) => b.role !== 'temp').reduce((s, b) => s + bytesOf(b, elems), 0);
  let peak = 0;
  plan.steps.forEach((_, i) => {
    const live = plan.buffers.filter((b) => b.role === 'temp' && b.first <= i && i <= b.last);
    peak = Math.max(peak, live.reduce((s, b) => s + bytesOf(b, elems), 0));
  });
  return fixed + peak;
}
