// Modules (cubin or PTX images), their kernels, launches, and synchronizing.
#include "addon.h"
#include "module.h"

namespace kiln {

bool ModuleState::Unload(ErrorInfo* err) {
  if (unloaded) return true;
  Driver& d = Driver::Get();
  CUstream s = d.Stream(device, err);
  if (s == nullptr || !d.Check(d.api().cuStreamSynchronize(s), "cuStreamSynchronize", err) ||
      !d.Check(d.api().cuModuleUnload(module), "cuModuleUnload", err))
    return false;
  unloaded = true;
  return true;
}

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

/** Waits for kiln's stream on a device, off the JS thread. */
class SyncWorker : public PromiseWorker {
 public:
  SyncWorker(Napi::Env env, int device) : PromiseWorker(env), device_(device) {}

 protected:
  void Execute() override {
    Driver& d = Driver::Get();
    ErrorInfo err;
    CUstream s = d.Stream(device_, &err);
    if (s == nullptr || !d.Check(d.api().cuStreamSynchronize(s), "cuStreamSynchronize", &err))
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
  if (!d.Check(d.api().cuModuleLoadData(&state->module, data.data()), "cuModuleLoadData", &err))
    ThrowCuda(env, err);
  state->unloaded = false;
  return WrapHandle(env, new ModuleHandle{state}, kModuleTag);
}

Napi::Value KilnAddon::ModuleUnload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  auto* m = UnwrapHandle<ModuleHandle>(info[0], kModuleTag, "module");
  ErrorInfo err;
  if (!m->state->Unload(&err)) ThrowCuda(env, err);
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
  CUstream s = d.Stream(f->module->device, &err);
  if (s == nullptr ||
      !d.Check(d.api().cuLaunchKernel(f->fn, Dim(grid, 0, "grid.x"), Dim(grid, 1, "grid.y"),
                                      Dim(grid, 2, "grid.z"), Dim(block, 0, "block.x"),
                                      Dim(block, 1, "block.y"), Dim(block, 2, "block.z"),
                                      static_cast<unsigned>(shared), s, nullptr,
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
