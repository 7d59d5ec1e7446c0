// The caching device allocator's pool: size classes, free lists, trim and counters. It is
// header-only and templated on the backend that really allocates, so its logic is unit-tested
// on the host (test/fixtures/native/pool_test.cc) and runs on cuMemAlloc in memory.cc.
// Prior art: PyTorch's CUDACachingAllocator (512 B rounding of small blocks, power-of-two
// divisions of large ones, "free cached blocks and retry" on out-of-memory).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace kiln {

/** Counters of one pool (bytes are block sizes unless named "requested"). */
struct PoolStats {
  uint64_t liveBytes = 0;          // in blocks handed out and not yet freed
  uint64_t liveAllocations = 0;
  uint64_t requestedBytes = 0;     // what the live allocations asked for (before rounding)
  uint64_t cachedBytes = 0;        // freed blocks kept for reuse
  uint64_t cachedBlocks = 0;
  uint64_t peakLiveBytes = 0;
  uint64_t peakReservedBytes = 0;  // the most the driver held for kiln (live + cached)
  uint64_t allocations = 0;        // every successful Alloc
  uint64_t cacheHits = 0;          // Allocs served from the cache
  uint64_t driverAllocations = 0;  // real allocations (cuMemAlloc)
  uint64_t driverFrees = 0;        // real frees (by Trim)
  uint64_t oomRecoveries = 0;      // Allocs that succeeded only after trimming on OOM
};

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;
/** The backend's out-of-memory code (CUDA_ERROR_OUT_OF_MEMORY). */
constexpr int kPoolOutOfMemory = 2;

/**
 * Rounds a request up to its size class: 512 B steps below 1 MiB; from 1 MiB to 64 MiB,
 * four steps per power of two (at most 25% over, few distinct sizes so blocks are reused);
 * above, 2 MiB steps (at most 3% over on what costs the most).
 */
inline uint64_t SizeClass(uint64_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < kMiB) return (bytes + 511) / 512 * 512;
  if (bytes > 64 * kMiB) return (bytes + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
  uint64_t pow2 = kMiB;
  while (pow2 * 2 <= bytes) pow2 *= 2;
  const uint64_t step = pow2 / 4;
  return (bytes + step - 1) / step * step;
}

/** What a failed Alloc knew, for the error message. */
struct PoolFailure {
  int code = 0;                // the backend's result of the last attempt
  uint64_t requested = 0;
  uint64_t blockSize = 0;      // the size class asked of the backend
  uint64_t liveBytes = 0;
  uint64_t liveAllocations = 0;
  uint64_t cachedBytes = 0;    // what was cached before the trim (released, then retried)
  bool retried = false;
};

/**
 * A caching pool over `Backend`, which provides `int Alloc(uint64_t* ptr, uint64_t bytes)`,
 * `int Free(uint64_t ptr)` and `int Sync()` (wait for queued work that may still use freed
 * blocks), each returning 0 on success. Thread-safe. Freed blocks are cached by size and
 * handed out again (best fit within 25% of the class; equal sizes oldest first, so a loop
 * that frees its outputs in allocation order gets the same addresses back and its CUDA
 * graph keys repeat); Trim() gives them back to the backend.
 */
template <typename Backend>
class BlockPool {
 public:
  explicit BlockPool(Backend backend) : backend_(backend) {}
  Backend& backend() { return backend_; }

  /** Allocates `bytes`; on out-of-memory trims the cache and retries once. 0 = success. */
  int Alloc(uint64_t bytes, uint64_t* ptr, PoolFailure* failure) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t cls = SizeClass(bytes);
    auto it = free_.lower_bound(cls);
    if (it != free_.end() && it->first <= cls + cls / 4) {
      *ptr = it->second;
      stats_.cachedBytes -= it->first;  // before Live(), whose peak counts live + cached
      stats_.cachedBlocks--;
      Live(*ptr, it->first, bytes, true);
      free_.erase(it);
      return 0;
    }
    int r = backend_.Alloc(ptr, cls);
    bool recovered = false;
    const uint64_t cachedBefore = stats_.cachedBytes;
    if (r == kPoolOutOfMemory && !free_.empty()) {
      TrimLocked();  // cached blocks of other sizes are memory the driver can give back
      r = backend_.Alloc(ptr, cls);
      recovered = r == 0;
    }
    if (r != 0) {
      *failure = {r, bytes, cls, stats_.liveBytes, stats_.liveAllocations, cachedBefore,
                  cachedBefore > 0};
      return r;
    }
    stats_.driverAllocations++;
    if (recovered) stats_.oomRecoveries++;
    Live(*ptr, cls, bytes, false);
    return 0;
  }

  /** Returns a block to the cache. Returns false for a pointer this pool did not hand out. */
  bool Free(uint64_t ptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return false;
    stats_.liveBytes -= it->second.size;
    stats_.requestedBytes -= it->second.requested;
    stats_.liveAllocations--;
    free_.emplace(it->second.size, ptr);
    stats_.cachedBytes += it->second.size;
    stats_.cachedBlocks++;
    live_.erase(it);
    return true;
  }

  /** Gives every cached block back to the backend; returns the bytes released. */
  uint64_t Trim() {
    std::lock_guard<std::mutex> lock(mu_);
    return TrimLocked();
  }

  /** The size a live block was asked for (`requested`); false if `ptr` is not live here. */
  bool Lookup(uint64_t ptr, uint64_t* requested) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return false;
    *requested = it->second.requested;
    return true;
  }

  PoolStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  struct Block {
    uint64_t size;
    uint64_t requested;
  };

  void Live(uint64_t ptr, uint64_t size, uint64_t requested, bool hit) {
    live_[ptr] = {size, requested};
    stats_.liveBytes += size;
    stats_.requestedBytes += requested;
    stats_.liveAllocations++;
    stats_.allocations++;
    if (hit) stats_.cacheHits++;
    stats_.peakLiveBytes = std::max(stats_.peakLiveBytes, stats_.liveBytes);
    stats_.peakReservedBytes =
        std::max(stats_.peakReservedBytes, stats_.liveBytes + stats_.cachedBytes);
  }

  uint64_t TrimLocked() {
    if (free_.empty()) return 0;
    backend_.Sync();  // a block freed in stream order may still be read by queued kernels
    uint64_t released = 0;
    for (const auto& [size, ptr] : free_) {
      if (backend_.Free(ptr) == 0) {
        released += size;
        stats_.driverFrees++;
      }
    }
    free_.clear();
    stats_.cachedBytes = 0;
    stats_.cachedBlocks = 0;
    return released;
  }

  Backend backend_;
  std::mutex mu_;
  std::multimap<uint64_t, uint64_t> free_;       // block size -> pointer
  std::unordered_map<uint64_t, Block> live_;     // pointer -> block
  PoolStats stats_;
};

}  // namespace kiln
