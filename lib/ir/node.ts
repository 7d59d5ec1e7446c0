/**
 * The graph IR's one node type: an immutable `Node { op, dtype, src, arg, shape }`, created
 * only by a `NodeTable`, which interns nodes (structurally equal nodes built by one table
 * are the same object, so common subexpressions are shared for free), infers and checks
 * shapes and dtypes, and freezes everything. Each node has a structural `key` (sha256 over
 * op, dtype, canonical arg, shape and the sources' keys) that is the same in every process.
 * Source locations are never part of a node; graphs keep them in a side table.
 */
import { KilnError } from '../util/errors';
import { hashFields } from '../util/hash';
import { encodeArg } from './args';
import { DTYPE_SHORT, roundTo, type DType } from './dtype';
import { inferOp, type Hint, type TypeInfo } from './infer';
import type { Arg, Op, OpArgs } from './ops';
import { dimToJSON, shapeStr, type Dim } from './sym';

const FACTORY = Symbol('kiln.node.factory');

/** An immutable IR node. Build nodes with `NodeTable.make`. */
export class Node implements TypeInfo {
  readonly op: Op;
  readonly dtype: DType;
  readonly src: readonly Node[];
  readonly arg: Arg;
  readonly shape: readonly Dim[];
  /** Position in its table's creation order (sources always have smaller ids). */
  readonly id: number;
  /** @internal the table that interned this node */
  readonly table: NodeTable;
  #key: string | undefined;

  /** @internal use NodeTable.make */
  constructor(token: typeof FACTORY, table: NodeTable, id: number, op: Op, dtype: DType, src: readonly Node[], arg: Arg, shape: readonly Dim[]) {
    if (token !== FACTORY) throw new KilnError('KILN_INTERNAL', 'nodes are created by NodeTable.make');
    this.op = op;
    this.dtype = dtype;
    this.src = src;
    this.arg = arg;
    this.shape = shape;
    this.id = id;
    this.table = table;
    Object.defineProperty(this, 'table', { enumerable: false }); // keep printouts and equality checks structural
    Object.freeze(this);
  }

  /** The arg, typed for `op` (throws if this node is another op). */
  argOf<O extends Op>(op: O): OpArgs[O] {
    if (this.op !== op) throw new KilnError('KILN_INTERNAL', `expected a ${op} node, got ${this.op}`);
    return this.arg as OpArgs[O];
  }

  /**
   * Structural sha256 key: equal for structurally equal nodes in any table or process.
   * Computed on first use, iteratively, so deep chains cannot overflow the stack.
   */
  get key(): string {
    if (this.#key !== undefined) return this.#key;
    const stack: Node[] = [this];
    while (stack.length) {
      const n = stack[stack.length - 1];
      const pending = n.src.filter((s) => s.#key === undefined);
      if (pending.length) {
        stack.push(...pending);
        continue;
      }
      stack.pop();
      n.#key ??= hashFields([
        ['op', n.op],
        ['dtype', n.dtype],
        ['arg', JSON.stringify(encodeArg(n.op, n.arg))],
        ['shape', JSON.stringify(n.shape.map(dimToJSON))],
        ['src', n.src.map((s) => s.#key).join(',')],
      ]);
    }
    return this.#key as unknown as string; // set by the loop above (TS cannot see through #key writes on `n`)
  }

  /** `ADD f32[s0,768]` */
  toString(): string {
    return `${this.op} ${DTYPE_SHORT[this.dtype]}${shapeStr(this.shape)}`;
  }
}

function deepFreeze<T>(x: T): T {
  if (Array.isArray(x)) {
    x.forEach(deepFreeze);
    Object.freeze(x);
  }
  return x;
}

function copyArg(arg: Arg): Arg {
  // Arrays are copied before freezing so that a caller's array is never frozen or aliased.
  return Array.isArray(arg) ? deepFreeze(arg.map((a) => (Array.isArray(a) ? [...a] : a))) : arg;
}

/**
 * Creates and interns nodes. Give each trace or rewrite a table and pass it explicitly;
 * nodes from another table are re-interned here on use, so mixing tables stays correct.
 */
export class NodeTable {
  readonly #interned = new Map<string, Node>();
  readonly #adopted = new WeakMap<Node, Node>();
  #count = 0;

  /** Number of distinct nodes created. */
  get size(): number {
    return this.#count;
  }

  /**
   * The node `op(src; arg)`, inferring dtype and shape (see `inferOp`; `hint` supplies
   * what sources do not imply). Throws ShapeError for invalid operands. CONST values are
   * rounded to the node's dtype, so equal constants intern to one node.
   */
  make<O extends Op>(op: O, src: readonly Node[], arg: OpArgs[O], hint: Hint = {}): Node {
    const srcs = src.map((s) => (s.table === this ? s : this.adopt(s)));
    const info = inferOp(op, srcs, arg, hint);
    let a: Arg = copyArg(arg);
    if (op === 'CONST') a = roundTo(info.dtype, arg as number);
    const shape = deepFreeze([...info.shape]);
    const internKey = `${op}|${info.dtype}|${JSON.stringify(encodeArg(op, a))}|${JSON.stringify(shape.map(dimToJSON))}|${srcs.map((s) => s.id).join(',')}`;
    const hit = this.#interned.get(internKey);
    if (hit) return hit;
    const node = new Node(FACTORY, this, this.#count++, op, info.dtype, Object.freeze(srcs), a, shape);
    this.#interned.set(internKey, node);
    return node;
  }

  /** The equal node of this table for a node built by another table. */
  adopt(n: Node): Node {
    if (n.table === this) return n;
    const done = this.#adopted.get(n);
    if (done) return done;
    // Iterative post-order: imported graphs may be deep.
    const stack: Node[] = [n];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const pending = top.src.filter((s) => s.table !== this && !this.#adopted.has(s));
      if (pending.length) {
        stack.push(...pending);
        continue;
      }
      stack.pop();
      if (this.#adopted.has(top)) continue;
      const src = top.src.map((s) => (s.table === this ? s : (this.#adopted.get(s) as Node)));
      const hint: Hint = { dtype: top.dtype, shape: top.shape };
      this.#adopted.set(top, this.make(top.op, src, top.arg, top.op === 'CONST' ? { dtype: top.dtype } : hint));
    }
    return this.#adopted.get(n) as Node;
  }
}
