/**
 * A traced program: input nodes, output nodes, how to rebuild the user's return value,
 * the constant table, how symbolic dims bind to input dims, and (as a side table that is
 * never part of identity) the user source location of each node. Also toposort and the
 * printer.
 */
import { ArgumentError } from '../util/errors';
import { DTYPE_SHORT, type DType, type Storage } from './dtype';
import { encodeArg } from './args';
import type { Node, NodeTable } from './node';
import { dimStr, shapeStr, type Dim } from './sym';

/** A location in user source, recorded per traced node. */
export interface Site {
  readonly file: string;
  readonly line: number;
  readonly col: number;
}

/** How to rebuild the traced function's return value from the output list. */
export type OutputStructure =
  | { readonly kind: 'tensor'; readonly index: number }
  | { readonly kind: 'array'; readonly items: readonly OutputStructure[] }
  | { readonly kind: 'object'; readonly entries: readonly (readonly [string, OutputStructure])[] };

/** A concrete tensor captured into a graph (TENSOR_CONST refers to it by `key`). */
export interface Constant {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Storage in the dtype's typed array (f16/bf16 as raw bits). */
  readonly data: Storage;
}

/**
 * A constant that came from a tensor which existed before the trace began: captured from
 * the traced function's closure (weights held in a variable, say), not made by its body.
 * Its value is invisible to a key computed without tracing, so such graphs are never
 * published as bundles (docs/BUNDLES.md, "What the key does not see").
 */
export interface CapturedTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Its entry in `Graph.constants`. */
  readonly key: string;
}

/** Where a symbol's value comes from: input `input`, dim `dim`. */
export interface DimSource {
  readonly input: number;
  readonly dim: number;
}

/**
 * A symbol and every input dim that carries it (duck sizing: dynamic dims with equal
 * example sizes share a symbol). At run time all of them must agree; the first defines it.
 */
export interface SymbolBinding {
  readonly name: string;
  readonly sources: readonly DimSource[];
}

/**
 * A condition on dynamic sizes that the trace relied on, checked when inputs bind the
 * symbols: `dim` (an expression of symbols) lies in [min, max]. Slicing a dynamic dim is
 * exact only where its bounds fall inside it (kiln has no symbolic min/max to clamp with).
 */
export interface ShapeGuard {
  readonly dim: Dim;
  readonly min: number;
  readonly max?: number;
  /** The op that needs it, e.g. `slice(0, 0, 2)`. */
  readonly op: string;
  /** Its user call site, in the traced graph (bundles do not carry it, as they carry no sites). */
  readonly site?: Site;
}

/** A traced program. Nodes are immutable; the maps are owned by the graph. */
export interface Graph {
  /** INPUT nodes, in argument order (input i has arg i). */
  readonly inputs: readonly Node[];
  /** Output nodes, flattened in the order of `outputStructure`. */
  readonly outputs: readonly Node[];
  readonly outputStructure: OutputStructure;
  /** Captured tensors by content key. */
  readonly constants: ReadonlyMap<string, Constant>;
  readonly symbols: readonly SymbolBinding[];
  /** Conditions on the dynamic sizes (absent: none). */
  readonly guards?: readonly ShapeGuard[];
  /** User call site of each traced node (absent for nodes kiln made itself). */
  readonly sites: ReadonlyMap<Node, Site>;
  /** Sorted unique user source files that traced ops were reached through (the bundle's source guards). */
  readonly files: readonly string[];
  /** The table that interned the nodes; passes build rewritten nodes with it. */
  readonly table: NodeTable;
  /** Set by the tracer: constants from tensors captured from the function's closure (see CapturedTensor). */
  readonly captured?: readonly CapturedTensor[];
}

/**
 * All nodes reachable from the graph, sources before users: inputs first in order, then
 * each output's ancestors depth-first, sources left to right. Deterministic, iterative.
 */
export function toposort(g: Pick<Graph, 'inputs' | 'outputs'>): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>();
  const visit = (root: Node): void => {
    if (seen.has(root)) return;
    const stack: [Node, number][] = [[root, 0]];
    seen.add(root);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [n, i] = top;
      if (i < n.src.length) {
        top[1]++;
        const s = n.src[i];
        if (!seen.has(s)) {
          seen.add(s);
          stack.push([s, 0]);
        }
      } else {
        stack.pop();
        order.push(n);
      }
    }
  };
  g.inputs.forEach(visit);
  g.outputs.forEach(visit);
  return order;
}

/** Sorted unique files of a site table. */
export function siteFiles(sites: ReadonlyMap<Node, Site>): string[] {
  return [...new Set([...sites.values()].map((s) => s.file))].sort();
}

/** Output indices referenced by a structure, in order. */
export function structureIndices(s: OutputStructure): number[] {
  switch (s.kind) {
    case 'tensor':
      return [s.index];
    case 'array':
      return s.items.flatMap(structureIndices);
    case 'object':
      return s.entries.flatMap(([, v]) => structureIndices(v));
    default:
      return s satisfies never;
  }
}

/** Rebuild a return value (tensor, array or object) from a flat list of outputs. */
export function rebuildStructure<T>(s: OutputStructure, outputs: readonly T[]): T | unknown[] | Record<string, unknown> {
  switch (s.kind) {
    case 'tensor':
      if (s.index >= outputs.length) throw new ArgumentError('KILN_BAD_ARGUMENT', `output ${s.index} missing`);
      return outputs[s.index];
    case 'array':
      return s.items.map((i) => rebuildStructure(i, outputs));
    case 'object':
      return Object.fromEntries(s.entries.map(([k, v]) => [k, rebuildStructure(v, outputs)]));
    default:
      return s satisfies never;
  }
}

function argText(n: Node, names: Map<Node, string>): string {
  if (n.op === 'TENSOR_CONST') return (n.arg as string).slice(0, 12);
  const j = encodeArg(n.op, n.arg);
  const srcs = n.src.map((s) => names.get(s) ?? '?');
  return [...srcs, ...(j === null ? [] : [JSON.stringify(j)])].join(', ');
}

/**
 * Readable text of a graph, one node per line in topological order:
 * `%3 = ADD f32[s0,768] %1, %2`, then the outputs and symbol bindings. With `sites`,
 * each traced node ends with its user call site.
 */
export function printGraph(g: Graph, opts: { sites?: boolean } = {}): string {
  const names = new Map<Node, string>();
  const lines: string[] = [];
  for (const n of toposort(g)) {
    const name = `%${names.size}`;
    names.set(n, name);
    let line = `${name} = ${n.op} ${DTYPE_SHORT[n.dtype]}${shapeStr(n.shape)} ${argText(n, names)}`.trimEnd();
    const site = opts.sites ? g.sites.get(n) : undefined;
    if (site) line += `    # ${site.file}:${site.line}:${site.col}`;
    lines.push(line);
  }
  lines.push(`return ${g.outputs.map((o) => names.get(o)).join(', ')}`);
  for (const s of g.symbols) {
    lines.push(`symbol ${s.name} = ${s.sources.map((d) => `input${d.input}.shape[${d.dim}]`).join(' = ')}`);
  }
  return lines.join('\n');
}

/** `f32[s0,768]` of a node. */
export function typeStr(n: Node): string {
  return `${DTYPE_SHORT[n.dtype]}[${n.shape.map(dimStr).join(',')}]`;
}
