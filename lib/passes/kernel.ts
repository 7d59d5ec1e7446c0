/**
 * One fused kernel as data: the SSA values it computes over an iteration domain, the
 * buffers it reads and writes through views, its reduction stages and its matmul. Built
 * from a realized root node by inlining every non-realized producer (Inductor's pointwise
 * inlining, tinygrad's lazy views): movement ops become views on loads, PAD over computed
 * values becomes a guard, a reduction whose result is broadcast back onto its own domain
 * becomes a stage of a row kernel, and a MATMUL becomes the kernel's accumulator with the
 * elementwise ops above it as its epilogue. See docs/FUSION.md.
 */
import { dimEq, dimProd, shapeEq, type Dim, type DType, type Node } from '../ir';
import type { ElementwiseOp } from './simplify';
import { contiguousStrides, dependsOn, isContiguous, maskDependsOn, mergeDims, reshapeView, unmasked, viewOf, type Move, type ViewStack } from './view';

/** One SSA value of a kernel, evaluated at the current domain index. */
export type KNode =
  | { readonly k: 'load'; readonly param: number; readonly view: ViewStack; readonly dtype: DType }
  | { readonly k: 'const'; readonly value: number; readonly dtype: DType }
  | { readonly k: 'alu'; readonly op: ElementwiseOp; readonly src: readonly number[]; readonly dtype: DType }
  /** `src` where the view's mask holds, else 0 (PAD over a computed value). */
  | { readonly k: 'guard'; readonly valid: ViewStack; readonly src: number; readonly dtype: DType }
  /** The result of reduction stage `stage` for the current row, or (stage -1) the matmul accumulator. */
  | { readonly k: 'acc'; readonly stage: number; readonly dtype: DType }
  /** table[row, i_last] through the table's view; `row` is an int32 value (clamped to the table). */
  | { readonly k: 'gather'; readonly param: number; readonly view: ViewStack; readonly row: number; readonly dtype: DType };

/** A buffer parameter; `buf` is the plan buffer id (filled in by the scheduler). */
export interface KParam {
  readonly node: Node;
  readonly dtype: DType;
  readonly out: boolean;
  buf: number;
}

/** A reduction over the domain's reduced dims, for each outer index. */
export interface KStage {
  readonly op: 'sum' | 'max';
  readonly src: number;
  readonly dtype: DType;
}

export interface KStore {
  readonly param: number;
  readonly view: ViewStack;
  readonly value: number;
}

/** A matmul operand: a single unmasked view of a buffer, shape [...batch, rows, cols]. */
export interface KOperand {
  readonly param: number;
  readonly view: ViewStack;
}

/** A fused kernel (see the module comment). */
export interface Kernel {
  name: string;
  readonly kind: 'elementwise' | 'reduce' | 'matmul';
  readonly root: Node;
  readonly params: KParam[];
  /** Iteration domain: the root's shape, a row kernel's reduced input shape, or the matmul output. */
  readonly domain: readonly Dim[];
  /** Per domain dim: reduced by the stages (row kernels). */
  readonly reduced: readonly boolean[];
  readonly nodes: readonly KNode[];
  /** Per node: which domain dims its value varies along (loop-invariant placement). */
  readonly deps: readonly (readonly boolean[])[];
  /** Per node: the last stage it needs (-1: none). */
  readonly after: readonly number[];
  readonly stages: readonly KStage[];
  readonly stores: readonly KStore[];
  readonly matmul?: { readonly a: KOperand; readonly b: KOperand; readonly k: Dim };
  /** The values each inlined graph node became (for the scheduler's cost model). */
  readonly visits: ReadonlyMap<Node, readonly number[]>;
}

/** Why a root cannot be built as one kernel (the scheduler then realizes more). */
export class Irregular {
  constructor(readonly why: string) {}
}

const MOVES = new Set(['RESHAPE', 'PERMUTE', 'EXPAND', 'SHRINK', 'PAD']);
const moveOf = (n: Node): Move => ({ op: n.op, arg: n.arg }) as Move;

/** The buffer under a chain of movement ops and the moves (innermost first), if any. */
export function viewBase(n: Node, isBuffer: (n: Node) => boolean): { base: Node; moves: Move[] } | undefined {
  const moves: Move[] = [];
  let x = n;
  while (!isBuffer(x) && MOVES.has(x.op)) {
    moves.unshift(moveOf(x));
    x = x.src[0];
  }
  return isBuffer(x) ? { base: x, moves } : undefined;
}

/** A conversion of float16 or bfloat16 to float32: exact, so it can happen as a value is loaded. */
function widens(n: Node): boolean {
  return n.op === 'CAST' && n.dtype === 'float32' && (n.src[0].dtype === 'float16' || n.src[0].dtype === 'bfloat16');
}

/**
 * A float32 matmul operand that widens 16-bit storage: moves around one widening CAST over a
 * node `base` (not a constant), seen as a single unmasked view. Undefined for any other form.
 */
function narrowOperand(x: Node): { base: Node; moves: Move[] } | undefined {
  const moves: Move[] = [];
  let cast = false;
  for (;;) {
    if (MOVES.has(x.op)) moves.unshift(moveOf(x));
    else if (!cast && widens(x)) cast = true;
    else break;
    x = x.src[0];
  }
  if (!cast || x.op === 'CONST') return undefined;
  const view = viewOf(x.shape, moves);
  return view.length === 1 && unmasked(view[0]) ? { base: x, moves } : undefined;
}

/**
 * Per operand of a float32 matmul, the 16-bit buffer it reads in place of a widened copy
 * (attention over half-precision q, k and v): the kernel converts as it loads, and no
 * kernel writes the copy. Two 16-bit operands of one dtype multiply on tensor cores with
 * float32 accumulation, which is the float32 product of the widened values. Undefined where
 * the operand is read as it is.
 */
export function narrowOperands(mm: Node): readonly (Node | undefined)[] {
  if (mm.op !== 'MATMUL' || mm.dtype !== 'float32') return [undefined, undefined];
  return mm.src.map((x) => narrowOperand(x)?.base);
}

/**
 * `root` as reshapes and permutes of a computed node `inner`, and the view through which a
 * kernel over `inner`'s shape writes `root`'s buffer: the moves undone, in reverse, as one
 * unmasked strided view (attention's head merge [B, H, T, D] -> [B, T, H·D] is the view with
 * strides (T·H·D, D, H·D, 1)). Undefined when `root` is not such a chain, or when a move
 * below it has a buffer of its own (the kernel then reads that buffer).
 */
export function permutedStore(root: Node, isBuffer: (n: Node) => boolean): { inner: Node; view: ViewStack } | undefined {
  const undo: Move[] = [];
  let x = root;
  while ((x === root || !isBuffer(x)) && (x.op === 'RESHAPE' || x.op === 'PERMUTE')) {
    const src = x.src[0];
    if (x.op === 'RESHAPE') undo.push({ op: 'RESHAPE', arg: src.shape });
    else {
      const perm = x.arg as readonly number[];
      const back = perm.map(() => 0);
      perm.forEach((p, i) => (back[p] = i));
      undo.push({ op: 'PERMUTE', arg: back });
    }
    x = src;
  }
  if (x === root || MOVES.has(x.op)) return undefined; // not such a chain, or one through a buffer
  const view = viewOf(root.shape, undo);
  return view.length === 1 && unmasked(view[0]) && shapeEq(view[0].shape, x.shape) ? { inner: x, view } : undefined;
}

/**
 * Build the kernel that computes `root`, inlining every producer for which `isBuffer` is
 * false. Returns Irregular when the inlined region does not form one kernel. A `root` that
 * only reshapes and permutes a matmul kernel's result (`permutedStore`, the scheduler's
 * choice) is that kernel, storing through the permuted view.
 */
export function buildKernel(root: Node, isBuffer: (n: Node) => boolean): Kernel | Irregular {
  const permuted = MOVES.has(root.op) ? permutedStore(root, isBuffer) : undefined;
  if (permuted && !isBuffer(permuted.inner)) {
    const k = buildFrom(root, permuted, isBuffer);
    if (!(k instanceof Irregular)) return k;
  }
  return buildFrom(root, undefined, isBuffer);
}

function buildFrom(root: Node, permuted: { inner: Node; view: ViewStack } | undefined, isBuffer: (n: Node) => boolean): Kernel | Irregular {
  const buffer = (n: Node): boolean => n !== root && isBuffer(n);
  const top = permuted?.inner ?? root;
  const reduces: Node[] = [];
  const matmuls: Node[] = [];
  const seen = new Set<Node>();
  const stack = [top];
  while (stack.length) {
    const n = stack.pop() as Node;
    if (seen.has(n) || buffer(n)) continue;
    seen.add(n);
    if (n.op === 'REDUCE_SUM' || n.op === 'REDUCE_MAX') reduces.push(n);
    if (n.op === 'MATMUL') matmuls.push(n);
    stack.push(...n.src);
  }
  if (matmuls.length > 1) return new Irregular('two matmuls in one kernel');
  if (matmuls.length && reduces.length) return new Irregular('a matmul and a reduction in one kernel');
  let domain: readonly Dim[] = top.shape;
  let reduced: boolean[] = top.shape.map(() => false);
  let rootChain: Move[] = [];
  const kind = matmuls.length ? 'matmul' : reduces.length ? 'reduce' : 'elementwise';
  if (permuted && kind !== 'matmul') return new Irregular('a permuted store is a matmul epilogue only');
  if (kind === 'matmul' && !shapeEq(matmuls[0].shape, top.shape)) return new Irregular('matmul epilogue changes the shape');
  if (kind === 'reduce') {
    const r0 = reduces[0];
    const axes = r0.arg as readonly number[];
    const same = (r: Node): boolean => shapeEq(r.src[0].shape, r0.src[0].shape) && JSON.stringify(r.arg) === JSON.stringify(axes);
    if (!reduces.every(same)) return new Irregular('reductions over different domains');
    domain = r0.src[0].shape;
    reduced = domain.map((_, i) => axes.includes(i));
    if (!shapeEq(root.shape, domain)) {
      if (!dimEq(dimProd(root.shape), dimProd(r0.shape))) return new Irregular('row kernel output is neither the row nor the reduced shape');
      rootChain = [...(shapeEq(root.shape, r0.shape) ? [] : [{ op: 'RESHAPE', arg: r0.shape } as Move]), { op: 'EXPAND', arg: domain }];
    }
  }
  const b = new Builder(root, buffer, domain, reduced);
  try {
    const value = b.visit(top, rootChain);
    b.stores.push({ param: 0, view: permuted?.view ?? viewOf(root.shape, rootChain), value });
  } catch (e) {
    if (e instanceof Irregular) return e;
    throw e;
  }
  return collapse(refine(b.finish(kind)));
}

class Builder {
  readonly params: KParam[] = [];
  readonly nodes: KNode[] = [];
  readonly stages: KStage[] = [];
  readonly stores: KStore[] = [];
  matmul?: Kernel['matmul'];
  readonly #memo = new Map<string, number>();
  readonly #paramOf = new Map<Node, number>();
  readonly #stageOf = new Map<Node, number>();
  readonly visits = new Map<Node, number[]>();

  constructor(
    readonly root: Node,
    readonly buffer: (n: Node) => boolean,
    readonly domain: readonly Dim[],
    readonly reduced: readonly boolean[],
  ) {
    this.param(root, true);
  }

  param(n: Node, out = false): number {
    let i = this.#paramOf.get(n);
    if (i === undefined) {
      i = this.params.push({ node: n, dtype: n.dtype, out, buf: -1 }) - 1;
      this.#paramOf.set(n, i);
    }
    return i;
  }

  emit(node: KNode): number {
    // JSON would print NaN and ±inf alike as null: spell constants out.
    const key = node.k === 'const' ? `c|${node.dtype}|${Object.is(node.value, -0) ? '-0' : String(node.value)}` : JSON.stringify(node);
    let i = this.#memo.get(key);
    if (i === undefined) {
      i = this.nodes.push(node) - 1;
      this.#memo.set(key, i);
    }
    return i;
  }

  /** The value of `n` at the domain index, `chain` mapping the domain onto `n` (innermost move first). */
  visit(n: Node, chain: readonly Move[]): number {
    const key = `${n.id}|${JSON.stringify(chain)}`;
    const hit = this.#memo.get(key);
    if (hit !== undefined) return hit;
    const out = this.compute(n, chain);
    this.#memo.set(key, out);
    const v = this.visits.get(n) ?? [];
    if (!v.includes(out)) v.push(out);
    this.visits.set(n, v);
    return out;
  }

  compute(n: Node, chain: readonly Move[]): number {
    if (this.buffer(n)) return this.emit({ k: 'load', param: this.param(n), view: viewOf(n.shape, chain), dtype: n.dtype });
    switch (n.op) {
      case 'CONST':
        return this.emit({ k: 'const', value: n.arg as number, dtype: n.dtype });
      case 'RESHAPE':
      case 'PERMUTE':
      case 'EXPAND':
      case 'SHRINK':
        return this.visit(n.src[0], [moveOf(n), ...chain]);
      case 'PAD': {
        const inner = [moveOf(n), ...chain];
        const src = this.visit(n.src[0], inner);
        if (viewBase(n.src[0], this.buffer)) return src; // the load itself reads 0 outside
        return this.emit({ k: 'guard', valid: viewOf(n.src[0].shape, inner), src, dtype: n.dtype });
      }
      case 'REDUCE_SUM':
      case 'REDUCE_MAX':
        return this.reduce(n, chain);
      case 'MATMUL':
        return this.matmulAcc(n, chain);
      case 'GATHER': {
        this.identity(n, chain, 'gather');
        const ids = n.src[1];
        const row = this.visit(ids, [{ op: 'RESHAPE', arg: [...ids.shape, 1] }, { op: 'EXPAND', arg: n.shape }, ...chain]);
        const t = this.operand(n.src[0], false);
        return this.emit({ k: 'gather', param: t.param, view: t.view, row, dtype: n.dtype });
      }
      case 'INPUT':
      case 'TENSOR_CONST':
        throw new Irregular(`${n.op} must be a buffer`);
      default:
        return this.emit({ k: 'alu', op: n.op as ElementwiseOp, src: n.src.map((s) => this.visit(s, chain)), dtype: n.dtype });
    }
  }

  identity(n: Node, chain: readonly Move[], what: string): void {
    if (!shapeEq(n.shape, this.domain) || !isContiguous(viewOf(n.shape, chain))) throw new Irregular(`${what} seen through a view`);
  }

  reduce(n: Node, chain: readonly Move[]): number {
    // The reduced value is usable only as "this row's result": the chain must map the
    // domain index to the row index (reduced dims ignored, the others row-major).
    const stack = viewOf(n.shape, chain);
    const [v] = stack;
    const want = contiguousStrides(n.shape);
    const rowOk =
      stack.length === 1 &&
      unmasked(v) &&
      dimEq(v.offset, 0) &&
      shapeEq(v.shape, this.domain) &&
      v.strides.every((s, d) => dimEq(v.shape[d], 1) || dimEq(s, this.reduced[d] ? 0 : want[d]));
    if (!rowOk) throw new Irregular('reduction result seen through an irregular view');
    let stage = this.#stageOf.get(n);
    if (stage === undefined) {
      const src = this.visit(n.src[0], []);
      stage = this.stages.push({ op: n.op === 'REDUCE_SUM' ? 'sum' : 'max', src, dtype: n.dtype }) - 1;
      this.#stageOf.set(n, stage);
    }
    return this.emit({ k: 'acc', stage, dtype: n.dtype });
  }

  matmulAcc(n: Node, chain: readonly Move[]): number {
    this.identity(n, chain, 'matmul result');
    // Narrow operands are read below their widening casts whether or not those have buffers.
    const narrow = narrowOperands(n);
    const [a, b] = n.src.map((s, i) => (narrow[i] ? this.narrow(s) : this.operand(s, true)));
    this.matmul = { a, b, k: n.src[0].shape[n.src[0].shape.length - 1] };
    return this.emit({ k: 'acc', stage: -1, dtype: n.dtype });
  }

  operand(x: Node, strided: boolean): KOperand {
    const vb = viewBase(x, this.buffer);
    if (!vb) throw new Irregular('operand is not a view of a buffer');
    const view = viewOf(vb.base.shape, vb.moves);
    if (strided && (view.length !== 1 || !unmasked(view[0]))) throw new Irregular('matmul operand is not a strided view');
    return { param: this.param(vb.base), view };
  }

  narrow(x: Node): KOperand {
    const o = narrowOperand(x)!;
    if (!this.buffer(o.base)) throw new Irregular('narrow matmul operand is not a buffer');
    return { param: this.param(o.base), view: viewOf(o.base.shape, o.moves) };
  }

  finish(kind: Kernel['kind']): Kernel {
    const rank = this.domain.length;
    const none = (): boolean[] => new Array<boolean>(rank).fill(false);
    const deps: boolean[][] = [];
    const after: number[] = [];
    const or = (a: readonly boolean[], b: readonly boolean[]): boolean[] => a.map((x, i) => x || b[i]);
    this.nodes.forEach((n, i) => {
      switch (n.k) {
        case 'load':
          deps[i] = dependsOn(n.view);
          after[i] = -1;
          break;
        case 'const':
          deps[i] = none();
          after[i] = -1;
          break;
        case 'alu':
          deps[i] = n.src.reduce((d, s) => or(d, deps[s]), none());
          after[i] = Math.max(-1, ...n.src.map((s) => after[s]));
          break;
        case 'guard':
          deps[i] = or(deps[n.src], maskDependsOn(n.valid));
          after[i] = after[n.src];
          break;
        case 'acc':
          deps[i] = n.stage < 0 ? this.domain.map(() => true) : this.reduced.map((r, d) => !r && !dimEq(this.domain[d], 1));
          after[i] = n.stage;
          break;
        case 'gather':
          deps[i] = deps[n.row].map((x, d) => x || d === rank - 1);
          after[i] = after[n.row];
          break;
        default:
          return n satisfies never;
      }
    });
    return {
      name: '',
      kind,
      root: this.root,
      params: this.params,
      domain: this.domain,
      reduced: this.reduced,
      nodes: this.nodes,
      deps,
      after,
      stages: this.stages,
      stores: this.stores,
      visits: this.visits,
      ...(this.matmul ? { matmul: this.matmul } : {}),
    };
  }
}

/** Every view a kernel indexes with domain coordinates. */
function domainViews(k: Kernel): ViewStack[] {
  const out: ViewStack[] = k.stores.map((s) => s.view);
  for (const n of k.nodes) if (n.k === 'load') out.push(n.view);
  for (const n of k.nodes) if (n.k === 'guard') out.push(n.valid);
  return out;
}

/**
 * For each new dim, the old dim it splits (`old` refined into `fine`: every old dim is the
 * product of a run of consecutive new dims, size-1 dims may appear or vanish), or undefined.
 */
function refinement(old: readonly Dim[], fine: readonly Dim[]): number[] | undefined {
  const groups: number[] = [];
  let j = 0;
  for (let i = 0; i < old.length; i++) {
    let prod: Dim = 1;
    const start = j;
    while (j < fine.length && !dimEq(prod, old[i])) {
      prod = dimProd([prod, fine[j]]);
      groups.push(i);
      j++;
    }
    if (!dimEq(prod, old[i])) return undefined;
    // Trailing size-1 new dims belong to this old dim too (they change nothing).
    while (j < fine.length && dimEq(fine[j], 1) && (i === old.length - 1 || j > start)) {
      groups.push(i);
      j++;
    }
  }
  return j === fine.length ? groups : undefined;
}

/**
 * An elementwise kernel that reads a buffer through a permute and a reshape (attention's
 * head merge: [B, H, T, D] -> [B, T, H*D]) indexes it through two stacked views, which the
 * renderer turns into a division and a modulo per element (no SIMD). When the top view of
 * such a load is the plain reshape of the view below it, and every other view of the kernel
 * can take the lower view's shape as its own, the kernel iterates that finer domain
 * instead: the load becomes one strided view (`i1*8192 + i0*64 + i2`, SIMD on the inner
 * dim) and the store a reshaped contiguous one.
 */
function refine(k: Kernel | Irregular): Kernel | Irregular {
  if (k instanceof Irregular || k.kind !== 'elementwise' || k.nodes.some((n) => n.k === 'gather')) return k;
  let cur = k;
  for (let round = 0; round < 4; round++) {
    const views = domainViews(cur);
    const cand = views.find((v) => v.length >= 2 && isContiguous(v.slice(-1)) && shapeEq(v[v.length - 1].shape, cur.domain));
    if (!cand) return cur;
    const fine = cand[cand.length - 2].shape;
    const groups = refinement(cur.domain, fine);
    if (!groups || fine.length <= cur.domain.length) return cur;
    const moved: ViewStack[] = [];
    for (const v of views) {
      const top = v[v.length - 1];
      if (v.length >= 2 && isContiguous([top]) && shapeEq(v[v.length - 2].shape, fine)) {
        moved.push(v.slice(0, -1)); // the reshape on top was the identity on the finer domain
        continue;
      }
      const r = reshapeView(top, fine);
      if (!r) return cur;
      moved.push([...v.slice(0, -1), r]);
    }
    let i = 0;
    const stores = cur.stores.map((st) => ({ ...st, view: moved[i++] }));
    const loads = cur.nodes.map((n) => (n.k === 'load' ? { ...n, view: moved[i++] } : n));
    const nodes = loads.map((n) => (n.k === 'guard' ? { ...n, valid: moved[i++] } : n));
    cur = {
      ...cur,
      stores,
      nodes,
      domain: fine,
      reduced: fine.map(() => false),
      deps: cur.deps.map((ds) => groups.map((g) => ds[g])),
    };
  }
  return cur;
}

/**
 * Merge adjacent domain dims that every view indexes as one (loop collapsing), so that a
 * contiguous elementwise kernel is one flat loop the compiler vectorizes. A matmul merges
 * its batch dims, and folds them into its rows where A's rows continue across them and B
 * does not vary along them: `x[B, T, C] @ w[C, N]` becomes one [B·T, C] × [C, N] GEMM
 * (bigger tiles, a single weight panel, and on sm_90a the wgmma kernel, which does not
 * take a broadcast batch).
 */
function collapse(k: Kernel | Irregular): Kernel | Irregular {
  if (k instanceof Irregular || k.nodes.some((n) => n.k === 'gather')) return k;
  let cur = k;
  const last = k.kind === 'matmul' ? k.domain.length - 3 : k.domain.length - 2;
  for (let d = last; d >= 0; d--) {
    if (cur.reduced[d] !== cur.reduced[d + 1]) continue;
    const merged = domainViews(cur).map((v) => mergeDims(v, d));
    if (merged.some((v) => v === undefined)) continue;
    const intoRows = d + 1 === cur.domain.length - 2;
    const matmul = cur.matmul && mergeOperands(cur.matmul, d, intoRows);
    if (cur.matmul && !matmul) continue;
    cur = remapViews(cur, d, merged as ViewStack[], matmul);
  }
  return cur;
}

/**
 * A matmul's operands with batch dim `d` merged into dim d + 1: into the next batch dim of
 * both, or (`intoRows`) into A's rows, where B must not depend on it (B's d + 1 is K).
 */
function mergeOperands(mm: NonNullable<Kernel['matmul']>, d: number, intoRows: boolean): Kernel['matmul'] | undefined {
  const a = mergeDims(mm.a.view, d);
  const b = intoRows ? dropDim(mm.b.view, d) : mergeDims(mm.b.view, d);
  return a && b ? { ...mm, a: { ...mm.a, view: a }, b: { ...mm.b, view: b } } : undefined;
}

/** A single unmasked view without dim `d`, which it must not depend on. */
function dropDim(stack: ViewStack, d: number): ViewStack | undefined {
  const [v] = stack;
  if (stack.length !== 1 || !unmasked(v) || !(dimEq(v.strides[d], 0) || dimEq(v.shape[d], 1))) return undefined;
  const drop = <T>(xs: readonly T[]): T[] => xs.filter((_, i) => i !== d);
  return [{ shape: drop(v.shape), strides: drop(v.strides), offset: v.offset }];
}

function remapViews(k: Kernel, d: number, merged: readonly ViewStack[], matmul?: Kernel['matmul']): Kernel {
  let i = 0;
  const stores = k.stores.map((s) => ({ ...s, view: merged[i++] }));
  const loads = k.nodes.map((n) => (n.k === 'load' ? { ...n, view: merged[i++] } : n));
  const nodes = loads.map((n) => (n.k === 'guard' ? { ...n, valid: merged[i++] } : n));
  const squash = <T>(xs: readonly T[], f: (a: T, b: T) => T): T[] => [...xs.slice(0, d), f(xs[d], xs[d + 1]), ...xs.slice(d + 2)];
  return {
    ...k,
    stores,
    nodes,
    domain: squash(k.domain, (a, b) => dimProd([a, b])),
    reduced: squash(k.reduced, (a) => a),
    deps: k.deps.map((ds) => squash(ds, (a, b) => a || b)),
    ...(matmul ? { matmul } : {}),
  };
}
