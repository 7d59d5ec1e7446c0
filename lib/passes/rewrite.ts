/**
 * The one rewrite driver (tinygrad's PatternMatcher + graph_rewrite): a pass is a list of
 * `(pattern, rewrite)` rules; `graphRewrite` rebuilds the graph bottom-up through its node
 * table (so equal nodes intern to one: CSE for free) and applies the rules at every node
 * until none fires. Rewrites must keep each node's dtype and shape.
 */
import { KilnError } from '../util/errors';
import { toposort, type DType, type Graph, type Node, type Op, type Site } from '../ir';

/** A structural pattern over nodes. Omitted fields match anything. */
export interface Pattern {
  readonly op?: Op | readonly Op[];
  readonly dtype?: DType | readonly DType[];
  /** Sources, positionally (the node must have exactly this many). */
  readonly src?: readonly Pattern[];
  /** Also try the two sources swapped (commutative binary ops). */
  readonly commutative?: boolean;
  /** Bind the matched node under this name. */
  readonly name?: string;
  /** Extra predicate on the node. */
  readonly where?: (n: Node) => boolean;
}

/** Named nodes bound by a match; `root` is the node the rule was tried on. */
export type Match = Readonly<Record<string, Node>> & { readonly root: Node };

/** A rewrite rule: when `pattern` matches, `rewrite` returns the replacement (or undefined). */
export interface Rule {
  readonly name: string;
  readonly pattern: Pattern;
  readonly rewrite: (m: Match, g: Graph) => Node | undefined;
}

const oneOf = <T>(want: T | readonly T[] | undefined, x: T): boolean =>
  want === undefined || (Array.isArray(want) ? (want as readonly T[]).includes(x) : want === x);

function matchInto(p: Pattern, n: Node, out: Record<string, Node>): boolean {
  if (!oneOf(p.op, n.op) || !oneOf(p.dtype, n.dtype)) return false;
  if (p.where && !p.where(n)) return false;
  if (p.name) {
    if (out[p.name] && out[p.name] !== n) return false; // a repeated name must bind the same node
    out[p.name] = n;
  }
  if (!p.src) return true;
  if (p.src.length !== n.src.length) return false;
  const orders = p.commutative && n.src.length === 2 ? [[0, 1], [1, 0]] : [n.src.map((_, i) => i)];
  for (const order of orders) {
    const trial = { ...out };
    if (p.src.every((sp, i) => matchInto(sp, n.src[order[i]], trial))) {
      Object.assign(out, trial);
      return true;
    }
  }
  return false;
}

/** Match `p` at `n`, returning the bindings or undefined. */
export function match(p: Pattern, n: Node): Match | undefined {
  const out: Record<string, Node> = {};
  return matchInto(p, n, out) ? ({ ...out, root: n } as Match) : undefined;
}

/** Rebuild `n` over new sources (same op, arg and dtype) through `g.table`. */
export function remake(g: Graph, n: Node, src: readonly Node[]): Node {
  if (src.every((s, i) => s === n.src[i])) return n;
  return g.table.make(n.op, src, n.arg, { dtype: n.dtype });
}

// Rules that undo each other would recurse forever; no sane rule set nests this deep.
const MAX_REWRITE_DEPTH = 2000;

/**
 * Apply `rules` everywhere in `graph`, bottom-up, to a fixed point. Returns a graph with
 * rewritten outputs; inputs, constants and symbols are kept, sites follow their nodes.
 */
export function graphRewrite(graph: Graph, rules: readonly Rule[]): Graph {
  const done = new Map<Node, Node>();
  // Settle a node: settle its sources, rebuild it over them, and fire rules until none
  // applies; a rule's result may hold new nodes, which are settled the same way.
  const settle = (n: Node, depth: number): Node => {
    const known = done.get(n);
    if (known) return known;
    if (depth > MAX_REWRITE_DEPTH) throw new KilnError('KILN_INTERNAL', `rewrite rules keep firing at ${n}`);
    const src = n.src.map((s) => done.get(s) ?? settle(s, depth + 1));
    const rebuilt = remake(graph, n, src);
    const fired = fire(rebuilt);
    const result = fired ? settle(fired.node, depth + 1) : rebuilt;
    done.set(n, result);
    done.set(rebuilt, result);
    return result;
  };
  const fire = (n: Node): { node: Node; rule: string } | undefined => {
    for (const r of rules) {
      const m = match(r.pattern, n);
      if (!m) continue;
      const out = r.rewrite(m, graph);
      if (out && out !== n) {
        if (out.dtype !== n.dtype || out.shape.length !== n.shape.length) {
          throw new KilnError('KILN_INTERNAL', `rule ${r.name} changed the type of ${n} to ${out}`);
        }
        return { node: out, rule: r.name };
      }
    }
    return undefined;
  };
  // Iterative outer walk in topological order keeps recursion shallow on deep graphs.
  for (const n of toposort(graph)) settle(n, 0);
  const outputs = graph.outputs.map((o) => done.get(o) as Node);
  return withOutputs(graph, outputs, done);
}

/** A graph with new outputs; sites are carried over to the nodes that replaced theirs. */
export function withOutputs(graph: Graph, outputs: readonly Node[], replaced: ReadonlyMap<Node, Node> = new Map()): Graph {
  const g = { ...graph, outputs };
  const live = new Set(toposort(g));
  const sites = new Map<Node, Site>();
  for (const [n, site] of graph.sites) {
    const to = replaced.get(n) ?? n;
    if (live.has(to) && !sites.has(to)) sites.set(to, site);
  }
  const usedConsts = new Set([...live].filter((n) => n.op === 'TENSOR_CONST').map((n) => n.arg as string));
  const constants = new Map([...graph.constants].filter(([k]) => usedConsts.has(k)));
  return { ...g, sites, constants };
}
