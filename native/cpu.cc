// The CPU backend's kernel loader: dlopen a generated shared object and call its C ABI
// entry points, `extern "C" void fn(void** bufs, const int64_t* ints)`.
#include <dlfcn.h>

#include "addon.h"
#include "common.h"

namespace kiln {

/** A loaded shared object. It is never dlclose'd: kernel pointers may outlive the handle. */
struct CpuLibrary {
  void* handle;
  std::string path;
};

void Finalize(Napi::Env, CpuLibrary* lib) { delete lib; }

namespace {

using KernelFn = void (*)(void** bufs, const int64_t* ints);

/** The arguments of one call, read on the JS thread. */
struct CpuArgs {
  KernelFn fn = nullptr;
  std::vector<void*> bufs;
  std::vector<int64_t> ints;
};

CpuArgs ReadArgs(const Napi::CallbackInfo& info, KeepAlive* keep) {
  Napi::Env env = info.Env();
  auto* lib = UnwrapHandle<CpuLibrary>(info[0], kCpuLibraryTag, "CPU library");
  std::string symbol = GetString(info[1], "symbol");
  CpuArgs args;
  dlerror();
  args.fn = reinterpret_cast<KernelFn>(dlsym(lib->handle, symbol.c_str()));
  if (args.fn == nullptr) {
    const char* why = dlerror();
    Throw(env, "KILN_DLOPEN",
          "symbol '" + symbol + "' not found in " + lib->path + (why ? std::string(": ") + why : ""));
  }
  if (!info[2].IsArray()) ThrowArg(env, "buffers must be an array of ArrayBuffers or TypedArrays");
  auto bufs = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < bufs.Length(); i++) {
    Napi::Value b = bufs.Get(i);
    args.bufs.push_back(GetBytes(b, "buffers[" + std::to_string(i) + "]").data);
    if (keep) keep->Add(b);
  }
  Napi::Value ints = info[3];
  if (ints.IsTypedArray() && ints.As<Napi::TypedArray>().TypedArrayType() == napi_bigint64_array) {
    auto ta = ints.As<Napi::BigInt64Array>();
    args.ints.assign(ta.Data(), ta.Data() + ta.ElementLength());  // copied: cheap and GC-proof
  } else if (ints.IsArray()) {
    auto arr = ints.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++)
      args.ints.push_back(GetInt(arr.Get(i), "ints[" + std::to_string(i) + "]"));
  } else if (!ints.IsUndefined()) {
    ThrowArg(env, "ints must be a BigInt64Array or an array of integers");
  }
  return args;
}

/** Runs a kernel on libuv's pool; the buffers stay referenced until it finishes. */
class CpuCallWorker : public PromiseWorker {
 public:
  explicit CpuCallWorker(Napi::Env env) : PromiseWorker(env) {}
  CpuArgs args;
  KeepAlive keep;

 protected:
  void Execute() override { args.fn(args.bufs.data(), args.ints.data()); }
};

}  // namespace

Napi::Value KilnAddon::CpuLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = GetString(info[0], "path");
  dlerror();
  // RTLD_LOCAL: every kernel library exports the same entry names (kiln_run).
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    Throw(env, "KILN_DLOPEN", "cannot load CPU kernels " + path + ": " + (why ? why : "dlopen failed"));
  }
  return WrapHandle(env, new CpuLibrary{handle, path}, kCpuLibraryTag);
}

Napi::Value KilnAddon::CpuCall(const Napi::CallbackInfo& info) {
  CpuArgs args = ReadArgs(info, nullptr);
  args.fn(args.bufs.data(), args.ints.data());
  return info.Env().Undefined();
}

Napi::Value KilnAddon::CpuCallAsync(const Napi::CallbackInfo& info) {
  auto* worker = new CpuCallWorker(info.Env());
  try {
    worker->args = ReadArgs(info, &worker->keep);
  } catch (...) {
    delete worker;
    throw;
  }
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace kiln
