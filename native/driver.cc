// Loading the CUDA driver with dlopen and resolving its entry points.
#include "driver.h"

#include <dlfcn.h>

namespace kiln {

namespace {
// Entry points are resolved as of this ABI version, so a newer driver's changed
// signatures (e.g. cuCtxCreate in CUDA 13) never reach kiln.
constexpr int kPinnedCudaVersion = 12000;
}  // namespace

Driver& Driver::Get() {
  static Driver* driver = new Driver();  // leaked on purpose: the driver outlives every env
  return *driver;
}

Driver::Driver() { available_ = Load(); }

bool Driver::Resolve(void* lib) {
  auto getProc = reinterpret_cast<PFN_cuGetProcAddress_v2>(dlsym(lib, "cuGetProcAddress_v2"));
  std::string missing;
  bool optional = false;  // set around lookups that may fail on an older driver
  // With cuGetProcAddress_v2 a base name yields the variant of the pinned version; an
  // older driver lacks it, so the explicit _v2 names are looked up with dlsym instead.
  auto find = [&](const char* base, const char* versioned, auto& slot) {
    void* fn = nullptr;
    if (getProc != nullptr) {
      CUdriverProcAddressQueryResult status = 0;
      if (getProc(base, &fn, kPinnedCudaVersion, KILN_CU_GET_PROC_ADDRESS_DEFAULT, &status) != 0)
        fn = nullptr;
    }
    if (fn == nullptr) fn = dlsym(lib, versioned);
    if (fn == nullptr && missing.empty() && !optional) missing = versioned;
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(fn);
  };
  find("cuInit", "cuInit", api_.cuInit);
  find("cuDriverGetVersion", "cuDriverGetVersion", api_.cuDriverGetVersion);
  find("cuDeviceGetCount", "cuDeviceGetCount", api_.cuDeviceGetCount);
  find("cuDeviceGet", "cuDeviceGet", api_.cuDeviceGet);
  find("cuDeviceGetName", "cuDeviceGetName", api_.cuDeviceGetName);
  find("cuDeviceGetAttribute", "cuDeviceGetAttribute", api_.cuDeviceGetAttribute);
  find("cuDeviceTotalMem", "cuDeviceTotalMem_v2", api_.cuDeviceTotalMem);
  find("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", api_.cuDevicePrimaryCtxRetain);
  find("cuCtxSetCurrent", "cuCtxSetCurrent", api_.cuCtxSetCurrent);
  find("cuGetErrorName", "cuGetErrorName", api_.cuGetErrorName);
  find("cuGetErrorString", "cuGetErrorString", api_.cuGetErrorString);
  find("cuMemAlloc", "cuMemAlloc_v2", api_.cuMemAlloc);
  find("cuMemFree", "cuMemFree_v2", api_.cuMemFree);
  find("cuMemcpyHtoD", "cuMemcpyHtoD_v2", api_.cuMemcpyHtoD);
  find("cuMemcpyDtoH", "cuMemcpyDtoH_v2", api_.cuMemcpyDtoH);
  find("cuModuleLoadData", "cuModuleLoadData", api_.cuModuleLoadData);
  find("cuModuleUnload", "cuModuleUnload", api_.cuModuleUnload);
  find("cuModuleGetFunction", "cuModuleGetFunction", api_.cuModuleGetFunction);
  find("cuLaunchKernel", "cuLaunchKernel", api_.cuLaunchKernel);
  find("cuStreamSynchronize", "cuStreamSynchronize", api_.cuStreamSynchronize);
  find("cuStreamCreate", "cuStreamCreate", api_.cuStreamCreate);
  find("cuStreamDestroy", "cuStreamDestroy_v2", api_.cuStreamDestroy);
  find("cuEventCreate", "cuEventCreate", api_.cuEventCreate);
  find("cuEventDestroy", "cuEventDestroy_v2", api_.cuEventDestroy);
  find("cuEventRecord", "cuEventRecord", api_.cuEventRecord);
  find("cuEventSynchronize", "cuEventSynchronize", api_.cuEventSynchronize);
  find("cuEventQuery", "cuEventQuery", api_.cuEventQuery);
  find("cuMemGetInfo", "cuMemGetInfo_v2", api_.cuMemGetInfo);
  find("cuMemcpyHtoDAsync", "cuMemcpyHtoDAsync_v2", api_.cuMemcpyHtoDAsync);
  find("cuMemcpyDtoHAsync", "cuMemcpyDtoHAsync_v2", api_.cuMemcpyDtoHAsync);
  find("cuMemcpyDtoDAsync", "cuMemcpyDtoDAsync_v2", api_.cuMemcpyDtoDAsync);
  find("cuMemsetD8Async", "cuMemsetD8Async", api_.cuMemsetD8Async);
  find("cuFuncGetAttribute", "cuFuncGetAttribute", api_.cuFuncGetAttribute);
  find("cuFuncSetAttribute", "cuFuncSetAttribute", api_.cuFuncSetAttribute);
  find("cuStreamBeginCapture", "cuStreamBeginCapture_v2", api_.cuStreamBeginCapture);
  find("cuStreamEndCapture", "cuStreamEndCapture", api_.cuStreamEndCapture);
  find("cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags",
       api_.cuGraphInstantiateWithFlags);
  find("cuGraphLaunch", "cuGraphLaunch", api_.cuGraphLaunch);
  find("cuGraphExecDestroy", "cuGraphExecDestroy", api_.cuGraphExecDestroy);
  find("cuGraphDestroy", "cuGraphDestroy", api_.cuGraphDestroy);
  optional = true;  // newer than the pinned version: only dlsym finds it
  find("cuFuncGetParamInfo", "cuFuncGetParamInfo", api_.cuFuncGetParamInfo);
  optional = false;
  if (!missing.empty()) {
    reason_ = "libcuda.so.1 lacks " + missing + ": the NVIDIA driver is too old for kiln";
    return false;
  }
  return true;
}

bool Driver::Load() {
  dlerror();
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    reason_ = std::string("libcuda.so.1 not found (dlopen: ") + (why ? why : "unknown error") +
              "): no NVIDIA driver on this machine";
    return false;
  }
  if (!Resolve(lib)) return false;
  CUresult r = api_.cuInit(0);
  if (r != 0) {
    reason_ = "cuInit failed: " + Describe(r);
    return false;
  }
  api_.cuDriverGetVersion(&version_);
  int count = 0;
  r = api_.cuDeviceGetCount(&count);
  if (r != 0 || count == 0) {
    reason_ = r != 0 ? "cuDeviceGetCount failed: " + Describe(r)
                     : "the NVIDIA driver found no CUDA device";
    return false;
  }
  for (int i = 0; i < count; i++) {
    CUdevice dev = 0;
    DeviceInfo d;
    d.index = i;
    char name[256] = {0};
    if (api_.cuDeviceGet(&dev, i) != 0) continue;
    api_.cuDeviceGetName(name, sizeof(name) - 1, dev);
    d.name = name;
    api_.cuDeviceGetAttribute(&d.major, KILN_CU_ATTR_COMPUTE_CAPABILITY_MAJOR, dev);
    api_.cuDeviceGetAttribute(&d.minor, KILN_CU_ATTR_COMPUTE_CAPABILITY_MINOR, dev);
    api_.cuDeviceGetAttribute(&d.smCount, KILN_CU_ATTR_MULTIPROCESSOR_COUNT, dev);
    api_.cuDeviceTotalMem(&d.totalMemory, dev);
    devices_.push_back(d);
  }
  contexts_.assign(devices_.size(), nullptr);
  streams_.assign(devices_.size(), nullptr);
  return true;
}

bool Driver::UseDevice(int ordinal, ErrorInfo* err) {
  if (!available_) {
    *err = {"KILN_CUDA_UNAVAILABLE", "CUDA is unavailable: " + reason_, "", ""};
    return false;
  }
  if (ordinal < 0 || ordinal >= static_cast<int>(devices_.size())) {
    *err = {"KILN_ARGUMENT",
            "device " + std::to_string(ordinal) + " does not exist (" +
                std::to_string(devices_.size()) + " CUDA devices)",
            "", ""};
    return false;
  }
  CUcontext ctx = nullptr;
  {
    std::lock_guard<std::mutex> lock(ctxMutex_);
    if (contexts_[ordinal] == nullptr) {
      CUdevice dev = 0;
      if (!Check(api_.cuDeviceGet(&dev, ordinal), "cuDeviceGet", err)) return false;
      // The primary context is shared with every other CUDA user in the process; it is
      // retained once and kept for the process's life (creating one costs 100-500 ms).
      if (!Check(api_.cuDevicePrimaryCtxRetain(&contexts_[ordinal], dev),
                 "cuDevicePrimaryCtxRetain", err))
        return false;
    }
    ctx = contexts_[ordinal];
  }
  return Check(api_.cuCtxSetCurrent(ctx), "cuCtxSetCurrent", err);
}

CUstream Driver::Stream(int ordinal, ErrorInfo* err) {
  if (!UseDevice(ordinal, err)) return nullptr;
  std::lock_guard<std::mutex> lock(ctxMutex_);
  if (streams_[ordinal] == nullptr &&
      !Check(api_.cuStreamCreate(&streams_[ordinal], KILN_CU_STREAM_NON_BLOCKING),
             "cuStreamCreate", err))
    return nullptr;
  return streams_[ordinal];
}

std::string Driver::Name(CUresult r) const {
  const char* name = nullptr;
  if (api_.cuGetErrorName == nullptr || api_.cuGetErrorName(r, &name) != 0 || name == nullptr)
    return "CUDA_ERROR_" + std::to_string(r);
  return name;
}

std::string Driver::Describe(CUresult r) const {
  const char* text = nullptr;
  std::string out = Name(r);
  if (api_.cuGetErrorString != nullptr && api_.cuGetErrorString(r, &text) == 0 && text)
    out += std::string(" (") + text + ")";
  return out;
}

bool Driver::Check(CUresult r, const std::string& what, ErrorInfo* err) const {
  if (r == 0) return true;
  *err = {"KILN_CUDA_ERROR", what + " failed: " + Describe(r), Name(r), ""};
  return false;
}

Driver& RequireDriver(Napi::Env env) {
  Driver& d = Driver::Get();
  if (!d.available()) Throw(env, "KILN_CUDA_UNAVAILABLE", "CUDA is unavailable: " + d.reason());
  return d;
}

}  // namespace kiln
