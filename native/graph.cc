// Enqueuing a plan: one launch per step then its output copies, or a CUDA graph captured
// from those and replayed while the (pointers, symbols, grids, copy sizes) key repeats.
#include <algorithm>
#include <chrono>

#include "executor.h"

namespace kiln {

namespace {

/** FNV-1a over 64-bit words, finished with a murmur mix: keys differ in a few words only. */
uint64_t HashKey(const std::vector<uint64_t>& key) {
  uint64_t h = 1469598103934665603ULL;
  for (uint64_t w : key) h = (h ^ w) * 1099511628211ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  return h ^ (h >> 33);
}

bool Empty(const uint32_t* g) { return g[0] == 0 || g[1] == 0 || g[2] == 0; }

}  // namespace

bool PlanExecutor::LaunchSteps(const RunArgs& a, CUstream stream, ErrorInfo* err) {
  Driver& d = Driver::Get();
  for (size_t i = 0; i < steps.size(); i++) {
    const StepSpec& s = steps[i];
    const uint32_t* g = a.grids + 3 * i;
    if (Empty(g)) continue;  // an empty tensor: nothing to compute, and a 0 grid is invalid
    size_t n = 0;
    for (uint32_t b : s.buffers) args[n++] = a.ptrs[b];
    for (size_t k = 0; k < numSymbols; k++) args[n++] = static_cast<uint64_t>(a.syms[k]);
    size_t size = n * sizeof(uint64_t);
    // The packed form needs no per-parameter pointers; the driver copies it during the call.
    void* extra[] = {KILN_CU_LAUNCH_PARAM_BUFFER_POINTER, args.data(),
                     KILN_CU_LAUNCH_PARAM_BUFFER_SIZE, &size, KILN_CU_LAUNCH_PARAM_END};
    CUresult r = d.api().cuLaunchKernel(kernels[s.kernel].fn, g[0], g[1], g[2], s.block[0],
                                        s.block[1], s.block[2], s.sharedBytes, stream, nullptr,
                                        n > 0 ? extra : nullptr);
    if (r != 0)
      return d.Check(r, "cuLaunchKernel (step " + std::to_string(i) + ", kernel " +
                            kernels[s.kernel].name + ")", err);
  }
  for (size_t i = 0; i < copies.size(); i++) {
    if (a.copyBytes[i] == 0) continue;
    CUresult r = d.api().cuMemcpyDtoDAsync(a.ptrs[copies[i].dst], a.ptrs[copies[i].src],
                                           a.copyBytes[i], stream);
    if (r != 0) return d.Check(r, "cuMemcpyDtoDAsync (copy " + std::to_string(i) + ")", err);
  }
  return true;
}

bool PlanExecutor::Capture(const RunArgs& a, CUgraphExec* exec, ErrorInfo* err) {
  Driver& d = Driver::Get();
  const DriverApi& api = d.api();
  // A private stream, captured thread-locally: the copies and runs other threads put on
  // kiln's stream meanwhile can neither join nor invalidate the capture.
  if (captureStream == nullptr &&
      !d.Check(api.cuStreamCreate(&captureStream, KILN_CU_STREAM_NON_BLOCKING), "cuStreamCreate", err))
    return false;
  if (!d.Check(api.cuStreamBeginCapture(captureStream, KILN_CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
               "cuStreamBeginCapture", err))
    return false;
  bool ok = LaunchSteps(a, captureStream, err);
  CUgraph graph = nullptr;
  CUresult r = api.cuStreamEndCapture(captureStream, &graph);  // always ends the capture
  if (ok) ok = d.Check(r, "cuStreamEndCapture", err);
  if (ok) ok = d.Check(api.cuGraphInstantiateWithFlags(exec, graph, 0), "cuGraphInstantiate", err);
  if (graph != nullptr) api.cuGraphDestroy(graph);  // the instantiated graph stands alone
  return ok;
}

GraphEntry* PlanExecutor::FindGraph(uint64_t hash) {
  for (GraphEntry& g : graphs)
    if (g.hash == hash && g.key == key) return &g;
  return nullptr;
}

bool PlanExecutor::Enqueue(const RunArgs& a, CUstream stream, bool graph, ErrorInfo* err) {
  stats.runs++;
  size_t live = 0, copied = 0;
  for (size_t i = 0; i < steps.size(); i++) live += Empty(a.grids + 3 * i) ? 0 : 1;
  for (size_t i = 0; i < copies.size(); i++) copied += a.copyBytes[i] == 0 ? 0 : 1;
  auto eager = [&] {
    stats.kernelLaunches += live;
    stats.copies += copied;
    return LaunchSteps(a, stream, err);
  };
  if (!graph || live + copied == 0 || !graphError.empty()) return eager();
  // The key, in a kept buffer: a replay allocates nothing.
  key.assign(a.ptrs, a.ptrs + numBuffers);
  key.insert(key.end(), a.syms, a.syms + numSymbols);
  key.insert(key.end(), a.grids, a.grids + 3 * steps.size());
  key.insert(key.end(), a.copyBytes, a.copyBytes + copies.size());
  const uint64_t hash = HashKey(key);
  GraphEntry* entry = FindGraph(hash);
  if (entry == nullptr) {
    if (std::find(seen.begin(), seen.end(), hash) == seen.end()) {
      // First sighting: launch eagerly and remember it; capturing pays off only on repeats.
      if (seen.size() < kSeenRing) seen.push_back(hash);
      else seen[seenNext++ % kSeenRing] = hash;
      return eager();
    }
    auto t0 = std::chrono::steady_clock::now();
    GraphEntry fresh{hash, key, nullptr, 0};
    if (!Capture(a, &fresh.exec, err)) {
      // Graphs are an optimization: keep the reason (for stats) and run eagerly from now on.
      graphError = err->message.empty() ? "capture failed" : err->message;
      *err = ErrorInfo{};
      return eager();
    }
    stats.graphCaptures++;
    stats.captureNs += std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - t0).count();
    if (graphs.size() >= kMaxGraphs) {
      auto oldest = std::min_element(graphs.begin(), graphs.end(),
                                     [](const GraphEntry& x, const GraphEntry& y) { return x.lastUse < y.lastUse; });
      Driver::Get().api().cuGraphExecDestroy(oldest->exec);  // freed after any launch in flight
      graphs.erase(oldest);
      stats.graphEvictions++;
    }
    graphs.push_back(std::move(fresh));
    entry = &graphs.back();
  }
  entry->lastUse = ++clock;
  stats.graphLaunches++;
  return Driver::Get().Check(Driver::Get().api().cuGraphLaunch(entry->exec, stream), "cuGraphLaunch", err);
}

void PlanExecutor::Dispose() {
  if (disposed) return;
  disposed = true;
  ErrorInfo ignored;
  Driver& d = Driver::Get();
  if (!d.UseDevice(device, &ignored)) return;
  for (GraphEntry& g : graphs) d.api().cuGraphExecDestroy(g.exec);
  graphs.clear();
  if (captureStream != nullptr) d.api().cuStreamDestroy(captureStream);
  captureStream = nullptr;
}

}  // namespace kiln
