// Device memory through the caching allocator (pool.h): explicit alloc/free (V8's GC cannot
// see GPU memory, so freeing is the caller's job), counters, trim, and copies ordered on
// kiln's stream. A block's handle is its device address as a BigInt, checked against the
// pools' live blocks on every use: no napi External, whose finalizer (a tracked reference,
// a heap record, a deferred callback per block) cost more than the rest of an allocation.
// The GC safety net is DeviceBuffer's FinalizationRegistry (lib/runtime/cuda-driver.ts),
// which also frees each block at most once; a raw handle used after its free may name a
// block handed out again, so only DeviceBuffer holds them. An environment's teardown frees
// the blocks it allocated and never freed (KilnAddon::liveBlocks_): FinalizationRegistry
// callbacks do not run then, so a worker's forgotten buffers would otherwise stay live.
// (A DeviceBuffer cannot cross to another worker, so each block is freed by its own env.)
#include <cstdio>
#include <memory>

#include "addon.h"
#include "common.h"
#include "driver.h"
#include "pool.h"

namespace kiln {

/** A live block: its address, the bytes it was asked for, its device. */
struct DeviceMemory {
  CUdeviceptr ptr;
  size_t bytes;
  int device;
};

namespace {

/** cuMemAlloc/cuMemFree on the current context; Sync waits for kiln's stream. */
struct CudaBackend {
  int device;
  int Alloc(uint64_t* ptr, uint64_t bytes) {
    CUdeviceptr p = 0;
    CUresult r = Driver::Get().api().cuMemAlloc(&p, bytes);
    *ptr = p;
    return r;
  }
  int Free(uint64_t ptr) { return Driver::Get().api().cuMemFree(ptr); }
  int Sync() {
    ErrorInfo ignored;
    CUstream s = Driver::Get().Stream(device, &ignored);
    return s ? Driver::Get().api().cuStreamSynchronize(s) : 0;
  }
};

using DevicePool = BlockPool<CudaBackend>;

std::mutex poolsMu;
// Leaked on purpose, as the driver is: blocks may be freed while the process exits.
std::vector<std::unique_ptr<DevicePool>>* pools = new std::vector<std::unique_ptr<DevicePool>>();

/** One pool per device, process-wide: memory is a process resource, as the counters are. */
DevicePool* PoolFor(int device) {
  std::lock_guard<std::mutex> lock(poolsMu);
  if (pools->size() <= static_cast<size_t>(device)) pools->resize(device + 1);
  auto& p = (*pools)[device];
  if (!p) p = std::make_unique<DevicePool>(CudaBackend{device});
  return p.get();
}

/** The live block at `ptr` in any device's pool (addresses are unique in the process). */
bool FindBlock(uint64_t ptr, DeviceMemory* out) {
  std::lock_guard<std::mutex> lock(poolsMu);
  for (size_t i = 0; i < pools->size(); i++) {
    uint64_t requested = 0;
    if ((*pools)[i] && (*pools)[i]->Lookup(ptr, &requested)) {
      *out = {ptr, static_cast<size_t>(requested), static_cast<int>(i)};
      return true;
    }
  }
  return false;
}

ErrorInfo OutOfMemory(int device, const PoolFailure& f) {
  Driver& d = Driver::Get();
  if (f.code != kPoolOutOfMemory) {
    ErrorInfo err;
    d.Check(f.code, "cuMemAlloc(" + std::to_string(f.requested) + " bytes)", &err);
    return err;
  }
  size_t freeBytes = 0, total = 0;
  d.api().cuMemGetInfo(&freeBytes, &total);
  auto mib = [](uint64_t b) {  // e.g. "512 B", "3.5 MiB", "78.2 GiB"
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(b);
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    char text[32];
    std::snprintf(text, sizeof(text), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return std::string(text);
  };
  std::string msg = "out of GPU memory: allocating " + std::to_string(f.requested) +
                    " bytes on device " + std::to_string(device) + " (" +
                    d.devices()[device].name + ", " + mib(freeBytes) + " free of " +
                    mib(total) + ") failed";
  msg += f.retried ? " even after kiln released its " + mib(f.cachedBytes) + " of cached blocks"
                   : " (kiln had no cached blocks to release)";
  msg += "; kiln's live buffers hold " + mib(f.liveBytes) + " in " +
         std::to_string(f.liveAllocations) +
         " allocations. Dispose tensors you no longer need (tensor.dispose() or `using`), run "
         "smaller batches, or look for other processes using the GPU with nvidia-smi.";
  ErrorInfo err{"KILN_CUDA_OOM", msg, d.Name(f.code), ""};
  err.numbers = {{"requestedBytes", static_cast<double>(f.requested)},
                 {"liveBytes", static_cast<double>(f.liveBytes)},
                 {"cachedBytes", static_cast<double>(f.cachedBytes)},
                 {"freeBytes", static_cast<double>(freeBytes)},
                 {"totalBytes", static_cast<double>(total)}};
  return err;
}

/** The address a memory handle names, or KILN_ARGUMENT when it is not one. */
uint64_t HandlePtr(const Napi::Value& v) {
  bool lossless = false;
  uint64_t ptr = v.IsBigInt() ? v.As<Napi::BigInt>().Uint64Value(&lossless) : 0;
  if (!lossless || ptr == 0) ThrowArg(v.Env(), "device memory must be a kiln device memory handle");
  return ptr;
}

int DeviceArg(const Napi::Value& v) {
  return v.IsUndefined() ? 0 : static_cast<int>(GetInt(v, "device"));
}

DeviceMemory LiveMemory(const Napi::Value& v) {
  DeviceMemory mem{};
  if (!FindBlock(HandlePtr(v), &mem)) ThrowArg(v.Env(), "device memory was already freed");
  return mem;
}

void CheckRange(Napi::Env env, const DeviceMemory& m, int64_t offset, int64_t bytes) {
  if (offset < 0 || bytes < 0 || static_cast<uint64_t>(offset + bytes) > m.bytes)
    ThrowArg(env, "access of " + std::to_string(bytes) + " bytes at offset " +
                      std::to_string(offset) + " overruns device memory of " +
                      std::to_string(m.bytes) + " bytes");
}

/** A copy on kiln's stream, waited for on libuv's pool (pageable host memory is staged). */
class CopyWorker : public PromiseWorker {
 public:
  CopyWorker(Napi::Env env, bool toDevice) : PromiseWorker(env), toDevice_(toDevice) {}
  DeviceMemory mem{};  // DeviceBuffer defers a dispose until the copy settles
  size_t offset = 0;
  Bytes host;
  KeepAlive keep;

 protected:
  void Execute() override {
    Driver& d = Driver::Get();
    ErrorInfo err;
    CUstream s = d.Stream(mem.device, &err);
    if (s == nullptr) return Fail(err);
    CUresult r =
        toDevice_ ? d.api().cuMemcpyHtoDAsync(mem.ptr + offset, host.data, host.size, s)
                  : d.api().cuMemcpyDtoHAsync(host.data, mem.ptr + offset, host.size, s);
    if (!d.Check(r, toDevice_ ? "cuMemcpyHtoDAsync" : "cuMemcpyDtoHAsync", &err) ||
        !d.Check(d.api().cuStreamSynchronize(s), "cuStreamSynchronize", &err))
      Fail(err);
  }

 private:
  bool toDevice_;
};

Napi::Value StartCopy(const Napi::CallbackInfo& info, bool toDevice, const Napi::Value& memArg,
                      const Napi::Value& offsetArg, const Napi::Value& hostArg) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  DeviceMemory mem = LiveMemory(memArg);
  int64_t offset = GetInt(offsetArg, "offset");
  Bytes host = GetBytes(hostArg, "host buffer");
  CheckRange(env, mem, offset, static_cast<int64_t>(host.size));
  auto* w = new CopyWorker(env, toDevice);
  w->mem = mem;
  w->offset = static_cast<size_t>(offset);
  w->host = host;
  w->keep.Add(hostArg);
  Napi::Promise promise = w->Promise();
  w->Queue();
  return promise;
}

/**
 * A copy on kiln's stream that the JS thread waits for: queued after all earlier work (so a
 * program's outputs are complete), then the stream is synchronized. For one-off transfers
 * (a tensor's upload at creation, an eager read of a device tensor), where a promise would
 * force every caller to be async.
 */
Napi::Value CopyNow(const Napi::CallbackInfo& info, bool toDevice, const Napi::Value& memArg,
                    const Napi::Value& offsetArg, const Napi::Value& hostArg) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  DeviceMemory mem = LiveMemory(memArg);
  int64_t offset = GetInt(offsetArg, "offset");
  Bytes host = GetBytes(hostArg, "host buffer");
  CheckRange(env, mem, offset, static_cast<int64_t>(host.size));
  ErrorInfo err;
  CUstream s = d.Stream(mem.device, &err);
  if (s == nullptr) throw MakeError(env, err);
  CUdeviceptr at = mem.ptr + static_cast<size_t>(offset);
  CUresult r = toDevice ? d.api().cuMemcpyHtoDAsync(at, host.data, host.size, s)
                        : d.api().cuMemcpyDtoHAsync(host.data, at, host.size, s);
  if (!d.Check(r, toDevice ? "cuMemcpyHtoDAsync" : "cuMemcpyDtoHAsync", &err) ||
      !d.Check(d.api().cuStreamSynchronize(s), "cuStreamSynchronize", &err))
    throw MakeError(env, err);
  return env.Undefined();
}

Napi::Object StatsToJs(Napi::Env env, const PoolStats& s) {
  auto o = Napi::Object::New(env);
  auto set = [&](const char* k, uint64_t v) { o.Set(k, static_cast<double>(v)); };
  set("liveBytes", s.liveBytes);
  set("liveAllocations", s.liveAllocations);
  set("requestedBytes", s.requestedBytes);
  set("cachedBytes", s.cachedBytes);
  set("cachedBlocks", s.cachedBlocks);
  set("reservedBytes", s.liveBytes + s.cachedBytes);
  set("peakLiveBytes", s.peakLiveBytes);
  set("peakReservedBytes", s.peakReservedBytes);
  set("allocations", s.allocations);
  set("cacheHits", s.cacheHits);
  set("driverAllocations", s.driverAllocations);
  set("driverFrees", s.driverFrees);
  set("oomRecoveries", s.oomRecoveries);
  return o;
}

}  // namespace

// memAlloc(bytes, device?, ptrOut?: BigUint64Array) -> handle (the address as a BigInt); the
// address also goes to ptrOut[0], which DeviceBuffer reads
Napi::Value KilnAddon::MemAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  int64_t bytes = GetInt(info[0], "bytes");
  if (bytes <= 0) ThrowArg(env, "bytes must be positive, got " + std::to_string(bytes));
  int device = DeviceArg(info[1]);
  ErrorInfo err;
  if (!d.UseDevice(device, &err)) throw MakeError(env, err);
  uint64_t ptr = 0;
  PoolFailure failure;
  if (PoolFor(device)->Alloc(static_cast<uint64_t>(bytes), &ptr, &failure) != 0)
    throw MakeError(env, OutOfMemory(device, failure));
  liveBlocks_.insert(ptr);
  bool isTyped = false;
  napi_typedarray_type type = napi_int8_array;
  size_t length = 0;
  void* out = nullptr;  // one info call: node-addon-api's accessors would make four
  if (napi_is_typedarray(env, info[2], &isTyped) == napi_ok && isTyped &&
      napi_get_typedarray_info(env, info[2], &type, &length, &out, nullptr, nullptr) == napi_ok &&
      type == napi_biguint64_array && length >= 1)
    *static_cast<uint64_t*>(out) = ptr;
  return Napi::BigInt::New(env, ptr);
}

// memFree(handle): back to its pool (stream-ordered: no sync, see pool.h); a handle no pool
// holds (already freed) is ignored, as a second dispose is
Napi::Value KilnAddon::MemFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireDriver(env);
  uint64_t ptr = HandlePtr(info[0]);
  liveBlocks_.erase(ptr);
  std::lock_guard<std::mutex> lock(poolsMu);
  for (auto& pool : *pools)
    if (pool && pool->Free(ptr)) break;
  return env.Undefined();
}

void FreeDeviceBlocks(const std::unordered_set<uint64_t>& ptrs) {
  std::lock_guard<std::mutex> lock(poolsMu);
  for (uint64_t ptr : ptrs)
    for (auto& pool : *pools)
      if (pool && pool->Free(ptr)) break;
}

// memInfo(handle) -> { ptr, bytes, device, freed } (bytes 0 and device -1 once freed)
Napi::Value KilnAddon::MemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t ptr = HandlePtr(info[0]);
  DeviceMemory mem{ptr, 0, -1};
  bool live = FindBlock(ptr, &mem);
  auto o = Napi::Object::New(env);
  o.Set("ptr", Napi::BigInt::New(env, ptr));
  o.Set("bytes", static_cast<double>(mem.bytes));
  o.Set("device", mem.device);
  o.Set("freed", !live);
  return o;
}

// memStats(device?) -> the pool's counters (all zero where no GPU was ever used)
Napi::Value KilnAddon::MemStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int device = DeviceArg(info[0]);
  Driver& d = Driver::Get();
  if (!d.available() || device < 0 || device >= static_cast<int>(d.devices().size()))
    return StatsToJs(env, PoolStats{});
  return StatsToJs(env, PoolFor(device)->Stats());
}

// memTrim(device?) -> bytes given back to the driver
Napi::Value KilnAddon::MemTrim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  int device = DeviceArg(info[0]);
  ErrorInfo err;
  if (!d.UseDevice(device, &err)) throw MakeError(env, err);
  return Napi::Number::New(env, static_cast<double>(PoolFor(device)->Trim()));
}

Napi::Value KilnAddon::MemcpyHtoD(const Napi::CallbackInfo& info) {
  return StartCopy(info, true, info[0], info[1], info[2]);  // (dst, dstOffset, src)
}

Napi::Value KilnAddon::MemcpyDtoH(const Napi::CallbackInfo& info) {
  return StartCopy(info, false, info[1], info[2], info[0]);  // (dst, src, srcOffset)
}

// memcpyHtoDSync(dst, dstOffset, src): returns when the copy is done (blocks the JS thread)
Napi::Value KilnAddon::MemcpyHtoDSync(const Napi::CallbackInfo& info) {
  return CopyNow(info, true, info[0], info[1], info[2]);
}

// memcpyDtoHSync(dst, src, srcOffset): returns when the copy is done (blocks the JS thread)
Napi::Value KilnAddon::MemcpyDtoHSync(const Napi::CallbackInfo& info) {
  return CopyNow(info, false, info[1], info[2], info[0]);
}

// memcpyDtoD(dst, dstOffset, src, srcOffset, bytes): queued on kiln's stream, returns at once
Napi::Value KilnAddon::MemcpyDtoD(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  DeviceMemory dst = LiveMemory(info[0]);
  DeviceMemory src = LiveMemory(info[2]);
  int64_t dstOff = GetInt(info[1], "dstOffset"), srcOff = GetInt(info[3], "srcOffset");
  int64_t bytes = GetInt(info[4], "bytes");
  CheckRange(env, dst, dstOff, bytes);
  CheckRange(env, src, srcOff, bytes);
  if (dst.device != src.device) ThrowArg(env, "copies between devices are not supported");
  ErrorInfo err;
  CUstream s = d.Stream(dst.device, &err);
  if (s == nullptr ||
      !d.Check(d.api().cuMemcpyDtoDAsync(dst.ptr + dstOff, src.ptr + srcOff, bytes, s),
               "cuMemcpyDtoDAsync", &err))
    throw MakeError(env, err);
  return env.Undefined();
}

// memset(dst, offset, byteValue, bytes): queued on kiln's stream, returns at once
Napi::Value KilnAddon::MemsetD8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Driver& d = RequireDriver(env);
  DeviceMemory dst = LiveMemory(info[0]);
  int64_t offset = GetInt(info[1], "offset"), value = GetInt(info[2], "value");
  int64_t bytes = GetInt(info[3], "bytes");
  CheckRange(env, dst, offset, bytes);
  ErrorInfo err;
  CUstream s = d.Stream(dst.device, &err);
  if (s == nullptr ||
      !d.Check(d.api().cuMemsetD8Async(dst.ptr + offset, static_cast<unsigned char>(value),
                                       bytes, s),
               "cuMemsetD8Async", &err))
    throw MakeError(env, err);
  return env.Undefined();
}

}  // namespace kiln
