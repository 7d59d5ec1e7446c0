// The kiln addon: one instance per Node environment (main thread or worker), so it loads
// in worker_threads. Process-wide things (the CUDA driver, NVRTC) live in Driver and Nvrtc.
#pragma once

#include <napi.h>

#include <deque>
#include <memory>
#include <unordered_set>

#include "completion.h"

namespace kiln {

class CompileWorker;

/**
 * Caps concurrent NVRTC compiles per environment. A compile waits here, on the JS thread,
 * rather than blocking a libuv pool thread, so file I/O and other work keep their threads.
 */
class CompileQueue {
 public:
  explicit CompileQueue(int limit) : limit_(limit) {}
  int limit() const { return limit_; }
  /** Queues `w` on libuv's pool now if a slot is free, else when one frees up. */
  void Submit(CompileWorker* w);
  /** Called on the JS thread when a compile finishes: starts the next waiting one. */
  void Done();

 private:
  int limit_;
  int running_ = 0;
  std::deque<CompileWorker*> waiting_;
};

class KilnAddon : public Napi::Addon<KilnAddon> {
 public:
  KilnAddon(Napi::Env env, Napi::Object exports);
  ~KilnAddon();
  CompileQueue& compileQueue() { return compileQueue_; }

 private:
  // kiln.cc
  Napi::Value Info(const Napi::CallbackInfo& info);
  // compile.cc
  Napi::Value NvrtcLoad(const Napi::CallbackInfo& info);
  Napi::Value NvrtcCompile(const Napi::CallbackInfo& info);
  // cpu.cc
  Napi::Value CpuLoad(const Napi::CallbackInfo& info);
  Napi::Value CpuCall(const Napi::CallbackInfo& info);
  Napi::Value CpuCallAsync(const Napi::CallbackInfo& info);
  Napi::Value CpuTryCall(const Napi::CallbackInfo& info);
  // memory.cc
  Napi::Value MemAlloc(const Napi::CallbackInfo& info);
  Napi::Value MemFree(const Napi::CallbackInfo& info);
  Napi::Value MemInfo(const Napi::CallbackInfo& info);
  Napi::Value MemStats(const Napi::CallbackInfo& info);
  Napi::Value MemTrim(const Napi::CallbackInfo& info);
  Napi::Value MemcpyHtoD(const Napi::CallbackInfo& info);
  Napi::Value MemcpyDtoH(const Napi::CallbackInfo& info);
  Napi::Value MemcpyHtoDSync(const Napi::CallbackInfo& info);
  Napi::Value MemcpyDtoHSync(const Napi::CallbackInfo& info);
  Napi::Value MemcpyDtoD(const Napi::CallbackInfo& info);
  Napi::Value MemsetD8(const Napi::CallbackInfo& info);
  // launch.cc
  Napi::Value ModuleLoad(const Napi::CallbackInfo& info);
  Napi::Value ModuleUnload(const Napi::CallbackInfo& info);
  Napi::Value ModuleGetFunction(const Napi::CallbackInfo& info);
  Napi::Value Launch(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);
  // executor.cc
  Napi::Value ExecCreate(const Napi::CallbackInfo& info);
  Napi::Value ExecRun(const Napi::CallbackInfo& info);
  Napi::Value ExecStats(const Napi::CallbackInfo& info);
  Napi::Value ExecDispose(const Napi::CallbackInfo& info);

  CompileQueue compileQueue_;
  std::shared_ptr<Completions> completions_;  // created on the first run
  // Device blocks this environment allocated and has not freed: its teardown frees them (a
  // worker that exits with undisposed tensors leaves nothing live in the process's pools).
  std::unordered_set<uint64_t> liveBlocks_;
};

/** Returns `ptrs`' blocks to their pools (those still live); for an environment's teardown. */
void FreeDeviceBlocks(const std::unordered_set<uint64_t>& ptrs);

}  // namespace kiln
