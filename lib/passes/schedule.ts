/**
 * The fusion scheduler: decides which nodes get a buffer ("realized"), builds one kernel
 * per realized node, orders them, and names them. It starts from every compute node
 * realized (one kernel each) and walks candidates consumers-first, inlining a producer
 * into its consumers' kernels whenever fusion.ts says it is legal and profitable (Inductor's
 * iterated can_fuse/score_fusion, tinygrad's realize-or-inline). Some nodes must keep a
 * buffer: outputs, matmul operands (packed from memory) and gather tables.
 */
import { KilnError } from '../util/errors';
import { dimEq, dimProd, dimStr, toposort, type Dim, type Graph, type Node } from '../ir';
import { canFuse, inlineRegion, scoreFusion } from './fusion';
import { buildKernel, Irregular, narrowOperands, viewBase, type Kernel } from './kernel';
import { isContiguous, unmasked, viewOf } from './view';

/** The scheduler's result: kernels in launch order and where each output lives. */
export interface Schedule {
  readonly kernels: Kernel[];
  /** Each graph output's buffer node: the output itself, or the buffer it aliases. */
  readonly outputBuffers: readonly Node[];
}

const isSource = (n: Node): boolean => n.op === 'INPUT' || n.op === 'TENSOR_CONST';
const isMove = (n: Node): boolean => ['RESHAPE', 'PERMUTE', 'EXPAND', 'SHRINK', 'PAD'].includes(n.op);

/** Schedule an optimized graph into kernels. */
export function schedule(graph: Graph): Schedule {
  const order = toposort(graph);
  const consumers = new Map<Node, Node[]>(order.map((n) => [n, []]));
  for (const n of order) for (const s of n.src) consumers.get(s)?.push(n);

  const realized = new Set<Node>(order.filter((n) => !isSource(n) && !isMove(n) && n.op !== 'CONST'));
  const forced = new Set<Node>();
  const force = (n: Node): void => {
    if (isSource(n)) return;
    realized.add(n);
    forced.add(n);
  };
  for (const o of graph.outputs) force(o);
  const isBuffer = (n: Node): boolean => isSource(n) || realized.has(n);
  // Matmul operands are packed from strided memory and gather tables indexed by rows:
  // their base must be a buffer, and a matmul operand must be one unmasked strided view.
  for (const n of order) {
    if (n.op !== 'MATMUL' && n.op !== 'GATHER') continue;
    const narrow = narrowOperands(n);
    for (const [i, x] of (n.op === 'MATMUL' ? n.src : [n.src[0]]).entries()) {
      const stored = narrow[i];
      if (stored) {
        force(stored); // read as 16-bit storage: the widening cast may then fuse away
        continue;
      }
      let base = x;
      while (isMove(base)) base = base.src[0];
      if (base.op === 'CONST') {
        force(x);
        continue;
      }
      // An operand that is no single strided view of its base gets a buffer of its own, and
      // then its base needs none: the fusion below may inline it into the operand's kernel
      // (a matmul then stores the permuted layout: kernel.ts, permutedStore).
      const vb = viewBase(x, (m) => m === base || isBuffer(m));
      const view = vb && viewOf(vb.base.shape, vb.moves);
      if (n.op === 'MATMUL' && view && (view.length !== 1 || !unmasked(view[0]))) force(x);
      else force(base);
    }
  }

  const owners = computeOwners(order, consumers, realized);
  const candidates = [...order].reverse().filter((n) => realized.has(n) && !forced.has(n));
  for (let changed = true; changed; ) {
    changed = false;
    for (const p of candidates) {
      if (!realized.has(p)) continue;
      const ctx = { isBuffer, owners: ownersOf(p, consumers, owners) };
      const legal = canFuse(p, ctx);
      if (!legal || scoreFusion(p, ctx, legal) <= 0) continue;
      realized.delete(p);
      changed = true;
      // Only p and the producers inlined with it can change owners (ids: sources first).
      for (const n of inlineRegion(p, isBuffer).sort((a, b) => b.id - a.id)) owners.set(n, ownersOf(n, consumers, owners));
    }
  }

  // Outputs that are contiguous views of another buffer alias it instead of copying.
  const alias = new Map<Node, Node>();
  for (const o of graph.outputs) {
    if (!isMove(o) || alias.has(o)) continue;
    const vb = viewBase(o, (n) => n !== o && isBuffer(n));
    if (vb && dimEq(dimProd(vb.base.shape), dimProd(o.shape)) && isContiguous(viewOf(vb.base.shape, vb.moves))) alias.set(o, vb.base);
  }
  const target = (o: Node): Node => {
    let t = o;
    while (alias.has(t)) t = alias.get(t) as Node;
    return t;
  };
  const outputBuffers = graph.outputs.map(target);
  for (const o of alias.keys()) realized.delete(o);

  const kernels: Kernel[] = [];
  for (const n of order) {
    if (!realized.has(n)) continue;
    const k = buildKernel(n, isBuffer);
    if (k instanceof Irregular) throw new KilnError('KILN_INTERNAL', `scheduler: ${n} cannot be built as a kernel: ${k.why}`);
    kernels.push(k);
  }
  nameKernels(kernels);
  return { kernels, outputBuffers };
}

type Owners = Map<Node, Set<Node>>;

function computeOwners(order: readonly Node[], consumers: ReadonlyMap<Node, Node[]>, realized: ReadonlySet<Node>): Owners {
  const owners: Owners = new Map();
  refreshOwners(order, consumers, realized, owners);
  return owners;
}

/** Owner kernels of every node: itself when realized, else the owners of its consumers. */
function refreshOwners(order: readonly Node[], consumers: ReadonlyMap<Node, Node[]>, realized: ReadonlySet<Node>, owners: Owners): void {
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    if (realized.has(n)) owners.set(n, new Set([n]));
    else owners.set(n, ownersOf(n, consumers, owners));
  }
}

function ownersOf(n: Node, consumers: ReadonlyMap<Node, Node[]>, owners: Owners): Set<Node> {
  const out = new Set<Node>();
  for (const c of consumers.get(n) ?? []) for (const o of owners.get(c) ?? []) out.add(o);
  return out;
}

/** A dim as a C-identifier-safe name part: `s0*768` → `s0x768`. */
export function dimName(d: Dim): string {
  return dimStr(d).replace(/\*/g, 'x').replace(/\+/g, 'p').replace(/-/g, 'm').replace(/[^A-Za-z0-9_]/g, '');
}

/** `E_<n>`, `R_<outer>_<inner>`, `MM_<m>_<n>_<k>`, made unique with a suffix. */
function nameKernels(kernels: Kernel[]): void {
  const used = new Map<string, number>();
  for (const k of kernels) {
    let base: string;
    if (k.kind === 'matmul') {
      const r = k.domain.length;
      base = `MM_${dimName(k.domain[r - 2])}_${dimName(k.domain[r - 1])}_${dimName(k.matmul!.k)}`;
    } else if (k.kind === 'reduce') {
      const outer = dimProd(k.domain.filter((_, i) => !k.reduced[i]));
      const inner = dimProd(k.domain.filter((_, i) => k.reduced[i]));
      base = `R_${dimName(outer)}_${dimName(inner)}`;
    } else base = `E_${dimName(dimProd(k.domain))}`;
    const seen = used.get(base) ?? 0;
    used.set(base, seen + 1);
    k.name = seen ? `${base}_${seen}` : base;
  }
}
