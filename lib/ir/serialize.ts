/**
 * Graph serialization: a JSON-able, versioned form (`{format: 'kiln-graph', version: 1}`)
 * that round-trips exactly, is strictly validated on the way in (every malformed input is
 * a FormatError, nothing is ever eval'd), and defines `graphKey`: sha256 over the
 * canonical form minus call sites and file paths, identical across processes and machines.
 */
import { FormatError, KilnError } from '../util/errors';
import { hashFields, sha256Hex } from '../util/hash';
import { decodeArg, encodeArg, type ArgJSON } from './args';
import { allocStorage, isDType, ITEMSIZE, type DType, type Storage } from './dtype';
import { siteFiles, structureIndices, toposort, type Constant, type Graph, type OutputStructure, type ShapeGuard, type Site, type SymbolBinding } from './graph';
import { NodeTable, type Node } from './node';
import { isOp } from './ops';
import { dimEq, dimStr, dimToJSON, parseDim, shapeEq, shapeStr, sym, Sym, type Dim } from './sym';

/** The serialized graph format version this kiln reads and writes. */
export const GRAPH_FORMAT_VERSION = 1;

/** One node: sources are indices of earlier nodes. */
export interface SerializedNode {
  op: string;
  dtype: string;
  src: number[];
  arg: ArgJSON;
  shape: (number | string)[];
}

/** The JSON form of a graph. */
export interface SerializedGraph {
  format: 'kiln-graph';
  version: number;
  nodes: SerializedNode[];
  inputs: number[];
  outputs: number[];
  outputStructure: OutputStructure;
  symbols: { name: string; sources: [number, number][] }[];
  /** Conditions on the dynamic sizes (absent: none). */
  guards?: { dim: number | string; min: number; max?: number; op: string }[];
  constants: { key: string; dtype: string; shape: number[]; data: string }[];
  files: string[];
  /** [node index, file index, line, col] */
  sites: [number, number, number, number][];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Little-endian bytes of a storage array (a view, not a copy, on little-endian hosts). */
export function storageBytes(dtype: DType, s: Storage): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
  const size = ITEMSIZE[dtype];
  const out = new Uint8Array(s.length * size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < s.length; i++) {
    if (size === 1) out[i] = s[i];
    else if (size === 2) view.setUint16(i * 2, s[i], true);
    else if (dtype === 'float32') view.setFloat32(i * 4, s[i], true);
    else view.setInt32(i * 4, s[i], true);
  }
  return out;
}

/** Storage array from little-endian bytes. */
export function bytesStorage(dtype: DType, bytes: Uint8Array): Storage {
  const size = ITEMSIZE[dtype];
  const out = allocStorage(dtype, bytes.length / size);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes); // copy: `bytes` may be unaligned for the element type
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) {
    if (size === 1) out[i] = bytes[i];
    else if (size === 2) out[i] = view.getUint16(i * 2, true);
    else if (dtype === 'float32') out[i] = view.getFloat32(i * 4, true);
    else out[i] = view.getInt32(i * 4, true);
  }
  return out;
}

/** Content key of a constant tensor: sha256 over dtype, shape and little-endian bytes. */
export function constantKey(dtype: DType, shape: readonly number[], data: Storage): string {
  return hashFields([
    ['dtype', dtype],
    ['shape', JSON.stringify(shape)],
    ['data', storageBytes(dtype, data)],
  ]);
}

/** The JSON-able form of a graph (nodes in canonical topological order). */
export function serializeGraph(g: Graph): SerializedGraph {
  return serialize(g, true);
}

function serialize(g: Graph, withData: boolean): SerializedGraph {
  const order = toposort(g);
  const index = new Map<Node, number>(order.map((n, i) => [n, i]));
  const nodes = order.map((n) => ({
    op: n.op,
    dtype: n.dtype,
    src: n.src.map((s) => index.get(s) as number),
    arg: encodeArg(n.op, n.arg),
    shape: n.shape.map(dimToJSON),
  }));
  const constKeys = [...new Set(order.filter((n) => n.op === 'TENSOR_CONST').map((n) => n.arg as string))].sort();
  const constants = constKeys.map((key) => {
    const c = g.constants.get(key);
    if (!c) throw new FormatError('KILN_BAD_GRAPH', `graph has no data for constant ${key}`);
    const data = withData ? Buffer.from(storageBytes(c.dtype, c.data)).toString('base64') : '';
    return { key, dtype: c.dtype, shape: [...c.shape], data };
  });
  const siteList = order.flatMap((n) => {
    const s = g.sites.get(n);
    return s ? [[index.get(n) as number, s] as const] : [];
  });
  const files = [...new Set([...g.files, ...siteFiles(new Map(siteList.map(([i, s]) => [order[i], s])))])].sort();
  return {
    format: 'kiln-graph',
    version: GRAPH_FORMAT_VERSION,
    nodes,
    inputs: g.inputs.map((n) => index.get(n) as number),
    outputs: g.outputs.map((n) => index.get(n) as number),
    outputStructure: g.outputStructure,
    symbols: g.symbols.map((s) => ({ name: s.name, sources: s.sources.map((d) => [d.input, d.dim] as [number, number]) })),
    ...(g.guards?.length ? { guards: g.guards.map((x) => ({ dim: dimToJSON(x.dim), min: x.min, ...(x.max !== undefined ? { max: x.max } : {}), op: x.op })) } : {}),
    constants,
    files,
    sites: siteList.map(([i, s]) => [i, files.indexOf(s.file), s.line, s.col]),
  };
}

/**
 * Canonical key of a graph: sha256 over its serialized form without sites, file paths
 * and constant bytes (constants are named by their content hash already).
 */
export function graphKey(g: Graph): string {
  const { format, version, nodes, inputs, outputs, outputStructure, symbols, guards, constants } = serialize(g, false);
  const consts = constants.map(({ key, dtype, shape }) => ({ key, dtype, shape }));
  return sha256Hex(JSON.stringify({ format, version, nodes, inputs, outputs, outputStructure, symbols, guards, constants: consts }));
}

function bad(msg: string): never {
  throw new FormatError('KILN_BAD_GRAPH', `invalid kiln graph: ${msg}`);
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function arr(x: unknown, what: string): unknown[] {
  return Array.isArray(x) ? x : bad(`${what} must be an array`);
}

function idx(x: unknown, limit: number, what: string): number {
  return Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) < limit ? (x as number) : bad(`${what} ${JSON.stringify(x)} is out of range [0, ${limit})`);
}

function structure(x: unknown, n: number): OutputStructure {
  if (!isObj(x)) return bad('outputStructure must be an object');
  if (x.kind === 'tensor') return { kind: 'tensor', index: idx(x.index, n, 'output index') };
  if (x.kind === 'array') return { kind: 'array', items: arr(x.items, 'outputStructure items').map((i) => structure(i, n)) };
  if (x.kind === 'object') {
    const entries = arr(x.entries, 'outputStructure entries').map((e) => {
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string') return bad('object entries are [key, structure]');
      return [e[0], structure(e[1], n)] as const;
    });
    return { kind: 'object', entries };
  }
  return bad(`unknown outputStructure kind ${JSON.stringify(x.kind)}`);
}

function constantsOf(x: unknown): Map<string, Constant> {
  const out = new Map<string, Constant>();
  for (const c of arr(x, 'constants')) {
    if (!isObj(c) || typeof c.key !== 'string' || typeof c.data !== 'string') return bad('each constant needs key, dtype, shape, data');
    if (!isDType(c.dtype)) return bad(`constant dtype ${JSON.stringify(c.dtype)} is unknown`);
    const shape = arr(c.shape, 'constant shape').map((d) => (Number.isSafeInteger(d) && (d as number) >= 0 ? (d as number) : bad(`constant dim ${JSON.stringify(d)}`)));
    const bytes = Buffer.from(c.data, 'base64');
    const n = shape.reduce((a, b) => a * b, 1);
    if (bytes.length !== n * ITEMSIZE[c.dtype]) bad(`constant ${c.key.slice(0, 12)} has ${bytes.length} bytes, expected ${n * ITEMSIZE[c.dtype]}`);
    const data = bytesStorage(c.dtype, new Uint8Array(bytes));
    if (constantKey(c.dtype, shape, data) !== c.key) bad(`constant ${c.key.slice(0, 12)} does not match its content hash`);
    if (out.has(c.key)) bad(`constant ${c.key.slice(0, 12)} appears twice`);
    out.set(c.key, { dtype: c.dtype, shape, data });
  }
  return out;
}

function nodeOf(table: NodeTable, j: unknown, i: number, nodes: readonly Node[], constants: ReadonlyMap<string, Constant>): Node {
  if (!isObj(j)) return bad(`node ${i} must be an object`);
  if (!isOp(j.op)) return bad(`node ${i} has unknown op ${JSON.stringify(j.op)}`);
  if (!isDType(j.dtype)) return bad(`node ${i} has unknown dtype ${JSON.stringify(j.dtype)}`);
  const op = j.op;
  const src = arr(j.src, `node ${i} src`).map((s) => nodes[idx(s, i, `node ${i} source index`)]);
  const shape: Dim[] = arr(j.shape, `node ${i} shape`).map((d) => {
    if (typeof d !== 'number' && typeof d !== 'string') return bad(`node ${i} has dim ${JSON.stringify(d)}`);
    try {
      return parseDim(d);
    } catch {
      return bad(`node ${i} has dim ${JSON.stringify(d)}`);
    }
  });
  let node: Node;
  try {
    const arg = decodeArg(op, j.arg);
    node = table.make(op, src, arg, { dtype: j.dtype, shape: op === 'CONST' ? [] : shape });
  } catch (e) {
    if (e instanceof KilnError) bad(`node ${i} (${op}): ${e.message}`);
    throw e;
  }
  if (!shapeEq(node.shape, shape)) bad(`node ${i} (${op}) declares shape ${shapeStr(shape)} but its sources give ${shapeStr(node.shape)}`);
  if (op === 'TENSOR_CONST') {
    const c = constants.get(node.arg as string);
    if (!c) bad(`node ${i} refers to a missing constant`);
    if (c.dtype !== node.dtype || !shapeEq(c.shape, node.shape)) bad(`node ${i} does not match its constant's dtype or shape`);
  }
  if (op === 'CONST' && !Object.is(node.arg, decodeArg('CONST', j.arg))) bad(`node ${i} CONST value is not representable in ${node.dtype}`);
  return node;
}

/** Rebuild a graph from its JSON form, validating everything (FormatError otherwise). */
export function deserializeGraph(obj: unknown): Graph {
  if (!isObj(obj) || obj.format !== 'kiln-graph') return bad('not a kiln graph (format must be "kiln-graph")');
  if (obj.version !== GRAPH_FORMAT_VERSION) {
    throw new FormatError('KILN_GRAPH_VERSION', `unsupported kiln graph version ${JSON.stringify(obj.version)}; this kiln reads version ${GRAPH_FORMAT_VERSION}`);
  }
  const constants = constantsOf(obj.constants);
  const table = new NodeTable();
  const nodes: Node[] = [];
  const seen = new Map<Node, number>();
  arr(obj.nodes, 'nodes').forEach((j, i) => {
    const n = nodeOf(table, j, i, nodes, constants);
    if (seen.has(n)) bad(`node ${i} duplicates node ${seen.get(n)}`);
    seen.set(n, i);
    nodes.push(n);
  });
  const inputs = arr(obj.inputs, 'inputs').map((x, k) => {
    const n = nodes[idx(x, nodes.length, 'input node')];
    if (n.op !== 'INPUT' || n.arg !== k) bad(`inputs[${k}] is not INPUT ${k}`);
    return n;
  });
  const stray = nodes.find((n) => n.op === 'INPUT' && !inputs.includes(n));
  if (stray) bad(`INPUT ${String(stray.arg)} is not listed in inputs`);
  const outputs = arr(obj.outputs, 'outputs').map((x) => nodes[idx(x, nodes.length, 'output node')]);
  const outputStructure = structure(obj.outputStructure, outputs.length);
  if (structureIndices(outputStructure).join() !== outputs.map((_, i) => i).join()) bad('outputStructure must use each output once, in order');
  const symbols = symbolsOf(obj.symbols, inputs);
  const guards = guardsOf(obj.guards ?? [], symbols);
  const files = arr(obj.files, 'files').map((f) => (typeof f === 'string' ? f : bad('files must be strings')));
  const sites = new Map<Node, Site>();
  for (const s of arr(obj.sites ?? [], 'sites')) {
    if (!Array.isArray(s) || s.length !== 4) bad('each site is [node, file, line, col]');
    const [n, f, line, col] = s as unknown[];
    const okPos = Number.isSafeInteger(line) && Number.isSafeInteger(col);
    if (!okPos) bad(`site ${JSON.stringify(s)} has a bad position`);
    sites.set(nodes[idx(n, nodes.length, 'site node')], { file: files[idx(f, files.length, 'site file')], line: line as number, col: col as number });
  }
  return { inputs, outputs, outputStructure, constants, symbols, ...(guards.length ? { guards } : {}), sites, files, table };
}

function guardsOf(x: unknown, symbols: readonly SymbolBinding[]): ShapeGuard[] {
  const bound = new Set(symbols.map((s) => s.name));
  return arr(x, 'guards').map((g) => {
    if (!isObj(g) || typeof g.op !== 'string' || !Number.isSafeInteger(g.min) || (g.max !== undefined && !Number.isSafeInteger(g.max))) {
      return bad('each guard is { dim, min, max?, op } with integer bounds');
    }
    let dim: Dim;
    try {
      dim = parseDim(g.dim as number | string);
    } catch {
      return bad(`bad guard dim ${JSON.stringify(g.dim)}`);
    }
    if (typeof dim !== 'number' && dim.vars.some((v) => !bound.has(v))) bad(`guard dim ${dimStr(dim)} uses an unbound symbol`);
    return { dim, min: g.min as number, ...(g.max !== undefined ? { max: g.max as number } : {}), op: g.op };
  });
}

function symbolsOf(x: unknown, inputs: readonly Node[]): SymbolBinding[] {
  const out = arr(x, 'symbols').map((s) => {
    if (!isObj(s) || typeof s.name !== 'string') return bad('each symbol needs a name and sources');
    let v: Sym;
    try {
      v = sym(s.name);
    } catch {
      return bad(`bad symbol name ${JSON.stringify(s.name)}`);
    }
    const sources = arr(s.sources, `symbol ${s.name} sources`).map((d) => {
      if (!Array.isArray(d) || d.length !== 2) return bad(`symbol ${s.name} sources are [input, dim]`);
      const input = idx(d[0], inputs.length, `symbol ${s.name} input`);
      const dim = idx(d[1], inputs[input].shape.length, `symbol ${s.name} dim`);
      if (!dimEq(inputs[input].shape[dim], v)) bad(`symbol ${s.name} is not input ${input} dim ${dim}`);
      return { input, dim };
    });
    if (!sources.length) bad(`symbol ${s.name} has no sources`);
    return { name: s.name, sources };
  });
  const bound = new Set(out.map((s) => s.name));
  for (const n of inputs) {
    for (const d of n.shape) {
      if (d instanceof Sym) for (const v of d.vars) if (!bound.has(v)) bad(`input dim ${d} uses unbound symbol ${v}`);
    }
  }
  return out;
}

/** Parse serialized graph text; malformed or truncated JSON is a FormatError. */
export function parseGraph(text: string): Graph {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new FormatError('KILN_BAD_GRAPH', `invalid kiln graph: not valid JSON (${(e as Error).message})`);
  }
  return deserializeGraph(obj);
}
