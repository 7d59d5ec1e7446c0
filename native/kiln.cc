// The kiln addon's entry point: registers every binding and reports what was found.
#include <cstdlib>

#include "addon.h"
#include "common.h"
#include "driver.h"

namespace kiln {

namespace {

// KILN_NVRTC_JOBS caps concurrent compiles; 2 leaves half of libuv's 4 threads free.
int CompileJobs() {
  const char* env = std::getenv("KILN_NVRTC_JOBS");
  int n = env ? std::atoi(env) : 0;
  return n >= 1 && n <= 64 ? n : 2;
}

Napi::Object DriverToJs(Napi::Env env, const Driver& d) {
  auto o = Napi::Object::New(env);
  o.Set("available", d.available());
  if (!d.available()) {
    o.Set("reason", d.reason());
    return o;
  }
  o.Set("version", d.version());
  auto devices = Napi::Array::New(env, d.devices().size());
  for (size_t i = 0; i < d.devices().size(); i++) {
    const DeviceInfo& dev = d.devices()[i];
    auto js = Napi::Object::New(env);
    js.Set("index", dev.index);
    js.Set("name", dev.name);
    auto cc = Napi::Array::New(env, 2);
    cc.Set(0u, dev.major);
    cc.Set(1u, dev.minor);
    js.Set("computeCapability", cc);
    js.Set("totalMemory", static_cast<double>(dev.totalMemory));
    js.Set("smCount", dev.smCount);
    devices.Set(i, js);
  }
  o.Set("devices", devices);
  return o;
}

}  // namespace

KilnAddon::KilnAddon(Napi::Env, Napi::Object exports) : compileQueue_(CompileJobs()) {
  DefineAddon(exports, {
      InstanceMethod("info", &KilnAddon::Info),
      InstanceMethod("nvrtcLoad", &KilnAddon::NvrtcLoad),
      InstanceMethod("nvrtcCompile", &KilnAddon::NvrtcCompile),
      InstanceMethod("cpuLoad", &KilnAddon::CpuLoad),
      InstanceMethod("cpuCall", &KilnAddon::CpuCall),
      InstanceMethod("cpuCallAsync", &KilnAddon::CpuCallAsync),
      InstanceMethod("cpuTryCall", &KilnAddon::CpuTryCall),
      InstanceMethod("memAlloc", &KilnAddon::MemAlloc),
      InstanceMethod("memFree", &KilnAddon::MemFree),
      InstanceMethod("memInfo", &KilnAddon::MemInfo),
      InstanceMethod("memStats", &KilnAddon::MemStats),
      InstanceMethod("memTrim", &KilnAddon::MemTrim),
      InstanceMethod("memcpyHtoD", &KilnAddon::MemcpyHtoD),
      InstanceMethod("memcpyDtoH", &KilnAddon::MemcpyDtoH),
      InstanceMethod("memcpyHtoDSync", &KilnAddon::MemcpyHtoDSync),
      InstanceMethod("memcpyDtoHSync", &KilnAddon::MemcpyDtoHSync),
      InstanceMethod("memcpyDtoD", &KilnAddon::MemcpyDtoD),
      InstanceMethod("memset", &KilnAddon::MemsetD8),
      InstanceMethod("moduleLoad", &KilnAddon::ModuleLoad),
      InstanceMethod("moduleUnload", &KilnAddon::ModuleUnload),
      InstanceMethod("moduleGetFunction", &KilnAddon::ModuleGetFunction),
      InstanceMethod("launch", &KilnAddon::Launch),
      InstanceMethod("synchronize", &KilnAddon::Synchronize),
      InstanceMethod("execCreate", &KilnAddon::ExecCreate),
      InstanceMethod("execRun", &KilnAddon::ExecRun),
      InstanceMethod("execStats", &KilnAddon::ExecStats),
      InstanceMethod("execDispose", &KilnAddon::ExecDispose),
  });
}

KilnAddon::~KilnAddon() {
  if (completions_) completions_->Shutdown();  // waits for in-flight runs, stops the waiter
  FreeDeviceBlocks(liveBlocks_);  // back to the pools' caches, stream-ordered (pool.h)
}

// info() loads the driver on first call (never at require time) and reports on it.
Napi::Value KilnAddon::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("napiVersion", NAPI_VERSION);
  o.Set("compileJobs", compileQueue_.limit());
  o.Set("completionPollUs", CompletionPollMicros());  // KILN_CUDA_POLL_US, read in completion.cc
  o.Set("driver", DriverToJs(env, Driver::Get()));
  return o;
}

}  // namespace kiln

using kiln::KilnAddon;
NODE_API_ADDON(KilnAddon)
