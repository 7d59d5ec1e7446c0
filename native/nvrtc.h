// NVRTC, found by an explicit search and dlopen'd at run time. Once loaded it stays loaded
// for the process (never dlclose'd); a failed search is not cached so it can be retried
// with more candidates (lib/ passes Python site-packages dirs only when needed).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "cuda_api.h"

namespace kiln {

/** NVRTC entry points kiln uses. */
struct NvrtcApi {
  PFN_nvrtcVersion nvrtcVersion = nullptr;
  PFN_nvrtcGetNumSupportedArchs nvrtcGetNumSupportedArchs = nullptr;
  PFN_nvrtcGetSupportedArchs nvrtcGetSupportedArchs = nullptr;
  PFN_nvrtcGetErrorString nvrtcGetErrorString = nullptr;
  PFN_nvrtcCreateProgram nvrtcCreateProgram = nullptr;
  PFN_nvrtcDestroyProgram nvrtcDestroyProgram = nullptr;
  PFN_nvrtcCompileProgram nvrtcCompileProgram = nullptr;
  PFN_nvrtcGetSize nvrtcGetProgramLogSize = nullptr;
  PFN_nvrtcGetData nvrtcGetProgramLog = nullptr;
  PFN_nvrtcGetSize nvrtcGetPTXSize = nullptr;
  PFN_nvrtcGetData nvrtcGetPTX = nullptr;
  PFN_nvrtcGetSize nvrtcGetCUBINSize = nullptr;
  PFN_nvrtcGetData nvrtcGetCUBIN = nullptr;
};

/** Where to look, in search order after the already-loaded check. */
struct NvrtcSearch {
  std::string envPath;                  // KILN_NVRTC_PATH: a file or a directory; "" if unset
  std::vector<std::string> cudaHomes;   // "CUDA_PATH=/x" or "CUDA_HOME=/y" entries
  std::vector<std::string> siteDirs;    // Python site-packages lib dirs, e.g. .../nvidia/cu13/lib
};

/** The outcome of a search. */
struct NvrtcStatus {
  bool loaded = false;
  std::string path;     // the library that was loaded
  std::string foundBy;  // e.g. "env KILN_NVRTC_PATH", "site-packages"
  int major = 0, minor = 0;
  std::vector<int> archs;           // e.g. 75, 80, 90 (the sm_ numbers)
  std::vector<std::string> tried;   // "<path> [<method>]: <outcome>" per candidate
  std::string errorCode;            // KILN_NVRTC_UNAVAILABLE or KILN_NVRTC_BAD_PATH
  std::string error;
};

/** The process-wide NVRTC loader. */
class Nvrtc {
 public:
  static Nvrtc& Get();
  /** Returns the loaded status, or searches (thread-safe); a success is kept for good. */
  NvrtcStatus Load(const NvrtcSearch& search);
  /** The loaded status if NVRTC is loaded, else a status with loaded = false and no search. */
  NvrtcStatus Current();
  /** The entry points; null until a Load() succeeded. */
  const NvrtcApi* api();

 private:
  std::mutex mutex_;
  bool loaded_ = false;
  NvrtcStatus status_;
  NvrtcApi api_;
};

}  // namespace kiln
