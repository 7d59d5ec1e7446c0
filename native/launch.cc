// Modules (cubin or PTX images), their kernels, launches, and synchronizing.
#include <memory>

#include "addon.h"
#include "common.h"
#include "driver.h"

namespace kiln {

/** A loaded CUmodule; unloaded explicitly, or when the last handle to it is collected. */
struct ModuleState {
  CUmodule module = nullptr;
  int device = 0;
  bool unloaded = false;
  ~ModuleState() {
    ErrorInfo ignored;
    if (!unloaded && Driver::Get().UseDevice(device, &ignored))
      Driver::Get().api().cuModuleUnload(module);
  }
};

/** The JS-visible module handle. */
struct ModuleHandle {
  std::shared_ptr<ModuleState> state;
};

/** A kernel; it keeps its module's state alive so a launch can check it was not unloaded. */
struct FunctionHandle {
  std::shared_ptr<ModuleState> module;
  CUfunction fn;
  std::string name;
};

void Finalize(Napi::Env, ModuleHandle* m) { delete m; }
void Finalize(Napi::Env, FunctionHandle* f) { delete f; }

namespace {

[[noreturn]] void ThrowCuda(Napi::Env env, const ErrorInfo& err) { throw MakeError(env, err); }

unsigned Dim(const Napi::Array& a, uint32_t i, const std::string& what) {
  if (i >= a.Length()) return 1;  // [x] and [x, y] mean y = z = 1
  int64_t v = GetInt(a.Get(i), what);
  if (v < 1 || v > 0x7fffffff) ThrowArg(a.Env(), what + " must be in 1..2^31-1");
  return static_cast<unsigned>(v);
}

/** cuStreamSynchronize on the legacy default stream, off the JS thread. */
class SyncWorker : public PromiseWorker {
 public:
  SyncWorker(Napi::Env env, int device) : PromiseWorker(env), device_(device) {}

 protected:
  void Execute() override {
    Driver& d = Driver::Get();
    ErrorInfo err;
    if (!d.UseDevice(device_, &err) ||
        !d.Check(d.api().cuStreamSynchronize(nullptr), "cuStreamSynchronize", &err))
      Fail(err);
  }

 private:
  int device_;
};

}  // namespace

Napi::Value KilnAddon::ModuleLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  Bytes image = GetBytes(info[0], "image");
  int device = info[1].IsUndefined() ? 0 : static_cast<int>(GetInt(info[1], "device"));
  // A PTX image must be NUL-terminated; the copy adds one (harmless after a cubin).
  std::vector<char> data(static_cast<char*>(image.data), static_cast<char*>(image.data) + image.size);
  data.push_back('\0');
  ErrorInfo err;
  auto state = std::make_shared<ModuleState>();
  state->device = device;
  if (!d.UseDevice(device, &err)) ThrowCuda(env, err);
  if (!d.Check(d.api().cuModuleLoadData(&state->module, data.data()), "cuModuleLoadData", &err)) {
    state->unloaded = true;  // nothing to unload
    ThrowCuda(env, err);
  }
  return WrapHandle(env, new ModuleHandle{state}, kModuleTag);
}

Napi::Value KilnAddon::ModuleUnload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  auto* m = UnwrapHandle<ModuleHandle>(info[0], kModuleTag, "module");
  if (m->state->unloaded) return env.Undefined();
  ErrorInfo err;
  if (!d.UseDevice(m->state->device, &err) ||
      !d.Check(d.api().cuModuleUnload(m->state->module), "cuModuleUnload", &err))
    ThrowCuda(env, err);
  m->state->unloaded = true;
  return env.Undefined();
}

Napi::Value KilnAddon::ModuleGetFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  auto* m = UnwrapHandle<ModuleHandle>(info[0], kModuleTag, "module");
  std::string name = GetString(info[1], "name");
  if (m->state->unloaded) ThrowArg(env, "module was unloaded");
  ErrorInfo err;
  CUfunction fn = nullptr;
  if (!d.UseDevice(m->state->device, &err) ||
      !d.Check(d.api().cuModuleGetFunction(&fn, m->state->module, name.c_str()),
               "cuModuleGetFunction('" + name + "')", &err))
    ThrowCuda(env, err);
  return WrapHandle(env, new FunctionHandle{m->state, fn, name}, kFunctionTag);
}

// launch(fn, grid: number[], block: number[], sharedMemBytes, args: packed parameter bytes)
Napi::Value KilnAddon::Launch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  auto* f = UnwrapHandle<FunctionHandle>(info[0], kFunctionTag, "function");
  if (!info[1].IsArray() || !info[2].IsArray()) ThrowArg(env, "grid and block must be arrays");
  auto grid = info[1].As<Napi::Array>(), block = info[2].As<Napi::Array>();
  int64_t shared = info[3].IsUndefined() ? 0 : GetInt(info[3], "sharedMemBytes");
  Bytes args = info[4].IsUndefined() ? Bytes{} : GetBytes(info[4], "args");
  if (f->module->unloaded) ThrowArg(env, "kernel " + f->name + "'s module was unloaded");
  size_t argSize = args.size;
  // The packed form: the driver reads each parameter at its aligned offset in one buffer,
  // and copies it during the call, so the buffer need not outlive the launch.
  void* extra[] = {KILN_CU_LAUNCH_PARAM_BUFFER_POINTER, args.data, KILN_CU_LAUNCH_PARAM_BUFFER_SIZE,
                   &argSize, KILN_CU_LAUNCH_PARAM_END};
  ErrorInfo err;
  if (!d.UseDevice(f->module->device, &err) ||
      !d.Check(d.api().cuLaunchKernel(f->fn, Dim(grid, 0, "grid.x"), Dim(grid, 1, "grid.y"),
                                      Dim(grid, 2, "grid.z"), Dim(block, 0, "block.x"),
                                      Dim(block, 1, "block.y"), Dim(block, 2, "block.z"),
                                      static_cast<unsigned>(shared), nullptr, nullptr,
                                      argSize > 0 ? extra : nullptr),
               "cuLaunchKernel(" + f->name + ")", &err))
    ThrowCuda(env, err);
  return env.Undefined();
}

Napi::Value KilnAddon::Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  int device = info[0].IsUndefined() ? 0 : static_cast<int>(GetInt(info[0], "device"));
  auto* w = new SyncWorker(env, device);
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

}  // namespace kiln
