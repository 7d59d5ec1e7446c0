// Loaded CUDA modules and their kernels, shared by the launch primitives (launch.cc) and the
// plan executor (executor.cc).
#pragma once

#include <memory>
#include <string>

#include "common.h"
#include "driver.h"

namespace kiln {

/** A loaded CUmodule; unloaded explicitly, or when the last holder of it is gone. */
struct ModuleState {
  CUmodule module = nullptr;
  int device = 0;
  bool unloaded = true;  // until cuModuleLoadData succeeds
  /** Waits for kiln's stream (kernels of this module may be queued), then unloads. */
  bool Unload(ErrorInfo* err);
  ~ModuleState() {
    ErrorInfo ignored;
    Unload(&ignored);
  }
};

/** The JS-visible module handle. */
struct ModuleHandle {
  std::shared_ptr<ModuleState> state;
};

/** A kernel; it keeps its module's state alive so a launch can check it was not unloaded. */
struct FunctionHandle {
  std::shared_ptr<ModuleState> module;
  CUfunction fn;
  std::string name;
};

}  // namespace kiln
