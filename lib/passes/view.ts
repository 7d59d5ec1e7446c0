/**
 * Views as index arithmetic (tinygrad's ShapeTracker, luminal's shape trackers): a movement
 * op never runs; it changes how a consumer computes the memory offset of an element. A
 * `View` is (shape, strides, offset, optional validity mask from PAD); a `ViewStack` is a
 * list of views where the last one is what consumers index and the first one addresses
 * memory. RESHAPE keeps one view when the strides allow (merging or splitting compatible
 * dims), otherwise it stacks a contiguous view on top (linearize, then delinearize into the
 * view below). All dims may be symbolic. See docs/FUSION.md, "View algebra".
 */
import { dimAdd, dimDivExact, dimEq, dimMul, dimSub, isStatic, type Dim, type OpArgs, type PadRange, type ShrinkRange } from '../ir';
import { iadd, idim, idiv, imod, imul, isum, type IExpr, type Bound } from './index_expr';

/** Valid range [lo, hi) of one dim. */
export type Range = readonly [lo: Dim, hi: Dim];

/** One strided view. `mask`, when present, marks the valid index range of every dim. */
export interface View {
  readonly shape: readonly Dim[];
  readonly strides: readonly Dim[];
  readonly offset: Dim;
  readonly mask?: readonly Range[];
}

/** Views applied bottom (memory) to top (what is indexed); never empty. */
export type ViewStack = readonly View[];

/** A movement op as the view algebra sees it. */
export type Move =
  | { readonly op: 'RESHAPE'; readonly arg: OpArgs['RESHAPE'] }
  | { readonly op: 'PERMUTE'; readonly arg: OpArgs['PERMUTE'] }
  | { readonly op: 'EXPAND'; readonly arg: OpArgs['EXPAND'] }
  | { readonly op: 'SHRINK'; readonly arg: OpArgs['SHRINK'] }
  | { readonly op: 'PAD'; readonly arg: OpArgs['PAD'] };

const isOne = (d: Dim): boolean => dimEq(d, 1);

/** True when `b - a` is known to be >= 0 (symbols are non-negative). */
export function knownLe(a: Dim, b: Dim): boolean {
  const d = dimSub(b, a);
  return isStatic(d) ? d >= 0 : d.terms.every((t) => t.coef >= 0);
}

/** Row-major strides; size-1 dims get stride 0 so that equal layouts compare equal. */
export function contiguousStrides(shape: readonly Dim[]): Dim[] {
  const out: Dim[] = new Array<Dim>(shape.length);
  let acc: Dim = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = isOne(shape[i]) ? 0 : acc;
    acc = dimMul(acc, shape[i]);
  }
  return out;
}

/** The contiguous single view of a buffer of `shape`. */
export function contiguous(shape: readonly Dim[]): ViewStack {
  return [{ shape, strides: contiguousStrides(shape), offset: 0 }];
}

const trivial = (v: View, i: number): boolean =>
  !v.mask || (dimEq(v.mask[i][0], 0) && dimEq(v.mask[i][1], v.shape[i]));

/** True when no dim of `v` is masked. */
export function unmasked(v: View): boolean {
  return v.shape.every((_, i) => trivial(v, i));
}

function withMask(v: View, mask: readonly Range[] | undefined): View {
  const out = { shape: v.shape, strides: v.strides, offset: v.offset, mask };
  return out.mask && unmasked(out) ? { shape: v.shape, strides: v.strides, offset: v.offset } : out;
}

/** True when the stack is one unmasked, offset-0, row-major view of its shape. */
export function isContiguous(stack: ViewStack): boolean {
  if (stack.length !== 1) return false;
  const [v] = stack;
  const want = contiguousStrides(v.shape);
  return unmasked(v) && dimEq(v.offset, 0) && v.strides.every((s, i) => isOne(v.shape[i]) || dimEq(s, want[i]));
}

/** Reshape one view without stacking, or undefined when its strides do not allow it. */
export function reshapeView(v: View, shape: readonly Dim[]): View | undefined {
  if (v.shape.length === shape.length && v.shape.every((d, i) => dimEq(d, shape[i]))) return v;
  if ([...v.shape, ...shape].some((d) => isStatic(d) && d === 0)) return { shape, strides: contiguousStrides(shape), offset: 0 };
  // Size-1 dims carry no layout; a masked-out size-1 dim makes the view empty (stack instead).
  const old = v.shape.map((d, i) => ({ d, s: v.strides[i], m: v.mask?.[i], ok: trivial(v, i) }));
  if (old.some((o) => isOne(o.d) && !o.ok)) return undefined;
  const src = old.filter((o) => !isOne(o.d));
  const dst = shape.map((d, i) => ({ d, i })).filter((o) => !isOne(o.d));
  const strides: Dim[] = shape.map(() => 0);
  const mask: Range[] = shape.map((d) => [0, d] as const);
  let i = 0;
  let j = 0;
  while (i < src.length || j < dst.length) {
    if (i >= src.length || j >= dst.length) return undefined;
    const i0 = i;
    const j0 = j;
    let accO: Dim = src[i].d;
    let accN: Dim = dst[j].d;
    while (!dimEq(accO, accN)) {
      const growOld = isStatic(accO) && isStatic(accN) ? accO < accN : divides(accO, accN);
      const growNew = isStatic(accO) && isStatic(accN) ? accN < accO : divides(accN, accO);
      if (growOld && ++i < src.length) accO = dimMul(accO, src[i].d);
      else if (growNew && ++j < dst.length) accN = dimMul(accN, dst[j].d);
      else return undefined;
    }
    const group = src.slice(i0, i + 1);
    for (let k = 0; k + 1 < group.length; k++) {
      if (!dimEq(group[k].s, dimMul(group[k + 1].s, group[k + 1].d))) return undefined;
    }
    if ((group.length > 1 || j > j0) && !group.every((o) => o.ok)) return undefined;
    let stride = group[group.length - 1].s;
    for (let k = j; k >= j0; k--) {
      strides[dst[k].i] = stride;
      stride = dimMul(stride, dst[k].d);
    }
    if (group.length === 1 && j === j0 && group[0].m) mask[dst[j0].i] = group[0].m;
    i++;
    j++;
  }
  return withMask({ shape, strides, offset: v.offset }, v.mask ? mask : undefined);
}

/** True when `small` divides `big` exactly with a quotient other than 1. */
function divides(small: Dim, big: Dim): boolean {
  try {
    return !isOne(dimDivExact(big, small));
  } catch {
    return false;
  }
}

function permuteView(v: View, perm: readonly number[]): View {
  return {
    shape: perm.map((p) => v.shape[p]),
    strides: perm.map((p) => v.strides[p]),
    offset: v.offset,
    ...(v.mask ? { mask: perm.map((p) => v.mask![p]) } : {}),
  };
}

function expandView(v: View, shape: readonly Dim[]): View | undefined {
  const grow = shape.map((d, i) => isOne(v.shape[i]) && !isOne(d));
  let mask: Range[] | undefined;
  if (v.mask) {
    mask = [];
    for (let i = 0; i < shape.length; i++) {
      const [lo, hi] = v.mask[i];
      if (!grow[i]) mask.push([lo, hi]);
      else if (trivial(v, i)) mask.push([0, shape[i]]);
      else if (knownLe(hi, lo)) mask.push([0, 0]);
      else return undefined;
    }
  }
  return withMask({ shape, strides: v.strides.map((s, i) => (grow[i] ? 0 : s)), offset: v.offset }, mask);
}

function shrinkView(v: View, ranges: readonly ShrinkRange[]): View | undefined {
  const shape = ranges.map(([s, e, st]) => (isStatic(s) && isStatic(e) ? Math.ceil((e - s) / st) : dimSub(e, s)));
  let offset = v.offset;
  ranges.forEach(([s], i) => (offset = dimAdd(offset, dimMul(s, v.strides[i]))));
  let mask: Range[] | undefined;
  if (v.mask) {
    mask = [];
    for (let i = 0; i < ranges.length; i++) {
      const [start, , step] = ranges[i];
      const [lo, hi] = v.mask[i];
      const n = shape[i];
      if (isStatic(lo) && isStatic(hi) && isStatic(start) && isStatic(n)) {
        const clamp = (x: number): number => Math.min(Math.max(x, 0), n);
        mask.push([clamp(Math.ceil((lo - start) / step)), clamp(Math.ceil((hi - start) / step))]);
        continue;
      }
      if (step !== 1) return undefined;
      const l = dimSub(lo, start);
      const h = dimSub(hi, start);
      const lc = knownLe(l, 0) ? 0 : knownLe(0, l) ? l : undefined;
      const hc = knownLe(n, h) ? n : knownLe(h, n) && knownLe(0, h) ? h : undefined;
      if (lc === undefined || hc === undefined) return undefined;
      mask.push([lc, hc]);
    }
  }
  return withMask({ shape, strides: v.strides.map((s, i) => dimMul(s, ranges[i][2])), offset }, mask);
}

function padView(v: View, pads: readonly PadRange[]): View {
  const shape = v.shape.map((d, i) => dimAdd(dimAdd(d, pads[i][0]), pads[i][1]));
  let offset = v.offset;
  pads.forEach(([b], i) => (offset = dimSub(offset, dimMul(b, v.strides[i]))));
  const old = v.mask ?? v.shape.map((d) => [0, d] as const);
  const mask = old.map(([lo, hi], i) => [dimAdd(lo, pads[i][0]), dimAdd(hi, pads[i][0])] as const);
  return withMask({ shape, strides: v.strides, offset }, mask);
}

/** Apply a movement op to the top view, stacking a fresh contiguous view when needed. */
export function applyMove(stack: ViewStack, move: Move): ViewStack {
  const top = stack[stack.length - 1];
  const one = applyOne(top, move);
  if (one) return [...stack.slice(0, -1), one];
  const fresh = contiguous(top.shape)[0];
  const again = applyOne(fresh, move);
  if (!again) throw new Error(`view: ${move.op} cannot apply to a contiguous view`); // impossible by construction
  return [...stack, again];
}

function applyOne(v: View, move: Move): View | undefined {
  switch (move.op) {
    case 'RESHAPE':
      return reshapeView(v, move.arg);
    case 'PERMUTE':
      return permuteView(v, move.arg);
    case 'EXPAND':
      return expandView(v, move.arg);
    case 'SHRINK':
      return shrinkView(v, move.arg);
    case 'PAD':
      return padView(v, move.arg);
    default:
      return move satisfies never;
  }
}

/** Compose movement ops (applied in order, innermost first) over a buffer of `shape`. */
export function viewOf(shape: readonly Dim[], moves: readonly Move[]): ViewStack {
  return moves.reduce(applyMove, contiguous(shape));
}

/**
 * Memory offset and validity of the element at `idx` (one expression per dim of the top
 * view): strides and offset per view, linearize/delinearize between stacked views.
 */
export function indexOf(stack: ViewStack, idx: readonly IExpr[]): { index: IExpr; valid: Bound[] } {
  const valid: Bound[] = [];
  let cur = idx;
  for (let k = stack.length - 1; ; k--) {
    const v = stack[k];
    v.shape.forEach((_, d) => {
      if (!trivial(v, d)) valid.push({ e: cur[d], lo: v.mask![d][0], hi: v.mask![d][1] });
    });
    const lin = iadd(isum(cur.map((e, d) => imul(e, idim(v.strides[d])))), idim(v.offset));
    if (k === 0) return { index: lin, valid };
    cur = delinearize(lin, stack[k - 1].shape);
  }
}

/** Row-major coordinates of linear index `lin` in `shape`. */
export function delinearize(lin: IExpr, shape: readonly Dim[]): IExpr[] {
  const out: IExpr[] = [];
  let inner: Dim = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    const q = idiv(lin, idim(inner));
    out[d] = d === 0 ? q : imod(q, idim(shape[d]));
    inner = dimMul(inner, shape[d]);
  }
  return out;
}

/** Dims of the top view whose index changes the result (nonzero stride or a mask). */
export function dependsOn(stack: ViewStack): boolean[] {
  const top = stack[stack.length - 1];
  if (stack.length > 1) return top.shape.map((d) => !isOne(d));
  return top.shape.map((d, i) => !isOne(d) && (!dimEq(top.strides[i], 0) || !trivial(top, i)));
}

/** Dims of the top view whose index changes validity (a guard reads no memory, only masks). */
export function maskDependsOn(stack: ViewStack): boolean[] {
  const top = stack[stack.length - 1];
  if (stack.length > 1) return dependsOn(stack);
  return top.shape.map((_, i) => !trivial(top, i));
}

/**
 * Whether dims `d` and `d+1` of the top view can be indexed as one dim of size
 * `shape[d]*shape[d+1]` (for loop collapsing): returns the merged view or undefined.
 */
export function mergeDims(stack: ViewStack, d: number): ViewStack | undefined {
  const v = stack[stack.length - 1];
  const shape = [...v.shape.slice(0, d), dimMul(v.shape[d], v.shape[d + 1]), ...v.shape.slice(d + 2)];
  const merged = v.shape.some((n) => isStatic(n) && n === 0) ? mergeEmpty(v, d, shape) : reshapeView(v, shape);
  return merged && [...stack.slice(0, -1), merged];
}

/**
 * mergeDims on a view with no elements. reshapeView gives such a view row-major strides (any
 * layout holds no element), but a kernel's views say more than where elements are: which
 * domain dims an index depends on. A reduce kernel's store over a statically empty reduced
 * dim must keep stride 0 there, or it is stored once per element of the empty dim: never.
 */
function mergeEmpty(v: View, d: number, shape: readonly Dim[]): View | undefined {
  if (!trivial(v, d) || !trivial(v, d + 1)) return undefined;
  const [a, b] = [v.strides[d], v.strides[d + 1]];
  const stride = isOne(v.shape[d + 1]) ? a : isOne(v.shape[d]) || dimEq(a, dimMul(b, v.shape[d + 1])) ? b : undefined;
  if (stride === undefined) return undefined;
  const mask = v.mask && [...v.mask.slice(0, d), [0, shape[d]] as const, ...v.mask.slice(d + 2)];
  return withMask({ shape, strides: [...v.strides.slice(0, d), stride, ...v.strides.slice(d + 2)], offset: v.offset }, mask);
}

/** Readable text of a view stack, for debugging and snapshots. */
export function viewStr(stack: ViewStack): string {
  return stack
    .map((v) => {
      const m = v.mask ? ` mask=${v.mask.map(([l, h]) => `${l}:${h}`).join(',')}` : '';
      return `(${v.shape.join(',')}|${v.strides.join(',')}|+${v.offset}${m})`;
    })
    .join('∘');
}
