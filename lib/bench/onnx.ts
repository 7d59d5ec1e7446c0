/**
 * A small ONNX model writer: just enough of the protobuf wire format and of onnx.proto to
 * describe the benchmark models to onnxruntime, with no protobuf library.
 *
 * Wire format: each field is a varint key `(fieldNumber << 3) | wireType` followed by a varint
 * (type 0), 4 little-endian bytes (type 5) or a varint length and that many bytes (type 2,
 * used for strings, bytes and nested messages). onnx.proto is proto2, so repeated scalars are
 * written unpacked (one key per element), which every parser accepts.
 *
 * Field numbers used (onnx.proto): ModelProto ir_version=1 producer_name=2 producer_version=3
 * graph=7 opset_import=8; OperatorSetIdProto domain=1 version=2; GraphProto node=1 name=2
 * initializer=5 input=11 output=12; NodeProto input=1 output=2 name=3 op_type=4 attribute=5
 * domain=7; AttributeProto name=1 f=2 i=3 s=4 floats=7 ints=8 type=20; TensorProto dims=1
 * data_type=2 name=8 raw_data=9; ValueInfoProto name=1 type=2; TypeProto tensor_type=1;
 * TypeProto.Tensor elem_type=1 shape=2; TensorShapeProto dim=1; Dimension dim_value=1
 * dim_param=2.
 */

// ─── protobuf wire encoding ──────────────────────────────────────────────────────────────────

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const utf8 = new TextEncoder();

/** Accumulates the encoded fields of one message. */
class Message {
  private readonly chunks: Uint8Array[] = [];
  private size = 0;

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.size += bytes.length;
  }

  private key(field: number, wire: number): void {
    this.push(varint((field << 3) | wire));
  }

  /** An int32/int64/enum field (negative values take 10 bytes, as protobuf's int64 does). */
  int(field: number, value: number | bigint): this {
    this.key(field, WIRE_VARINT);
    this.push(varint(value));
    return this;
  }

  float(field: number, value: number): this {
    this.key(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.key(field, WIRE_LEN);
    this.push(varint(value.length));
    this.push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  message(field: number, value: Message): this {
    return this.bytes(field, value.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** Base-128 varint of a 64-bit integer; negatives as their two's complement. */
export function varint(value: number | bigint): Uint8Array {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new RangeError(`onnx: ${value} is not an integer`);
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

// ─── ONNX graph builder ──────────────────────────────────────────────────────────────────────

/** Element types the benchmarks need, with their TensorProto.DataType numbers. */
export const ONNX_DTYPES = { float32: 1, int32: 6, int64: 7, bool: 9 } as const;
export type OnnxDType = keyof typeof ONNX_DTYPES;

/** Tensor data for an initializer; the dtype follows from the array type. */
export type OnnxData = Float32Array | Int32Array | BigInt64Array | Uint8Array;

/** Forces a FLOAT attribute for a value that happens to be an integer (e.g. `alpha: float(1)`). */
export interface FloatAttr {
  readonly float: number;
}
export const float = (value: number): FloatAttr => ({ float: value });

/**
 * An attribute value: an integer is INT, any other number FLOAT, a string STRING, a number[]
 * INTS; `float(x)` forces FLOAT.
 */
export type AttrValue = number | string | number[] | FloatAttr;

/** AttributeProto.AttributeType numbers. */
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

interface NodeSpec {
  opType: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  domain: string;
}

interface ValueSpec {
  name: string;
  dtype: OnnxDType;
  shape: (number | string)[];
}

interface InitSpec {
  name: string;
  data: OnnxData;
  shape: number[];
}

/**
 * Builds one ONNX graph. Names are checked as they are used, so a typo fails here rather
 * than as an obscure onnxruntime load error.
 *
 * ```ts
 * const g = new OnnxGraph('mlp');
 * const x = g.input('x', 'float32', ['batch', 4]);
 * const w = g.initializer('w', weights, [4, 8]);
 * const y = g.node('Gelu', [g.node('MatMul', [x, w])]);
 * g.output(y, 'float32', ['batch', 8]);
 * const bytes = g.toBytes();
 * ```
 */
export class OnnxGraph {
  private readonly inputs: ValueSpec[] = [];
  private readonly outputs: ValueSpec[] = [];
  private readonly inits: InitSpec[] = [];
  private readonly nodes: NodeSpec[] = [];
  private readonly defined = new Set<string>();
  private counter = 0;

  constructor(readonly name = 'kiln_bench') {}

  private define(name: string): string {
    if (this.defined.has(name)) throw new Error(`onnx: value '${name}' is defined twice`);
    this.defined.add(name);
    return name;
  }

  /** A graph input; string dims are symbolic (dim_param). */
  input(name: string, dtype: OnnxDType, shape: (number | string)[]): string {
    this.inputs.push({ name: this.define(name), dtype, shape: [...shape] });
    return name;
  }

  /** A constant tensor stored in the model. */
  initializer(name: string, data: OnnxData, shape: number[]): string {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`onnx: initializer '${name}' has ${data.length} values for shape [${shape}]`);
    this.inits.push({ name: this.define(name), data, shape: [...shape] });
    return name;
  }

  /** A float32 scalar or small constant, named automatically. */
  constant(values: number | number[], shape: number[] = []): string {
    const data = Float32Array.from(typeof values === 'number' ? [values] : values);
    return this.initializer(`const_${this.counter++}`, data, shape);
  }

  /** An int64 constant (shapes, axes), named automatically. */
  int64s(values: number[]): string {
    return this.initializer(`ints_${this.counter++}`, BigInt64Array.from(values.map(BigInt)), [values.length]);
  }

  /** Adds a node with one output and returns that output's name. */
  node(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain = ''): string {
    return this.nodeN(opType, inputs, 1, attrs, domain)[0];
  }

  /** Adds a node with `outputs` outputs and returns their names. */
  nodeN(opType: string, inputs: string[], outputs: number, attrs: Record<string, AttrValue> = {}, domain = ''): string[] {
    for (const i of inputs) {
      // '' marks an omitted optional input in ONNX.
      if (i !== '' && !this.defined.has(i)) throw new Error(`onnx: ${opType} reads undefined value '${i}'`);
    }
    const id = this.counter++;
    const names = Array.from({ length: outputs }, (_, k) => this.define(`${opType.toLowerCase()}_${id}${outputs > 1 ? `_${k}` : ''}`));
    this.nodes.push({ opType, inputs: [...inputs], outputs: names, attrs: { ...attrs }, domain });
    return names;
  }

  /** Marks a value as a graph output. */
  output(name: string, dtype: OnnxDType, shape: (number | string)[]): void {
    if (!this.defined.has(name)) throw new Error(`onnx: output '${name}' is not defined`);
    this.outputs.push({ name, dtype, shape: [...shape] });
  }

  /** Serializes a ModelProto. Opset 20 has Gelu and LayerNormalization; IR 9 goes with it. */
  toBytes(opts: { opset?: number; irVersion?: number; extraOpsets?: Record<string, number> } = {}): Uint8Array {
    const { opset = 20, irVersion = 9, extraOpsets = {} } = opts;
    const graph = new Message();
    for (const n of this.nodes) graph.message(1, encodeNode(n));
    graph.string(2, this.name);
    for (const t of this.inits) graph.message(5, encodeTensor(t));
    for (const v of this.inputs) graph.message(11, encodeValueInfo(v));
    for (const v of this.outputs) graph.message(12, encodeValueInfo(v));

    const model = new Message().int(1, irVersion).string(2, 'kiln-bench').string(3, '1');
    model.message(7, graph);
    model.message(8, new Message().string(1, '').int(2, opset));
    for (const [domain, version] of Object.entries(extraOpsets)) model.message(8, new Message().string(1, domain).int(2, version));
    return model.finish();
  }
}

function encodeNode(n: NodeSpec): Message {
  const m = new Message();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.outputs[0]);
  m.string(4, n.opType);
  for (const [name, value] of Object.entries(n.attrs)) m.message(5, encodeAttr(name, value));
  if (n.domain !== '') m.string(7, n.domain);
  return m;
}

function encodeAttr(name: string, value: AttrValue): Message {
  const m = new Message().string(1, name);
  if (typeof value === 'string') return m.string(4, value).int(20, ATTR.STRING);
  if (Array.isArray(value)) {
    for (const v of value) m.int(8, v);
    return m.int(20, ATTR.INTS);
  }
  if (typeof value === 'number' && Number.isInteger(value)) return m.int(3, value).int(20, ATTR.INT);
  const f = typeof value === 'number' ? value : value.float;
  return m.float(2, f).int(20, ATTR.FLOAT);
}

function dtypeOf(data: OnnxData): number {
  if (data instanceof Float32Array) return ONNX_DTYPES.float32;
  if (data instanceof Int32Array) return ONNX_DTYPES.int32;
  if (data instanceof BigInt64Array) return ONNX_DTYPES.int64;
  return ONNX_DTYPES.bool;
}

function encodeTensor(t: InitSpec): Message {
  const m = new Message();
  for (const d of t.shape) m.int(1, d);
  m.int(2, dtypeOf(t.data));
  m.string(8, t.name);
  // raw_data is little-endian fixed width; typed arrays are little-endian on every platform Node runs on.
  m.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return m;
}

function encodeValueInfo(v: ValueSpec): Message {
  const shape = new Message();
  for (const d of v.shape) {
    shape.message(1, typeof d === 'number' ? new Message().int(1, d) : new Message().string(2, d));
  }
  const tensorType = new Message().int(1, ONNX_DTYPES[v.dtype]).message(2, shape);
  return new Message().string(1, v.name).message(2, new Message().message(1, tensorType));
}
