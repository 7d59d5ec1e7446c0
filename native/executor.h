// The plan executor's state (executor.cc binds it to JS; graph.cc enqueues its work).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "driver.h"
#include "module.h"

namespace kiln {

/** One kernel of a plan, with what the driver says about it. */
struct KernelInfo {
  std::string name;
  CUfunction fn = nullptr;
  int registers = 0;
  int localBytes = 0;          // per-thread local memory (stack, spills)
  int maxThreadsPerBlock = 1024;
  int params = -1;             // parameter count from cuFuncGetParamInfo; -1 if unknown
};

/** One launch: which kernel, its buffer parameters (plan buffer ids), block and shared. */
struct StepSpec {
  int kernel = 0;
  std::vector<uint32_t> buffers;
  unsigned block[3] = {1, 1, 1};
  unsigned sharedBytes = 0;
};

/** A device-to-device copy queued after the steps: buffer `src` into buffer `dst`. */
struct CopySpec {
  uint32_t dst = 0, src = 0;
};

/** The per-call inputs, read from JS typed arrays on the JS thread. */
struct RunArgs {
  const uint64_t* ptrs = nullptr;   // device pointer per plan buffer
  const int64_t* syms = nullptr;    // value per plan symbol
  const uint32_t* grids = nullptr;  // grid x, y, z per step; a 0 skips the step (empty tensor)
  const uint64_t* copyBytes = nullptr;  // bytes per copy; 0 skips it
};

/** A captured, instantiated graph for one (pointers, symbols, grids) key. */
struct GraphEntry {
  uint64_t hash = 0;
  std::vector<uint64_t> key;
  CUgraphExec exec = nullptr;
  uint64_t lastUse = 0;
};

struct ExecutorStats {
  uint64_t runs = 0;
  uint64_t kernelLaunches = 0;  // launched one by one (no graph)
  uint64_t copies = 0;          // copies queued one by one (no graph)
  uint64_t graphLaunches = 0;   // replays of a cached graph (including right after capture)
  uint64_t graphCaptures = 0;
  uint64_t graphEvictions = 0;
  int64_t enqueueNs = 0;        // host time spent inside run(), summed: the per-call overhead
  int64_t lastEnqueueNs = 0;
  int64_t captureNs = 0;        // part of enqueueNs spent capturing and instantiating
};

/**
 * Launches a plan's steps on a stream. Graph mode keeps up to kMaxGraphs instantiated
 * graphs, least recently used out; a key is captured on its second sighting, so calls whose
 * pointers never repeat (outputs kept alive) pay no capture cost.
 */
struct PlanExecutor {
  static constexpr size_t kMaxGraphs = 16;
  static constexpr size_t kSeenRing = 32;

  std::shared_ptr<ModuleState> module;
  int device = 0;
  size_t numBuffers = 0, numSymbols = 0;
  std::vector<KernelInfo> kernels;
  std::vector<StepSpec> steps;
  std::vector<CopySpec> copies;
  std::vector<uint64_t> args;  // scratch parameter buffer, 8 bytes per parameter
  std::vector<uint64_t> key;   // scratch graph key of the run being enqueued
  CUstream captureStream = nullptr;
  std::vector<GraphEntry> graphs;
  std::vector<uint64_t> seen;  // hashes of keys seen once, a ring of kSeenRing
  size_t seenNext = 0;
  uint64_t clock = 0;
  ExecutorStats stats;
  std::string graphError;  // why capture failed; graphs are then off for this executor
  bool disposed = false;

  /** Queues one run on `stream` (eagerly or as a graph). Fills `err` on failure. */
  bool Enqueue(const RunArgs& a, CUstream stream, bool graph, ErrorInfo* err);
  /** Destroys graphs and the capture stream; the executor can no longer run. */
  void Dispose();
  ~PlanExecutor() { Dispose(); }

 private:
  bool LaunchSteps(const RunArgs& a, CUstream stream, ErrorInfo* err);
  bool Capture(const RunArgs& a, CUgraphExec* exec, ErrorInfo* err);
  GraphEntry* FindGraph(uint64_t hash);
};

}  // namespace kiln
