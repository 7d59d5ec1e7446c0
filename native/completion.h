// Settling a Promise when the GPU work queued so far on a stream has finished.
//
// Why a waiter thread plus a thread-safe function, and not the two obvious alternatives:
// - an AsyncWorker that calls cuEventSynchronize holds one of libuv's 4 pool threads for as
//   long as the GPU runs, so a few in-flight programs would stall file I/O, copies and NVRTC
//   compiles (the onnxruntime-node lesson);
// - cuLaunchHostFunc + a thread-safe function holds no thread, but the driver never calls a
//   host function after a context error, so a faulting kernel would leave the Promise pending
//   forever.
// One waiter thread per Node environment syncs on an event per run, in order, and hands the
// result to the JS thread through one thread-safe function: no pool thread is held, errors
// such as CUDA_ERROR_ILLEGAL_ADDRESS reject the Promise, and each run costs one event record,
// one condition-variable notify and one uv_async wake-up. While the GPU runs, the waiter's
// cuEventSynchronize spins a core: the primary context's CU_CTX_SCHED_AUTO spins while the
// process has no more contexts than cores (100% of a core on an H100 machine). Events made
// with CU_EVENT_BLOCKING_SYNC, after a 1 ms spin, cut that to 8% but added 0.1-0.3 ms to
// every awaited run longer than the spin (H100, 2026-11-26), so they are not used.
//
// The wake-up is most of an awaited short run's latency (the JS thread sleeps in epoll and
// is woken through the waiter), so a run tracked while nothing else is pending is first
// polled on the JS thread: a microtask queued by Track calls cuEventQuery for at most
// KILN_CUDA_POLL_US (default 50 us, 0 = off) and settles the Promise itself when the event
// completes in time, else hands the run to the waiter as usual. A microtask and not a poll
// inside Track, so that runs issued back to back are not each held until the GPU is done:
// the run is handed to the waiter as soon as a later one is tracked. Settling in stream order
// still holds (nothing earlier is pending when a run is polled), the poll is bounded (no
// busy CPU for long work), and at most kMaxPolledInARow runs in a row settle by polling
// before one goes through the waiter, so an awaited loop of short runs still lets the event
// loop turn (timers and I/O) instead of running wholly on microtasks.
#pragma once

#include <napi.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"
#include "cuda_api.h"

namespace kiln {

/** KILN_CUDA_POLL_US: microseconds a run is polled on the JS thread (default 50, 0 = off). */
int CompletionPollMicros();

class Completions {
 public:
  /** Creates the queue of `env`, starting its waiter thread; reads KILN_CUDA_POLL_US. */
  static std::shared_ptr<Completions> Create(Napi::Env env);
  ~Completions();

  /**
   * Records an event on `stream` (device `device` is current) and returns a Promise that
   * resolves when the event completes, or rejects with the CUDA error that stopped it.
   * Returns false and fills `err` if the event could not be recorded (nothing queued then).
   */
  bool Track(Napi::Env env, int device, CUstream stream, Napi::Promise* promise, ErrorInfo* err);

  /** Called by the addon's destructor: finishes pending waits, stops the thread. */
  void Shutdown();

 private:
  struct Item {
    int device;
    CUevent event;
    napi_deferred deferred;
    ErrorInfo err;
    bool ok = true;
  };
  static void Deliver(Napi::Env env, Napi::Function fn, Completions* self, Item* item);
  using Tsfn = Napi::TypedThreadSafeFunction<Completions, Item, Completions::Deliver>;
  static constexpr int kMaxPolledInARow = 64;

  Completions() = default;
  void Loop();
  void Join();                          // JS thread only
  void Hand(Item* item);                // to the waiter
  bool QueuePoll(Napi::Env env);        // queues the microtask that runs Poll
  void Spare(int device, CUevent ev);   // keeps a finished run's event for the next one
  void Poll(Napi::Env env);             // the microtask: polls polled_
  void Settle(Napi::Env env, Item* item);  // JS thread only: resolves or rejects, frees item

  Tsfn tsfn_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item*> queue_;                              // guarded by mu_
  std::vector<std::pair<int, CUevent>> spareEvents_;    // guarded by mu_
  bool stop_ = false;                                    // guarded by mu_
  bool sleeping_ = false;                                // guarded by mu_: waiter in cv_.wait
  int pending_ = 0;      // JS thread only: while > 0 the TSFN keeps the event loop alive
  bool closed_ = false;  // JS thread only: the TSFN was released or finalized
  // JS thread only: the polling (see the header comment).
  int pollMicros_ = 0;
  Napi::FunctionReference then_, pollFn_;  // Promise.prototype.then, and the poll it queues
  Napi::ObjectReference resolved_;          // the settled Promise the poll is queued on
  Item* polled_ = nullptr;  // the run a queued microtask will poll, if not handed on since
  int polledInARow_ = 0;    // runs settled by polling since the waiter last delivered one
};

}  // namespace kiln
