/**
 * The CPU code is compiled for exactly the ISA features its bundle target names, no more:
 * `isaFlags` / `cppFlags` as data for x64, arm64 and other architectures, every tracked
 * feature has a flag, and — with this machine's compiler — the flags for this CPU's features
 * define the same ISA macros the generated code tests as `-march=native` does, and none of
 * a feature the target does not name.
 */
import { execFileSync } from 'child_process';
import { cppFlags } from '../lib/codegen';
import { ARM64_ISA_EXTENSIONS, isaFlags, X64_ISA_FLAGS } from '../lib/codegen/cpp';
import { parseTarget } from '../lib/cache';
import { cpuHost } from '../lib/engine/bundle-target';
import { cpuInfo, findCxx, TRACKED_FEATURES } from '../lib/runtime/toolchain';

const AVX2_HOST = ['avx', 'avx2', 'f16c', 'fma', 'sse4_2'];
const AVX512_HOST = [...AVX2_HOST, 'avx512_bf16', 'avx512_vnni', 'avx512bw', 'avx512f', 'avx512vl'];
const ARM_FEATURES = ['asimd', 'sve'];

describe('isaFlags', () => {
  test('x64: -march=x86-64, one flag per tracked feature in table order, -mtune=native', () => {
    expect(isaFlags(AVX2_HOST, 'x64')).toEqual(['-march=x86-64', '-msse4.2', '-mavx', '-mavx2', '-mfma', '-mf16c', '-mtune=native']);
    expect(isaFlags([...AVX512_HOST].reverse(), 'x64')).toEqual([
      '-march=x86-64',
      '-msse4.2',
      '-mavx',
      '-mavx2',
      '-mfma',
      '-mf16c',
      '-mavx512f',
      '-mavx512bw',
      '-mavx512vl',
      '-mavx512vnni',
      '-mavx512bf16',
      '-mtune=native',
    ]);
    expect(isaFlags([], 'x64')).toEqual(['-march=x86-64', '-mtune=native']);
    // untracked names (and another architecture's) add nothing
    expect(isaFlags(['avx2', 'avx512_fp16', 'amx_tile', 'gfni', 'sve'], 'x64')).toEqual(['-march=x86-64', '-mavx2', '-mtune=native']);
  });

  test('arm64: -march=armv8-a, +sve when the target names it', () => {
    expect(isaFlags(['asimd'], 'arm64')).toEqual(['-march=armv8-a', '-mtune=native']);
    expect(isaFlags(['asimd', 'sve'], 'arm64')).toEqual(['-march=armv8-a+sve', '-mtune=native']);
    expect(isaFlags([], 'arm64')).toEqual(['-march=armv8-a', '-mtune=native']);
    expect(isaFlags(['avx2', 'asimd'], 'arm64')).toEqual(['-march=armv8-a', '-mtune=native']);
  });

  test('any other architecture: -march=native (its target is the architecture alone)', () => {
    expect(isaFlags([], 'ppc64')).toEqual(['-march=native']);
    expect(isaFlags([], 's390x')).toEqual(['-march=native']);
  });

  test('cppFlags = -O3, the ISA flags, then the fixed flags; never -march=native on x64 or arm64', () => {
    const fixed = ['-fopenmp-simd', '-fPIC', '-shared', '-std=c++17', '-ffp-contract=off', '-fno-math-errno', '-fno-trapping-math', '-w'];
    expect(cppFlags(AVX2_HOST, 'x64')).toEqual(['-O3', ...isaFlags(AVX2_HOST, 'x64'), ...fixed]);
    expect(cppFlags(['asimd', 'sve'], 'arm64')).toEqual(['-O3', '-march=armv8-a+sve', '-mtune=native', ...fixed]);
    expect(cppFlags([], 'riscv64')).toEqual(['-O3', '-march=native', ...fixed]);
    expect(cppFlags(cpuInfo().features)).toEqual(cppFlags(cpuInfo().features, process.arch));
    // a JavaScript caller that passes no features gets an error, not baseline code
    expect(() => (cppFlags as unknown as () => string[])()).toThrow(TypeError);
  });

  test('every tracked feature has a flag, and nothing untracked is compiled for', () => {
    const x64 = TRACKED_FEATURES.filter((f) => !ARM_FEATURES.includes(f));
    expect(x64).toHaveLength(10);
    for (const f of x64) expect([f, isaFlags([f], 'x64')]).toEqual([f, ['-march=x86-64', X64_ISA_FLAGS[f], '-mtune=native']]);
    expect(Object.keys(X64_ISA_FLAGS).sort()).toEqual([...x64].sort());
    for (const f of Object.keys(ARM64_ISA_EXTENSIONS)) expect(TRACKED_FEATURES).toContain(f);
    // nothing compiles for them any more, so no target demands them
    expect(TRACKED_FEATURES).not.toContain('avx512_fp16');
    expect(TRACKED_FEATURES).not.toContain('amx_tile');
  });

  test("the engine compiles for its CPU target's features: the target names exactly them", () => {
    const { target, host } = cpuHost();
    expect(host.features).toEqual(cpuInfo().features);
    expect(host.arch).toBe(process.arch);
    expect(parseTarget(target)).toEqual({ kind: 'cpu', arch: process.arch, features: [...host.features].sort() });
  });
});

const cxx = findCxx();
const onX64 = cxx.available && process.arch === 'x64' ? describe : describe.skip;

onX64("this machine's compiler", () => {
  // the ISA macros kiln's C++ tests (codegen/prelude.ts, gemm.ts) and those of every tracked feature
  const TRACKED_MACROS: Readonly<Record<string, string>> = {
    sse4_2: '__SSE4_2__',
    avx: '__AVX__',
    avx2: '__AVX2__',
    fma: '__FMA__',
    f16c: '__F16C__',
    avx512f: '__AVX512F__',
    avx512bw: '__AVX512BW__',
    avx512vl: '__AVX512VL__',
    avx512_vnni: '__AVX512VNNI__',
    avx512_bf16: '__AVX512BF16__',
  };
  const UNTRACKED = ['__GFNI__', '__VAES__', '__VPCLMULQDQ__', '__AVX512VBMI__', '__AVX512VBMI2__', '__AVX512VPOPCNTDQ__', '__AVX512FP16__', '__AVX512DQ__', '__AMX_TILE__', '__AVXVNNI__', '__BMI2__', '__SHA__'];
  const path = cxx.available ? cxx.path : '';
  const macros = (flags: readonly string[]): Set<string> =>
    new Set(execFileSync(path, [...flags, '-dM', '-E', '-x', 'c++', '/dev/null'], { encoding: 'utf8' }).match(/(?<=#define )__[A-Z0-9_]+__/g) ?? []);
  const tracked = (defined: Set<string>) => Object.values(TRACKED_MACROS).filter((m) => defined.has(m));

  test("cppFlags(cpuInfo().features) defines this CPU's tracked ISA macros as -march=native does, and no ISA it lacks", () => {
    const features = cpuInfo().features;
    const ours = macros(cppFlags(features));
    const native = macros(cppFlags([], 'none')); // the same flags with -march=native, as another architecture gets
    expect(tracked(ours)).toEqual(tracked(native));
    expect(tracked(ours)).toEqual(Object.keys(TRACKED_MACROS).filter((f) => features.includes(f)).map((f) => TRACKED_MACROS[f]));
    // every macro the flags add is one -march=native defines here: nothing this CPU lacks
    expect([...ours].filter((m) => !native.has(m))).toEqual([]);
    expect(UNTRACKED.filter((m) => ours.has(m))).toEqual([]);
  });

  test('an AVX2 target: no AVX-512; an AVX-512 target: exactly its features; never an untracked ISA', () => {
    const avx2 = macros(cppFlags(AVX2_HOST, 'x64'));
    expect(tracked(avx2)).toEqual(['__SSE4_2__', '__AVX__', '__AVX2__', '__FMA__', '__F16C__']);
    const avx512 = macros(cppFlags(AVX512_HOST, 'x64'));
    expect(tracked(avx512)).toEqual(Object.values(TRACKED_MACROS));
    const baseline = macros(cppFlags([], 'x64'));
    expect(tracked(baseline)).toEqual([]);
    for (const defined of [avx2, avx512, baseline]) expect(UNTRACKED.filter((m) => defined.has(m))).toEqual([]);
  });
});
