// The plan executor: every kernel launch of a compiled program, and the device copies that
// give the caller outputs of its own, in one native call on kiln's stream, optionally
// replayed as a CUDA graph (copies included). Made once per program from its module, kernel
// names, per-step launch descriptors and copies; `run` takes device pointers, symbol
// values, the grids (resolved in JS from the plan's symbolic dims) and the copies' sizes,
// and returns a Promise settled by the completion queue when the GPU is done.
//
// Kernel parameter ABI (documented for renderers in lib/runtime/cuda.ts): step i's kernel
// takes one pointer per entry of its `buffers`, in order, then one int64 per plan symbol, in
// order; every parameter is 8 bytes at offset 8*k, passed as one packed buffer.
#include <chrono>

#include "addon.h"
#include "executor.h"

namespace kiln {

void Finalize(Napi::Env, PlanExecutor* e) { delete e; }

namespace {

constexpr unsigned kDefaultSharedLimit = 48 * 1024;  // above this, opting in is required

std::vector<int64_t> GetInts(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) ThrowArg(v.Env(), what + " must be an array");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out[i] = GetInt(a.Get(i), what + "[" + std::to_string(i) + "]");
  return out;
}

// One napi_get_typedarray_info per array: node-addon-api's accessors each call it again
// (about 1 k instructions apiece), and a run reads four arrays.
template <typename T>
T* TypedData(const Napi::Value& v, napi_typedarray_type type, size_t length, const char* what) {
  bool isTyped = false;
  napi_typedarray_type got = napi_int8_array;
  size_t n = 0;
  void* data = nullptr;
  if (napi_is_typedarray(v.Env(), v, &isTyped) != napi_ok || !isTyped ||
      napi_get_typedarray_info(v.Env(), v, &got, &n, &data, nullptr, nullptr) != napi_ok ||
      got != type)
    ThrowArg(v.Env(), std::string(what) + " has the wrong TypedArray type");
  if (n != length)
    ThrowArg(v.Env(), std::string(what) + " must have " + std::to_string(length) +
                          " elements, got " + std::to_string(n));
  return static_cast<T*>(data);
}

/** Reads each kernel's attributes and checks its parameters and every step's block/shared. */
void PrepareKernels(Napi::Env env, PlanExecutor* e) {
  Driver& d = Driver::Get();
  const DriverApi& api = d.api();
  ErrorInfo err;
  std::vector<unsigned> sharedNeed(e->kernels.size(), 0);
  std::vector<int> paramsSeen(e->kernels.size(), -1);
  for (size_t i = 0; i < e->steps.size(); i++) {
    const StepSpec& s = e->steps[i];
    KernelInfo& k = e->kernels[s.kernel];
    unsigned threads = s.block[0] * s.block[1] * s.block[2];
    if (static_cast<int>(threads) > k.maxThreadsPerBlock)
      Throw(env, "KILN_CUDA_LAUNCH_CONFIG",
            "step " + std::to_string(i) + " launches kernel " + k.name + " with " +
                std::to_string(threads) + " threads per block, but it can run at most " +
                std::to_string(k.maxThreadsPerBlock) + " (it uses " +
                std::to_string(k.registers) + " registers per thread): use a smaller block");
    int params = static_cast<int>(s.buffers.size() + e->numSymbols);
    if (k.params >= 0 && k.params != params)
      Throw(env, "KILN_CUDA_ABI",
            "kernel " + k.name + " takes " + std::to_string(k.params) +
                " 8-byte parameters, but step " + std::to_string(i) + " passes " +
                std::to_string(params) + " (" + std::to_string(s.buffers.size()) +
                " buffer pointers + " + std::to_string(e->numSymbols) +
                " int64 symbols): the kernel does not follow kiln's parameter ABI "
                "(lib/runtime/cuda.ts)");
    if (paramsSeen[s.kernel] >= 0 && paramsSeen[s.kernel] != params)
      ThrowArg(env, "kernel " + k.name + " is launched with different buffer counts");
    paramsSeen[s.kernel] = params;
    sharedNeed[s.kernel] = std::max(sharedNeed[s.kernel], s.sharedBytes);
  }
  for (size_t k = 0; k < e->kernels.size(); k++) {
    if (sharedNeed[k] <= kDefaultSharedLimit) continue;
    if (!d.Check(api.cuFuncSetAttribute(e->kernels[k].fn,
                                        KILN_CU_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        static_cast<int>(sharedNeed[k])),
                 "cuFuncSetAttribute(" + e->kernels[k].name + ", " +
                     std::to_string(sharedNeed[k]) + " bytes of dynamic shared memory)",
                 &err))
      throw MakeError(env, err);
  }
}

/** Counts a kernel's parameters and checks each is 8 bytes at 8*k (CUDA >= 12.4), else -1. */
int CountParams(CUfunction fn) {
  auto getInfo = Driver::Get().api().cuFuncGetParamInfo;
  if (getInfo == nullptr) return -1;
  for (size_t i = 0; i < 4096; i++) {
    size_t offset = 0, size = 0;
    if (getInfo(fn, i, &offset, &size) != 0) return static_cast<int>(i);
    if (size != 8 || offset != 8 * i) return -2 - static_cast<int>(i);  // never equals a count
  }
  return -1;
}

}  // namespace

// execCreate(module, { numBuffers, numSymbols, kernels: string[],
//                      steps: [{ kernel, buffers: number[], block: number[3], sharedBytes }],
//                      copies?: [{ dst, src }] })
Napi::Value KilnAddon::ExecCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  auto* m = UnwrapHandle<ModuleHandle>(info[0], kModuleTag, "module");
  if (m->state->unloaded) ThrowArg(env, "module was unloaded");
  if (!info[1].IsObject()) ThrowArg(env, "execCreate expects a plan description object");
  auto spec = info[1].As<Napi::Object>();
  auto e = std::make_unique<PlanExecutor>();
  e->module = m->state;
  e->device = m->state->device;
  e->numBuffers = static_cast<size_t>(GetInt(spec.Get("numBuffers"), "numBuffers"));
  e->numSymbols = static_cast<size_t>(GetInt(spec.Get("numSymbols"), "numSymbols"));
  ErrorInfo err;
  if (!d.UseDevice(e->device, &err)) throw MakeError(env, err);
  if (!spec.Get("kernels").IsArray()) ThrowArg(env, "kernels must be an array of names");
  auto names = spec.Get("kernels").As<Napi::Array>();
  for (uint32_t i = 0; i < names.Length(); i++) {
    KernelInfo k;
    k.name = GetString(names.Get(i), "kernels[" + std::to_string(i) + "]");
    if (!d.Check(d.api().cuModuleGetFunction(&k.fn, m->state->module, k.name.c_str()),
                 "cuModuleGetFunction('" + k.name + "')", &err))
      throw MakeError(env, err);
    d.api().cuFuncGetAttribute(&k.registers, KILN_CU_FUNC_ATTR_NUM_REGS, k.fn);
    d.api().cuFuncGetAttribute(&k.localBytes, KILN_CU_FUNC_ATTR_LOCAL_SIZE_BYTES, k.fn);
    d.api().cuFuncGetAttribute(&k.maxThreadsPerBlock, KILN_CU_FUNC_ATTR_MAX_THREADS_PER_BLOCK, k.fn);
    k.params = CountParams(k.fn);
    e->kernels.push_back(k);
  }
  if (!spec.Get("steps").IsArray()) ThrowArg(env, "steps must be an array");
  auto steps = spec.Get("steps").As<Napi::Array>();
  size_t maxArgs = 0;
  for (uint32_t i = 0; i < steps.Length(); i++) {
    std::string at = "steps[" + std::to_string(i) + "]";
    if (!steps.Get(i).IsObject()) ThrowArg(env, at + " must be an object");
    auto o = steps.Get(i).As<Napi::Object>();
    StepSpec s;
    int64_t kernel = GetInt(o.Get("kernel"), at + ".kernel");
    if (kernel < 0 || kernel >= static_cast<int64_t>(e->kernels.size()))
      ThrowArg(env, at + ".kernel is not an index into kernels");
    s.kernel = static_cast<int>(kernel);
    for (int64_t b : GetInts(o.Get("buffers"), at + ".buffers")) {
      if (b < 0 || b >= static_cast<int64_t>(e->numBuffers))
        ThrowArg(env, at + ".buffers names buffer " + std::to_string(b) + " of " +
                          std::to_string(e->numBuffers));
      s.buffers.push_back(static_cast<uint32_t>(b));
    }
    std::vector<int64_t> block = GetInts(o.Get("block"), at + ".block");
    for (size_t j = 0; j < 3; j++) {
      int64_t v = j < block.size() ? block[j] : 1;
      if (v < 1 || v > 1024) ThrowArg(env, at + ".block dims must be in 1..1024");
      s.block[j] = static_cast<unsigned>(v);
    }
    int64_t shared = o.Get("sharedBytes").IsUndefined() ? 0 : GetInt(o.Get("sharedBytes"), at + ".sharedBytes");
    if (shared < 0 || shared > (1 << 30)) ThrowArg(env, at + ".sharedBytes is out of range");
    s.sharedBytes = static_cast<unsigned>(shared);
    maxArgs = std::max(maxArgs, s.buffers.size() + e->numSymbols);
    e->steps.push_back(std::move(s));
  }
  e->args.assign(std::max<size_t>(maxArgs, 1), 0);
  Napi::Value copies = spec.Get("copies");
  if (!copies.IsUndefined()) {
    if (!copies.IsArray()) ThrowArg(env, "copies must be an array");
    auto list = copies.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      std::string at = "copies[" + std::to_string(i) + "]";
      if (!list.Get(i).IsObject()) ThrowArg(env, at + " must be an object");
      auto o = list.Get(i).As<Napi::Object>();
      int64_t dst = GetInt(o.Get("dst"), at + ".dst"), src = GetInt(o.Get("src"), at + ".src");
      for (int64_t b : {dst, src})
        if (b < 0 || b >= static_cast<int64_t>(e->numBuffers))
          ThrowArg(env, at + " names buffer " + std::to_string(b) + " of " + std::to_string(e->numBuffers));
      e->copies.push_back({static_cast<uint32_t>(dst), static_cast<uint32_t>(src)});
    }
  }
  PrepareKernels(env, e.get());
  return WrapHandle(env, e.release(), kExecutorTag);
}

// execRun(exec, ptrs: BigUint64Array, syms: BigInt64Array, grids: Uint32Array, graph: bool,
//         copyBytes?: BigUint64Array (one per copy; may be left out when there are none))
Napi::Value KilnAddon::ExecRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t0 = std::chrono::steady_clock::now();
  Driver& d = RequireDriver(env);
  auto* e = UnwrapHandle<PlanExecutor>(info[0], kExecutorTag, "executor");
  if (e->disposed) ThrowArg(env, "the executor was disposed");
  if (e->module->unloaded) ThrowArg(env, "the executor's module was unloaded");
  RunArgs a;
  a.ptrs = TypedData<uint64_t>(info[1], napi_biguint64_array, e->numBuffers, "ptrs");
  a.syms = TypedData<int64_t>(info[2], napi_bigint64_array, e->numSymbols, "syms");
  a.grids = TypedData<uint32_t>(info[3], napi_uint32_array, 3 * e->steps.size(), "grids");
  bool graph = info[4].ToBoolean();
  if (!e->copies.empty() || !info[5].IsUndefined())
    a.copyBytes = TypedData<uint64_t>(info[5], napi_biguint64_array, e->copies.size(), "copyBytes");
  for (size_t i = 0; i < e->copies.size(); i++) {
    const CopySpec& c = e->copies[i];
    if (a.copyBytes[i] > 0 && (a.ptrs[c.dst] == 0 || a.ptrs[c.src] == 0))
      ThrowArg(env, "copy " + std::to_string(i) + " (buffer " + std::to_string(c.src) + " to " +
                        std::to_string(c.dst) + ") lacks a device pointer");
  }
  for (size_t i = 0; i < e->steps.size(); i++) {
    for (uint32_t b : e->steps[i].buffers)
      if (a.ptrs[b] == 0)
        ThrowArg(env, "buffer " + std::to_string(b) + " (read by step " + std::to_string(i) +
                          ", kernel " + e->kernels[e->steps[i].kernel].name +
                          ") has no device pointer");
    const uint32_t* g = a.grids + 3 * i;
    if (g[0] > 0x7fffffffu || g[1] > 65535 || g[2] > 65535)
      ThrowArg(env, "step " + std::to_string(i) + "'s grid [" + std::to_string(g[0]) + ", " +
                        std::to_string(g[1]) + ", " + std::to_string(g[2]) +
                        "] exceeds CUDA's limits (2^31-1, 65535, 65535)");
  }
  ErrorInfo err;
  CUstream stream = d.Stream(e->device, &err);
  if (stream == nullptr || !e->Enqueue(a, stream, graph, &err)) throw MakeError(env, err);
  if (!completions_) completions_ = Completions::Create(env);
  Napi::Promise promise(env, nullptr);  // set by Track
  if (!completions_->Track(env, e->device, stream, &promise, &err)) throw MakeError(env, err);
  int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now() - t0).count();
  e->stats.enqueueNs += ns;
  e->stats.lastEnqueueNs = ns;
  return promise;
}

Napi::Value KilnAddon::ExecStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  auto* e = UnwrapHandle<PlanExecutor>(info[0], kExecutorTag, "executor");
  const ExecutorStats& s = e->stats;
  auto o = Napi::Object::New(env);
  o.Set("runs", static_cast<double>(s.runs));
  o.Set("kernelLaunches", static_cast<double>(s.kernelLaunches));
  o.Set("copies", static_cast<double>(s.copies));
  o.Set("graphLaunches", static_cast<double>(s.graphLaunches));
  o.Set("graphCaptures", static_cast<double>(s.graphCaptures));
  o.Set("graphEvictions", static_cast<double>(s.graphEvictions));
  o.Set("graphsCached", static_cast<double>(e->graphs.size()));
  o.Set("enqueueNs", static_cast<double>(s.enqueueNs));
  o.Set("lastEnqueueNs", static_cast<double>(s.lastEnqueueNs));
  o.Set("captureNs", static_cast<double>(s.captureNs));
  if (!e->graphError.empty()) o.Set("graphError", e->graphError);
  auto kernels = Napi::Array::New(env, e->kernels.size());
  for (size_t i = 0; i < e->kernels.size(); i++) {
    const KernelInfo& k = e->kernels[i];
    auto ko = Napi::Object::New(env);
    ko.Set("name", k.name);
    ko.Set("registers", k.registers);
    ko.Set("localBytes", k.localBytes);
    ko.Set("maxThreadsPerBlock", k.maxThreadsPerBlock);
    ko.Set("params", k.params >= 0 ? Napi::Value(Napi::Number::New(env, k.params)) : env.Null());
    kernels.Set(i, ko);
  }
  o.Set("kernels", kernels);
  return o;
}

Napi::Value KilnAddon::ExecDispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  auto* e = UnwrapHandle<PlanExecutor>(info[0], kExecutorTag, "executor");
  e->Dispose();
  return env.Undefined();
}

}  // namespace kiln
