// The CUDA driver, dlopen'd at run time: one process-wide instance, since dlopen, cuInit
// and primary contexts are per process. Never dlclose'd.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "cuda_api.h"

namespace kiln {

/** Driver entry points kiln uses, resolved once. */
struct DriverApi {
  PFN_cuInit cuInit = nullptr;
  PFN_cuDriverGetVersion cuDriverGetVersion = nullptr;
  PFN_cuDeviceGetCount cuDeviceGetCount = nullptr;
  PFN_cuDeviceGet cuDeviceGet = nullptr;
  PFN_cuDeviceGetName cuDeviceGetName = nullptr;
  PFN_cuDeviceGetAttribute cuDeviceGetAttribute = nullptr;
  PFN_cuDeviceTotalMem_v2 cuDeviceTotalMem = nullptr;
  PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain = nullptr;
  PFN_cuCtxSetCurrent cuCtxSetCurrent = nullptr;
  PFN_cuGetErrorName cuGetErrorName = nullptr;
  PFN_cuGetErrorString cuGetErrorString = nullptr;
  PFN_cuMemAlloc_v2 cuMemAlloc = nullptr;
  PFN_cuMemFree_v2 cuMemFree = nullptr;
  PFN_cuMemcpyHtoD_v2 cuMemcpyHtoD = nullptr;
  PFN_cuMemcpyDtoH_v2 cuMemcpyDtoH = nullptr;
  PFN_cuModuleLoadData cuModuleLoadData = nullptr;
  PFN_cuModuleUnload cuModuleUnload = nullptr;
  PFN_cuModuleGetFunction cuModuleGetFunction = nullptr;
  PFN_cuLaunchKernel cuLaunchKernel = nullptr;
  PFN_cuStreamSynchronize cuStreamSynchronize = nullptr;
  PFN_cuStreamCreate cuStreamCreate = nullptr;
  PFN_cuStreamDestroy_v2 cuStreamDestroy = nullptr;
  PFN_cuEventCreate cuEventCreate = nullptr;
  PFN_cuEventDestroy_v2 cuEventDestroy = nullptr;
  PFN_cuEventRecord cuEventRecord = nullptr;
  PFN_cuEventSynchronize cuEventSynchronize = nullptr;
  PFN_cuEventQuery cuEventQuery = nullptr;
  PFN_cuMemGetInfo_v2 cuMemGetInfo = nullptr;
  PFN_cuMemcpyHtoDAsync_v2 cuMemcpyHtoDAsync = nullptr;
  PFN_cuMemcpyDtoHAsync_v2 cuMemcpyDtoHAsync = nullptr;
  PFN_cuMemcpyDtoDAsync_v2 cuMemcpyDtoDAsync = nullptr;
  PFN_cuMemsetD8Async cuMemsetD8Async = nullptr;
  PFN_cuFuncGetAttribute cuFuncGetAttribute = nullptr;
  PFN_cuFuncSetAttribute cuFuncSetAttribute = nullptr;
  PFN_cuStreamBeginCapture_v2 cuStreamBeginCapture = nullptr;
  PFN_cuStreamEndCapture cuStreamEndCapture = nullptr;
  PFN_cuGraphInstantiateWithFlags cuGraphInstantiateWithFlags = nullptr;
  PFN_cuGraphLaunch cuGraphLaunch = nullptr;
  PFN_cuGraphExecDestroy cuGraphExecDestroy = nullptr;
  PFN_cuGraphDestroy cuGraphDestroy = nullptr;
  // Optional (CUDA >= 12.4): lets a plan check each kernel's parameter list against its ABI.
  PFN_cuFuncGetParamInfo cuFuncGetParamInfo = nullptr;
};

/** One CUDA device as `info()` reports it. */
struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  size_t totalMemory = 0;
  int smCount = 0;
};

/** The process-wide CUDA driver: loaded on first use, then immutable except for contexts. */
class Driver {
 public:
  /** The process-wide instance; loads libcuda on first call (thread-safe). */
  static Driver& Get();

  bool available() const { return available_; }
  /** Why CUDA is unavailable (empty when available). */
  const std::string& reason() const { return reason_; }
  const DriverApi& api() const { return api_; }
  int version() const { return version_; }
  const std::vector<DeviceInfo>& devices() const { return devices_; }

  /**
   * Makes device `ordinal`'s primary context current on the calling thread, retaining it
   * on first use. Returns false and fills `err` when unavailable or the call fails.
   */
  bool UseDevice(int ordinal, ErrorInfo* err);

  /**
   * kiln's stream on device `ordinal` (created on first use, non-blocking, process-wide).
   * Every copy, launch and graph replay of kiln runs on it, so work is ordered and a freed
   * block the caching allocator hands out again is only reused after earlier work on it.
   * Makes the device current. Returns nullptr and fills `err` on failure.
   */
  CUstream Stream(int ordinal, ErrorInfo* err);

  /** "CUDA_ERROR_X (description)" for a driver result. */
  std::string Describe(CUresult r) const;
  /** "CUDA_ERROR_X" for a driver result. */
  std::string Name(CUresult r) const;
  /** Fills `err` for a failed call `what`; returns false so callers can `return Check(...)`. */
  bool Check(CUresult r, const std::string& what, ErrorInfo* err) const;

 private:
  Driver();
  bool Load();
  bool Resolve(void* lib);

  bool available_ = false;
  std::string reason_;
  DriverApi api_;
  int version_ = 0;
  std::vector<DeviceInfo> devices_;
  std::mutex ctxMutex_;
  std::vector<CUcontext> contexts_;  // primary contexts by ordinal, retained lazily
  std::vector<CUstream> streams_;    // kiln's stream per ordinal, created lazily
};

/** Throws KILN_CUDA_UNAVAILABLE unless the driver loaded and found a device. */
Driver& RequireDriver(Napi::Env env);

}  // namespace kiln
