/**
 * `kiln.build(fn, exampleInputs, { target, cacheDir })`: build the bundle a compiled function
 * would load, ahead of time and without running it — for shipping bundles inside a package
 * or for a fleet's shared cache. The bundle is the very one `kiln.compile(fn, opts)` looks up
 * for inputs of that signature: same namespace, source, signature and options, so the
 * compiled function loads it with zero traces and compiles.
 *
 * Targets: 'cpu' (this machine's CPU: its architecture and ISA features, the local C++
 * compiler), or a CUDA architecture — `sm_XY` (a cubin for compute capability X.Y),
 * `sm_XYa`, `compute_XY` (PTX, for X.Y and newer) — built with NVRTC alone, no GPU needed
 * (the engine's `bundleBackend(target)`). `kiln.compile(fn, { device: 'cuda' })` on a GPU
 * that runs it loads the bundle with zero compiles: its own target is `sm_XY`, and when that
 * key misses the store tries `fallbackTargets('sm_XY')` (`sm_XYa`, then PTX newest first).
 */
import { parseTarget } from '../cache/target';
import { bundleBackend } from '../engine/bundle-target';
import { ensureBundle, type ProgramRequest } from '../engine/store';
import type { DType } from '../ir/dtype';
import { isDType } from '../ir/dtype';
import { addonInfo } from '../runtime/native';
import { Tensor } from '../tensor/tensor';
import { ArgumentError } from '../util/errors';
import { callerRoot, COMPILE_SPEC, dynamicDims, keySignature, parameterLimit, readOptions, signatureOf, type CompileOptions, type CompileSpec } from './compile';
import { traceGraph } from './tensors';

/** An example input: a Tensor, or just its shape and dtype (no data is needed to build). */
export type ExampleInput = Tensor | { shape: readonly number[]; dtype?: DType };

/** Options of `kiln.build`. */
export interface BuildOptions {
  /** `'cpu'`, or a CUDA architecture such as `'sm_90'` (`sm_XY`, `sm_XYa`, `compute_XY`; built with NVRTC, no GPU needed). */
  target: string;
  /** Where to write the bundle (default `KILN_CACHE_DIR`, else the user cache). */
  cacheDir?: string;
  /** As in `kiln.compile` (default `fn.name`); must match the compiled function's. */
  name?: string;
  /** As in `kiln.compile`; must match the compiled function's. */
  dynamic?: CompileOptions['dynamic'];
  /** As in `kiln.compile` (values the function depends on that its source and inputs don't show); must match. */
  key?: unknown;
  /** As in `kiln.compile` (float32 matmuls on TF32 tensor cores; CUDA targets only); must match. */
  tf32?: boolean;
  /**
   * Base of relative source guards (default: the package root of the code calling build).
   * The bundle verifies where the same files sit under the root of the process loading it.
   */
  sourceRoot?: string;
}

/** What `kiln.build` made. */
export interface BuildResult {
  /** The bundle directory: `<cacheDir>/v1/<namespace>/<key[0:2]>/<key>`. */
  bundleDir: string;
  key: string;
  /** The target string the bundle was built for (`cpu-x64+avx2+fma`, `sm_90`, ...). */
  target: string;
  namespace: string;
  /** `'compiled'` when built now, `'bundle'` when a valid one was already there. */
  source: 'compiled' | 'bundle';
  /** Time spent tracing and compiling (0 when the bundle already existed). */
  compileMs: number;
}

const BUILD_KEYS = ['target', 'cacheDir', 'name', 'dynamic', 'key', 'tf32', 'sourceRoot'];

function badOption(msg: string): never {
  throw new ArgumentError('KILN_BAD_OPTION', `kiln.build: ${msg}`);
}

function exampleShapes(inputs: unknown): { shape: number[]; dtype: DType }[] {
  if (!Array.isArray(inputs)) throw new ArgumentError('KILN_BAD_ARGUMENT', 'kiln.build: exampleInputs must be an array of Tensors or { shape, dtype } objects');
  return inputs.map((x: unknown, i) => {
    if (x instanceof Tensor) return { shape: [...x.shape], dtype: x.dtype };
    const o = x as { shape?: unknown; dtype?: unknown } | null;
    const shapeOk = o !== null && typeof o === 'object' && Array.isArray(o.shape) && o.shape.every((d) => Number.isSafeInteger(d) && d >= 0);
    if (!shapeOk) throw new ArgumentError('KILN_BAD_ARGUMENT', `kiln.build: exampleInputs[${i}] must be a Tensor or { shape: number[], dtype? }; got ${JSON.stringify(x)}`);
    const dtype = o.dtype ?? 'float32';
    if (!isDType(dtype)) throw new ArgumentError('KILN_BAD_ARGUMENT', `kiln.build: exampleInputs[${i}].dtype ${JSON.stringify(dtype)} is not a kiln dtype`);
    return { shape: [...(o.shape as number[])], dtype };
  });
}

/**
 * ArgumentError KILN_BAD_TARGET when NVRTC is here, reports its architectures and `target`'s
 * compute capability is not among them (`sm_50` with NVRTC 13, which starts at sm_75): said
 * before any trace, naming what it does support, rather than as NVRTC's invalid-option log.
 * Without NVRTC or its list, nothing is checked: the compile says what is wrong.
 */
function checkNvrtcSupports(target: string): void {
  let nvrtc: ReturnType<typeof addonInfo>['nvrtc'];
  try {
    nvrtc = addonInfo().nvrtc;
  } catch {
    return; // the addon did not load; the compile reports it
  }
  if (!nvrtc.available || nvrtc.archs.length === 0) return;
  const t = parseTarget(target);
  if (t?.kind !== 'cuda' || nvrtc.archs.includes(`sm_${t.cc}`)) return;
  throw new ArgumentError(
    'KILN_BAD_TARGET',
    `kiln.build: NVRTC ${nvrtc.version.join('.')} (${nvrtc.path}) cannot build for ${target}; ` +
      `it supports ${nvrtc.archs.join(' ')}`,
  );
}

/**
 * Builds (or finds) the bundle for `fn` called with inputs like `exampleInputs`. `fn` may be
 * the plain function or the function `kiln.compile` returned (its name and dynamic dims are
 * then used). Resolves to `{ bundleDir, key, ... }`; throws ArgumentError KILN_BAD_TARGET for
 * an unknown target or one this machine's NVRTC does not support (naming those it does),
 * ArgumentError KILN_INPUT_COUNT for fewer example inputs than `fn`'s parameters or more than
 * a fixed parameter list takes, NvrtcError (KILN_NVRTC_UNAVAILABLE, KILN_NVRTC_COMPILE) when
 * a CUDA target cannot be compiled here, CacheError KILN_CACHE_WRITE when the bundle could
 * not be written.
 */
export async function build(fn: (...args: Tensor[]) => unknown, exampleInputs: readonly ExampleInput[], opts: BuildOptions): Promise<BuildResult> {
  const root = callerRoot();
  if (typeof opts !== 'object' || opts === null) badOption("options with a target are required, e.g. { target: 'cpu' }");
  for (const k of Object.keys(opts)) if (!BUILD_KEYS.includes(k)) badOption(`unknown option '${k}'; valid options are ${BUILD_KEYS.map((x) => `'${x}'`).join(', ')}`);
  if (typeof fn !== 'function') throw new ArgumentError('KILN_BAD_ARGUMENT', `kiln.build: fn must be a function (plain or from kiln.compile), got ${typeof fn}`);
  // A compiled function brings its own name and dynamic dims: the bundle is the one it loads.
  const spec = (fn as unknown as { [COMPILE_SPEC]?: CompileSpec })[COMPILE_SPEC];
  const plain = spec?.fn ?? fn;
  const name = opts.name ?? spec?.settings.name;
  const dynamic = opts.dynamic ?? (spec ? Object.fromEntries(spec.settings.dynamic) : undefined);
  const key: unknown = opts.key !== undefined ? opts.key : spec?.settings.key !== undefined ? JSON.parse(spec.settings.key) : undefined;
  const tf32 = opts.tf32 ?? spec?.settings.tf32;
  const settings = readOptions(plain, { ...(name !== undefined ? { name } : {}), ...(dynamic !== undefined ? { dynamic } : {}), ...(key !== undefined ? { key } : {}), ...(tf32 !== undefined ? { tf32 } : {}) });
  const target = opts.target;
  if (typeof target !== 'string' || !(target === 'cpu' || /^(sm|compute)_\d+a?$/.test(target))) {
    throw new ArgumentError('KILN_BAD_TARGET', `kiln.build: target must be 'cpu' or a CUDA architecture such as 'sm_90'; got ${JSON.stringify(target)}`);
  }
  if (target !== 'cpu' && !parseTarget(target)) throw new ArgumentError('KILN_BAD_TARGET', `kiln.build: target ${JSON.stringify(target)} is not a valid CUDA architecture`);
  if (target !== 'cpu') checkNvrtcSupports(target);
  const backend = bundleBackend(target);
  if (opts.cacheDir !== undefined && (typeof opts.cacheDir !== 'string' || opts.cacheDir === '')) badOption(`cacheDir must be a non-empty string; got ${JSON.stringify(opts.cacheDir)}`);

  const examples = exampleShapes(exampleInputs);
  const most = parameterLimit(plain);
  if (examples.length < plain.length || (most !== undefined && examples.length > most)) {
    const takes = examples.length < plain.length && most === undefined ? `at least ${plain.length}` : `${plain.length}`;
    throw new ArgumentError('KILN_INPUT_COUNT', `kiln.build: ${settings.name} takes ${takes} input${plain.length === 1 ? '' : 's'}, ${examples.length} example inputs were given`);
  }
  const signature = signatureOf(examples, settings.dynamic);
  const sourceRoot = opts.sourceRoot ?? root();
  const request: ProgramRequest = {
    name: settings.name,
    fnSource: plain.toString(),
    inputs: keySignature(signature, examples),
    device: backend.device,
    ...(target !== 'cpu' ? { target } : {}),
    ...(settings.key !== undefined ? { userKey: settings.key } : {}),
    ...(settings.tf32 ? { tf32: true } : {}),
    ...(sourceRoot ? { sourceRoot } : {}),
  };
  const got = await ensureBundle(request, opts.cacheDir, () => traceGraph(plain, examples, dynamicDims(signature)));
  return {
    bundleDir: got.bundleDir,
    key: got.key,
    target: backend.target(),
    namespace: settings.name,
    source: got.origin === 'compiled' ? 'compiled' : 'bundle',
    compileMs: got.traceMs + got.compileMs,
  };
}
