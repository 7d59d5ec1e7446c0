// Device memory: explicit alloc/free handles (V8's GC cannot see GPU memory, so freeing is
// the caller's job; the finalizer is only a safety net) and host<->device copies.
#include <atomic>

#include "addon.h"
#include "common.h"
#include "driver.h"

namespace kiln {

/** One cuMemAlloc'd block. */
struct DeviceMemory {
  CUdeviceptr ptr;
  size_t bytes;
  int device;
  bool freed;
};

namespace {

// Process-wide counters so users (and leak tests) can see live GPU memory.
std::atomic<int64_t> gLiveBytes{0};
std::atomic<int64_t> gLiveAllocations{0};

bool FreeMemory(DeviceMemory* m, ErrorInfo* err) {
  if (m->freed) return true;
  Driver& d = Driver::Get();
  if (!d.UseDevice(m->device, err)) return false;
  if (!d.Check(d.api().cuMemFree(m->ptr), "cuMemFree", err)) return false;
  m->freed = true;
  gLiveBytes -= static_cast<int64_t>(m->bytes);
  gLiveAllocations--;
  return true;
}

int DeviceArg(const Napi::Value& v) {
  return v.IsUndefined() ? 0 : static_cast<int>(GetInt(v, "device"));
}

/** A blocking copy on libuv's pool; the host buffer and the handle stay referenced. */
class CopyWorker : public PromiseWorker {
 public:
  CopyWorker(Napi::Env env, bool toDevice) : PromiseWorker(env), toDevice_(toDevice) {}
  DeviceMemory* mem = nullptr;
  size_t offset = 0;
  Bytes host;
  KeepAlive keep;

 protected:
  void Execute() override {
    Driver& d = Driver::Get();
    ErrorInfo err;
    if (!d.UseDevice(mem->device, &err)) return Fail(err);
    CUresult r = toDevice_ ? d.api().cuMemcpyHtoD(mem->ptr + offset, host.data, host.size)
                           : d.api().cuMemcpyDtoH(host.data, mem->ptr + offset, host.size);
    if (!d.Check(r, toDevice_ ? "cuMemcpyHtoD" : "cuMemcpyDtoH", &err)) Fail(err);
  }

 private:
  bool toDevice_;
};

/** Shared by both copy directions: args are (device handle, offset, host bytes). */
Napi::Value StartCopy(const Napi::CallbackInfo& info, bool toDevice, const Napi::Value& memArg,
                      const Napi::Value& offsetArg, const Napi::Value& hostArg) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  auto* mem = UnwrapHandle<DeviceMemory>(memArg, kDeviceMemoryTag, "device memory");
  if (mem->freed) ThrowArg(env, "device memory was already freed");
  int64_t offset = GetInt(offsetArg, "offset");
  Bytes host = GetBytes(hostArg, "host buffer");
  if (offset < 0 || static_cast<size_t>(offset) + host.size > mem->bytes) {
    ThrowArg(env, "copy of " + std::to_string(host.size) + " bytes at offset " +
                      std::to_string(offset) + " overruns device memory of " +
                      std::to_string(mem->bytes) + " bytes");
  }
  auto* w = new CopyWorker(env, toDevice);
  w->mem = mem;
  w->offset = static_cast<size_t>(offset);
  w->host = host;
  w->keep.Add(memArg);
  w->keep.Add(hostArg);
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

}  // namespace

void Finalize(Napi::Env, DeviceMemory* m) {
  ErrorInfo ignored;  // nowhere to report from a finalizer; explicit free() reports errors
  if (!m->freed && Driver::Get().available()) FreeMemory(m, &ignored);
  delete m;
}

Napi::Value KilnAddon::MemAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  int64_t bytes = GetInt(info[0], "bytes");
  if (bytes <= 0) ThrowArg(env, "bytes must be positive, got " + std::to_string(bytes));
  int device = DeviceArg(info[1]);
  ErrorInfo err;
  CUdeviceptr ptr = 0;
  if (!d.UseDevice(device, &err) ||
      !d.Check(d.api().cuMemAlloc(&ptr, static_cast<size_t>(bytes)),
               "cuMemAlloc(" + std::to_string(bytes) + " bytes)", &err))
    throw MakeError(env, err);
  gLiveBytes += bytes;
  gLiveAllocations++;
  return WrapHandle(env, new DeviceMemory{ptr, static_cast<size_t>(bytes), device, false},
                    kDeviceMemoryTag);
}

Napi::Value KilnAddon::MemFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  auto* mem = UnwrapHandle<DeviceMemory>(info[0], kDeviceMemoryTag, "device memory");
  ErrorInfo err;
  if (!FreeMemory(mem, &err)) throw MakeError(env, err);
  return env.Undefined();
}

Napi::Value KilnAddon::MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* mem = UnwrapHandle<DeviceMemory>(info[0], kDeviceMemoryTag, "device memory");
  auto o = Napi::Object::New(env);
  o.Set("ptr", Napi::BigInt::New(env, static_cast<uint64_t>(mem->ptr)));
  o.Set("bytes", static_cast<double>(mem->bytes));
  o.Set("device", mem->device);
  o.Set("freed", mem->freed);
  return o;
}

Napi::Value KilnAddon::MemStats(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("liveBytes", static_cast<double>(gLiveBytes.load()));
  o.Set("liveAllocations", static_cast<double>(gLiveAllocations.load()));
  return o;
}

Napi::Value KilnAddon::MemcpyHtoD(const Napi::CallbackInfo& info) {
  return StartCopy(info, true, info[0], info[1], info[2]);  // (dst, dstOffset, src)
}

Napi::Value KilnAddon::MemcpyDtoH(const Napi::CallbackInfo& info) {
  return StartCopy(info, false, info[1], info[2], info[0]);  // (dst, src, srcOffset)
}

}  // namespace kiln
