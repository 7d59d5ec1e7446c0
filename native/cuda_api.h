// kiln's own minimal declarations of the CUDA driver and NVRTC C APIs.
// kiln never includes cuda.h or links CUDA: both libraries are dlopen'd at run time, so
// only the handful of types, enum values and function shapes used here are declared.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// ---- CUDA driver API ----------------------------------------------------------------
typedef int CUresult;  // CUDA_SUCCESS = 0; every other value is an error code
typedef int CUdevice;
typedef struct CUctx_st* CUcontext;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef struct CUgraph_st* CUgraph;
typedef struct CUgraphExec_st* CUgraphExec;
typedef unsigned long long CUdeviceptr;  // the _v2 ABI: 64-bit device addresses
typedef uint64_t cuuint64_t;

enum : int {
  KILN_CUDA_SUCCESS = 0,
  KILN_CUDA_ERROR_INVALID_VALUE = 1,
  KILN_CUDA_ERROR_OUT_OF_MEMORY = 2,
  KILN_CUDA_ERROR_NOT_INITIALIZED = 3,
  KILN_CUDA_ERROR_NO_DEVICE = 100,
  KILN_CUDA_ERROR_NOT_READY = 600,
};

// Flags and modes kiln passes.
enum : unsigned {
  KILN_CU_STREAM_NON_BLOCKING = 0x1,      // no implicit sync with the legacy default stream
  KILN_CU_EVENT_DISABLE_TIMING = 0x2,     // cheaper record/sync
  KILN_CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1,
};

// CUfunction_attribute values kiln reads or sets.
enum : int {
  KILN_CU_FUNC_ATTR_MAX_THREADS_PER_BLOCK = 0,
  KILN_CU_FUNC_ATTR_LOCAL_SIZE_BYTES = 3,
  KILN_CU_FUNC_ATTR_NUM_REGS = 4,
  KILN_CU_FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};

// CUdevice_attribute values kiln reads.
enum KilnDeviceAttribute : int {
  KILN_CU_ATTR_MULTIPROCESSOR_COUNT = 16,
  KILN_CU_ATTR_COMPUTE_CAPABILITY_MAJOR = 75,
  KILN_CU_ATTR_COMPUTE_CAPABILITY_MINOR = 76,
};

// cuLaunchKernel's `extra` keys for passing all kernel arguments as one packed buffer.
#define KILN_CU_LAUNCH_PARAM_END ((void*)0x00)
#define KILN_CU_LAUNCH_PARAM_BUFFER_POINTER ((void*)0x01)
#define KILN_CU_LAUNCH_PARAM_BUFFER_SIZE ((void*)0x02)

// cuGetProcAddress_v2 (CUDA >= 12.0).
typedef int CUdriverProcAddressQueryResult;
#define KILN_CU_GET_PROC_ADDRESS_DEFAULT 0ULL

typedef CUresult (*PFN_cuGetProcAddress_v2)(const char* symbol, void** pfn, int cudaVersion,
                                            cuuint64_t flags,
                                            CUdriverProcAddressQueryResult* symbolStatus);
typedef CUresult (*PFN_cuInit)(unsigned int flags);
typedef CUresult (*PFN_cuDriverGetVersion)(int* version);
typedef CUresult (*PFN_cuDeviceGetCount)(int* count);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice* device, int ordinal);
typedef CUresult (*PFN_cuDeviceGetName)(char* name, int len, CUdevice dev);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int* value, int attrib, CUdevice dev);
typedef CUresult (*PFN_cuDeviceTotalMem_v2)(size_t* bytes, CUdevice dev);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext* ctx, CUdevice dev);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext ctx);
typedef CUresult (*PFN_cuGetErrorName)(CUresult error, const char** str);
typedef CUresult (*PFN_cuGetErrorString)(CUresult error, const char** str);
typedef CUresult (*PFN_cuMemAlloc_v2)(CUdeviceptr* dptr, size_t bytes);
typedef CUresult (*PFN_cuMemFree_v2)(CUdeviceptr dptr);
typedef CUresult (*PFN_cuMemcpyHtoD_v2)(CUdeviceptr dst, const void* src, size_t bytes);
typedef CUresult (*PFN_cuMemcpyDtoH_v2)(void* dst, CUdeviceptr src, size_t bytes);
typedef CUresult (*PFN_cuModuleLoadData)(CUmodule* module, const void* image);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule module);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction* fn, CUmodule module, const char* name);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction f, unsigned gridX, unsigned gridY,
                                       unsigned gridZ, unsigned blockX, unsigned blockY,
                                       unsigned blockZ, unsigned sharedMemBytes, CUstream stream,
                                       void** kernelParams, void** extra);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream stream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream* stream, unsigned flags);
typedef CUresult (*PFN_cuStreamDestroy_v2)(CUstream stream);
typedef CUresult (*PFN_cuEventCreate)(CUevent* event, unsigned flags);
typedef CUresult (*PFN_cuEventDestroy_v2)(CUevent event);
typedef CUresult (*PFN_cuEventRecord)(CUevent event, CUstream stream);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent event);
typedef CUresult (*PFN_cuEventQuery)(CUevent event);
typedef CUresult (*PFN_cuMemGetInfo_v2)(size_t* free, size_t* total);
typedef CUresult (*PFN_cuMemcpyHtoDAsync_v2)(CUdeviceptr dst, const void* src, size_t bytes,
                                             CUstream stream);
typedef CUresult (*PFN_cuMemcpyDtoHAsync_v2)(void* dst, CUdeviceptr src, size_t bytes,
                                             CUstream stream);
typedef CUresult (*PFN_cuMemcpyDtoDAsync_v2)(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                                             CUstream stream);
typedef CUresult (*PFN_cuMemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t n,
                                        CUstream stream);
typedef CUresult (*PFN_cuFuncGetAttribute)(int* value, int attrib, CUfunction fn);
typedef CUresult (*PFN_cuFuncSetAttribute)(CUfunction fn, int attrib, int value);
typedef CUresult (*PFN_cuFuncGetParamInfo)(CUfunction fn, size_t index, size_t* offset,
                                           size_t* size);
typedef CUresult (*PFN_cuStreamBeginCapture_v2)(CUstream stream, unsigned mode);
typedef CUresult (*PFN_cuStreamEndCapture)(CUstream stream, CUgraph* graph);
typedef CUresult (*PFN_cuGraphInstantiateWithFlags)(CUgraphExec* exec, CUgraph graph,
                                                    unsigned long long flags);
typedef CUresult (*PFN_cuGraphLaunch)(CUgraphExec exec, CUstream stream);
typedef CUresult (*PFN_cuGraphExecDestroy)(CUgraphExec exec);
typedef CUresult (*PFN_cuGraphDestroy)(CUgraph graph);

// ---- NVRTC --------------------------------------------------------------------------
typedef int nvrtcResult;  // NVRTC_SUCCESS = 0
typedef struct _nvrtcProgram* nvrtcProgram;

enum : int {
  KILN_NVRTC_SUCCESS = 0,
  KILN_NVRTC_ERROR_COMPILATION = 6,
};

typedef nvrtcResult (*PFN_nvrtcVersion)(int* major, int* minor);
typedef nvrtcResult (*PFN_nvrtcGetNumSupportedArchs)(int* count);
typedef nvrtcResult (*PFN_nvrtcGetSupportedArchs)(int* archs);
typedef const char* (*PFN_nvrtcGetErrorString)(nvrtcResult result);
typedef nvrtcResult (*PFN_nvrtcCreateProgram)(nvrtcProgram* prog, const char* src,
                                              const char* name, int numHeaders,
                                              const char* const* headers,
                                              const char* const* includeNames);
typedef nvrtcResult (*PFN_nvrtcDestroyProgram)(nvrtcProgram* prog);
typedef nvrtcResult (*PFN_nvrtcCompileProgram)(nvrtcProgram prog, int numOptions,
                                               const char* const* options);
typedef nvrtcResult (*PFN_nvrtcGetSize)(nvrtcProgram prog, size_t* size);
typedef nvrtcResult (*PFN_nvrtcGetData)(nvrtcProgram prog, char* out);

}  // extern "C"
