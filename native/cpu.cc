// The CPU backend's kernel loader: dlopen a generated shared object and call its C ABI
// entry points, `extern "C" void fn(void** bufs, const int64_t* ints)`.
//
// Asynchronous calls run on ONE compute thread per process, in submission order, not on
// libuv's pool. The generated kernels parallelize with OpenMP, and libgomp gives every
// thread that opens a parallel region its own team: calls spread over libuv's four pool
// threads built up to four teams (15 threads at 2 kernel threads), whose idle workers spun
// against each other and against the next call. One caller thread means one team, kept hot
// from call to call. Results reach JS through a thread-safe function per Node environment,
// so no pool thread is held while kernels run (file I/O and compiles keep their threads).
//
// Kernel libraries generated since then parallelize through kiln's own pool (KernelPool
// below, handed to each library at load by kiln_set_runtime) instead of OpenMP: the caller
// runs chunks itself and waits only for chunks that workers have started, so a worker that
// is not scheduled (a busy machine, another engine's threads) delays nothing; workers spin
// briefly for the next region, then sleep.
#include <dlfcn.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "addon.h"
#include "common.h"

namespace kiln {

using KernelFn = void (*)(void** bufs, const int64_t* ints);

/** A loaded shared object. It is never dlclose'd: kernel pointers may outlive the handle. */
struct CpuLibrary {
  void* handle;
  std::string path;
  bool kilnPool = false;  // parallelizes through KernelPool (kiln_set_runtime), not OpenMP
  std::mutex mu;                                     // guards symbols
  std::unordered_map<std::string, KernelFn> symbols;  // dlsym results, looked up once
};

void Finalize(Napi::Env, CpuLibrary* lib) { delete lib; }

namespace {

/** The arguments of one call, read on the JS thread. */
struct CpuArgs {
  KernelFn fn = nullptr;
  std::vector<void*> bufs;
  std::vector<int64_t> ints;
};

KernelFn Lookup(Napi::Env env, CpuLibrary* lib, const std::string& symbol) {
  {
    std::lock_guard<std::mutex> lock(lib->mu);
    auto it = lib->symbols.find(symbol);
    if (it != lib->symbols.end()) return it->second;
  }
  dlerror();
  auto fn = reinterpret_cast<KernelFn>(dlsym(lib->handle, symbol.c_str()));
  if (fn == nullptr) {
    const char* why = dlerror();
    Throw(env, "KILN_DLOPEN",
          "symbol '" + symbol + "' not found in " + lib->path + (why ? std::string(": ") + why : ""));
  }
  std::lock_guard<std::mutex> lock(lib->mu);
  lib->symbols.emplace(symbol, fn);
  return fn;
}

/** A buffer's data pointer: one N-API call for a TypedArray (the common case), two for an ArrayBuffer. */
void* BufferData(napi_env env, napi_value v, uint32_t i) {
  void* data = nullptr;
  if (napi_get_typedarray_info(env, v, nullptr, nullptr, &data, nullptr, nullptr) == napi_ok) return data;
  size_t bytes = 0;
  if (napi_get_arraybuffer_info(env, v, &data, &bytes) == napi_ok) return data;
  return GetBytes(Napi::Value(env, v), "buffers[" + std::to_string(i) + "]").data;  // DataView, or throws
}

/**
 * Reads a call's arguments (lib, symbol, buffers, ints). Asynchronous calls keep the
 * caller's `buffers` array itself alive (one reference), so the caller must not change that
 * array, nor the buffers, until the call settles (lib/runtime/cpu.ts builds a fresh one per
 * call); the buffers are read here, element by element, with the fewest N-API calls
 * (~0.1 µs a buffer; a program passes dozens).
 */
CpuArgs ReadArgs(const Napi::CallbackInfo& info, KeepAlive* keep) {
  Napi::Env env = info.Env();
  auto* lib = UnwrapHandle<CpuLibrary>(info[0], kCpuLibraryTag, "CPU library");
  CpuArgs args;
  args.fn = Lookup(env, lib, GetString(info[1], "symbol"));
  if (!info[2].IsArray()) ThrowArg(env, "buffers must be an array of ArrayBuffers or TypedArrays");
  napi_value bufs = info[2];
  uint32_t n = 0;
  NAPI_THROW_IF_FAILED(env, napi_get_array_length(env, bufs, &n), CpuArgs());
  args.bufs.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value b = nullptr;
    NAPI_THROW_IF_FAILED(env, napi_get_element(env, bufs, i, &b), CpuArgs());
    args.bufs[i] = BufferData(env, b, i);
  }
  if (keep) keep->Add(info[2]);
  Napi::Value ints = info[3];
  if (ints.IsTypedArray() && ints.As<Napi::TypedArray>().TypedArrayType() == napi_bigint64_array) {
    auto ta = ints.As<Napi::BigInt64Array>();
    args.ints.assign(ta.Data(), ta.Data() + ta.ElementLength());  // copied: cheap and GC-proof
  } else if (ints.IsArray()) {
    auto arr = ints.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++)
      args.ints.push_back(GetInt(arr.Get(i), "ints[" + std::to_string(i) + "]"));
  } else if (!ints.IsUndefined()) {
    ThrowArg(env, "ints must be a BigInt64Array or an array of integers");
  }
  return args;
}

/** Wall time of one kernel call, in microseconds (what the JS side's inline policy reads). */
double TimedCall(const CpuArgs& args) {
  const auto t0 = std::chrono::steady_clock::now();
  args.fn(const_cast<void**>(args.bufs.data()), args.ints.data());
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

class CpuQueue;

/** One asynchronous call: what to run, the buffers it keeps alive, the Promise it settles. */
struct CpuJob {
  CpuArgs args;
  KeepAlive keep;  // released on the JS thread (Deliver), never on the compute thread
  napi_deferred deferred = nullptr;
  CpuQueue* owner = nullptr;
  double us = 0;  // the kernel's wall time, set on the compute thread
};

/**
 * The per-environment side: a thread-safe function that settles Promises on the JS thread.
 * Created on the first asynchronous call of an environment; torn down by an environment
 * cleanup hook, which first waits for that environment's queued and running calls.
 */
class CpuQueue {
 public:
  static CpuQueue* ForEnv(Napi::Env env);
  void Submit(Napi::Env env, CpuJob* job);
  /** Compute thread: the job ran; hand it to the JS thread. */
  void Finished(CpuJob* job);

 private:
  static void Deliver(Napi::Env env, Napi::Function, CpuQueue* self, CpuJob* job);
  static void Cleanup(void* arg);
  using Tsfn = Napi::TypedThreadSafeFunction<CpuQueue, CpuJob, CpuQueue::Deliver>;

  Tsfn tsfn_;
  napi_env env_ = nullptr;
  int pending_ = 0;  // JS thread only: while > 0 the TSFN keeps the event loop alive
};

/** The process-wide compute thread and its FIFO of jobs (of every environment). */
class CpuExecutor {
 public:
  static CpuExecutor& Get() {
    // Never destroyed: the thread may still sit in wait() while the process exits.
    static CpuExecutor* self = new CpuExecutor();
    return *self;
  }

  void Push(CpuJob* job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!started_) {
        started_ = true;
        std::thread(&CpuExecutor::Loop, this).detach();
      }
      queue_.push_back(job);
    }
    cv_.notify_one();
  }

  /**
   * Claims the executor for a call on the caller's own thread: true when no job is queued
   * or running (nor another inline call), and then no job starts until EndInline. Calls
   * stay one at a time, process-wide, in submission order.
   */
  bool TryBeginInline() {
    std::lock_guard<std::mutex> lock(mu_);
    if (inline_ || kernels_ || !queue_.empty()) return false;
    inline_ = true;
    return true;
  }

  void EndInline() {
    bool queued;
    {
      std::lock_guard<std::mutex> lock(mu_);
      inline_ = false;
      queued = !queue_.empty();  // submitted by another environment meanwhile
    }
    if (queued) cv_.notify_one();
  }

  /** Blocks until no job of `owner` is queued or running. */
  void Drain(CpuQueue* owner) {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] {
      if (running_ != nullptr && running_->owner == owner) return false;
      for (CpuJob* j : queue_)
        if (j->owner == owner) return false;
      return true;
    });
  }

 private:
  CpuExecutor() = default;

  void Loop() {
    for (;;) {
      CpuJob* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty() && !inline_; });
        job = queue_.front();
        queue_.pop_front();
        running_ = job;
        kernels_ = true;
      }
      job->us = TimedCall(job->args);
      {
        // Cleared before the completion is handed over: the awaited caller's next call
        // may run inline at once (running_ still guards Drain until Finished is done).
        std::lock_guard<std::mutex> lock(mu_);
        kernels_ = false;
      }
      job->owner->Finished(job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        running_ = nullptr;
      }
      done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;    // a job was queued
  std::condition_variable done_;  // a job finished
  std::deque<CpuJob*> queue_;     // guarded by mu_
  CpuJob* running_ = nullptr;     // guarded by mu_
  bool started_ = false;          // guarded by mu_
  bool inline_ = false;           // guarded by mu_: a call runs on a JS thread (TryBeginInline)
  bool kernels_ = false;          // guarded by mu_: the running job's kernels have not returned
};

std::mutex g_queuesMu;
std::unordered_map<napi_env, CpuQueue*> g_queues;  // guarded by g_queuesMu

CpuQueue* CpuQueue::ForEnv(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_queuesMu);
  auto it = g_queues.find(env);
  if (it != g_queues.end()) return it->second;
  auto* q = new CpuQueue();
  q->env_ = env;
  q->tsfn_ = Tsfn::New(env, "kiln-cpu-completion", 0, 1, q);
  q->tsfn_.Unref(env);  // idle: only pending calls keep the event loop alive
  NAPI_THROW_IF_FAILED(env, napi_add_env_cleanup_hook(env, &CpuQueue::Cleanup, q), nullptr);
  g_queues.emplace(env, q);
  return q;
}

void CpuQueue::Submit(Napi::Env env, CpuJob* job) {
  job->owner = this;
  if (pending_++ == 0) tsfn_.Ref(env);
  CpuExecutor::Get().Push(job);
}

void CpuQueue::Finished(CpuJob* job) {
  // Fails only while the environment is being torn down. The job holds JS references, which
  // may only be deleted on the JS thread: it is leaked (a few bytes, once, at teardown).
  (void)tsfn_.NonBlockingCall(job);
}

void CpuQueue::Deliver(Napi::Env env, Napi::Function, CpuQueue* self, CpuJob* job) {
  if (static_cast<napi_env>(env) == nullptr) return;  // torn down: nobody waits; leaked as above
  std::unique_ptr<CpuJob> owned(job);
  napi_resolve_deferred(env, job->deferred, Napi::Number::New(env, job->us));
  if (--self->pending_ == 0) self->tsfn_.Unref(env);
}

void CpuQueue::Cleanup(void* arg) {
  auto* self = static_cast<CpuQueue*>(arg);
  // Buffers of this environment must not be touched after it is gone: wait for its calls.
  CpuExecutor::Get().Drain(self);
  {
    std::lock_guard<std::mutex> lock(g_queuesMu);
    g_queues.erase(self->env_);
  }
  self->tsfn_.Abort();  // pending deliveries are dropped; the queue object is leaked on purpose
}


/**
 * The process-wide kernel thread pool. parallel_for(n, nt, fn, ctx) runs fn(ctx, i) for
 * i in [0, n) on the calling thread and on up to nt - 1 workers. Chunks are claimed from
 * an atomic counter; the caller claims them too, and when none is left it closes the job
 * and waits only for workers inside it (`active_`), never for workers that have not
 * arrived: a late worker sees the job closed (or a newer epoch) and leaves it alone. One
 * parallel_for at a time: a second concurrent caller runs its loop serially.
 */
class KernelPool {
 public:
  static KernelPool& Get() {
    static KernelPool* self = new KernelPool();  // never destroyed; workers are detached
    return *self;
  }

  static int DefaultThreads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
  }

  void ParallelFor(int64_t n, int nt, void (*fn)(void*, int64_t), void* ctx) {
    if (nt > kMaxThreads) nt = kMaxThreads;
    std::unique_lock<std::mutex> caller(callers_, std::try_to_lock);
    if (n <= 1 || nt <= 1 || !caller.owns_lock()) {
      for (int64_t i = 0; i < n; i++) fn(ctx, i);
      return;
    }
    Ensure(nt - 1);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    nt_ = nt;
    next_.store(0, std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_seq_cst);  // publishes the fields above
    open_.store(true, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n;) fn(ctx, i);
    open_.store(false, std::memory_order_seq_cst);
    while (active_.load(std::memory_order_seq_cst) != 0) Relax();
  }

 private:
  static constexpr int kMaxThreads = 256;
  // How long an idle worker spins for the next parallel region before it sleeps: longer
  // than the gap between the kernels of one call, short enough not to hold a core between
  // calls (a spinning thread takes the core from whatever else the machine runs).
  static constexpr std::chrono::microseconds kSpin{100};

  static void Relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }

  void Ensure(int workers) {
    while (started_ < workers) {
      const int index = started_++;
      std::thread(&KernelPool::Worker, this, index).detach();
    }
  }

  uint64_t WaitForEpoch(uint64_t seen) {
    auto until = std::chrono::steady_clock::now() + kSpin;
    for (int k = 1;; k++) {
      const uint64_t e = epoch_.load(std::memory_order_acquire);
      if (e != seen) return e;
      Relax();
      if (k % 64 == 0 && std::chrono::steady_clock::now() > until) break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    uint64_t e;
    cv_.wait(lock, [&] { return (e = epoch_.load(std::memory_order_seq_cst)) != seen; });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return e;
  }

  void Worker(int index) {
    uint64_t seen = epoch_.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t e = seen = WaitForEpoch(seen);
      if (index >= nt_ - 1) continue;  // this job asked for fewer threads
      active_.fetch_add(1, std::memory_order_seq_cst);
      if (open_.load(std::memory_order_seq_cst) && epoch_.load(std::memory_order_seq_cst) == e) {
        const int64_t n = n_;
        for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n;) fn_(ctx_, i);
      }
      active_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  std::mutex callers_;  // held by the thread running a parallel_for
  int started_ = 0;     // guarded by callers_
  std::atomic<uint64_t> epoch_{0};
  std::atomic<bool> open_{false};
  std::atomic<int> active_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> sleepers_{0};
  // The current job: written by the caller before it bumps epoch_, read by workers after.
  void (*fn_)(void*, int64_t) = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int> nt_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

/** What a kernel library gets at load (kiln_set_runtime); the layout is part of the ABI. */
struct KernelRuntimeV1 {
  int32_t version;          // 1
  int32_t threads;          // the default thread count (all cores)
  void (*parallel_for)(int64_t n, int32_t nt, void (*fn)(void*, int64_t), void* ctx);
};

void PoolParallelFor(int64_t n, int32_t nt, void (*fn)(void*, int64_t), void* ctx) {
  KernelPool::Get().ParallelFor(n, nt, fn, ctx);
}

const KernelRuntimeV1 kRuntime = {1, KernelPool::DefaultThreads(), &PoolParallelFor};

/**
 * libgomp's idle workers spin GOMP_SPINCOUNT times before they sleep; its default (300000
 * when the process has no more threads than cores) is milliseconds of spinning after every
 * parallel region, which on a shared machine takes the core from the thread that has work
 * (measured: 2-4x slower calls on a loaded 2-core VM). 1000 spins (tens of microseconds)
 * bridge the gaps between the kernels of one call and let the team sleep between calls.
 * libgomp reads the variable once, when the first kernel library pulls it in; an explicit
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT of the user wins.
 */
void DefaultOmpWaitPolicy() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr)
      setenv("GOMP_SPINCOUNT", "1000", 0);
  });
}

}  // namespace

Napi::Value KilnAddon::CpuLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = GetString(info[0], "path");
  DefaultOmpWaitPolicy();
  dlerror();
  // RTLD_LOCAL: every kernel library exports the same entry names (kiln_run).
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    Throw(env, "KILN_DLOPEN", "cannot load CPU kernels " + path + ": " + (why ? why : "dlopen failed"));
  }
  // Libraries with kiln's own thread pool take it here (older bundles use OpenMP).
  using SetRuntime = void (*)(const void*);
  auto set = reinterpret_cast<SetRuntime>(dlsym(handle, "kiln_set_runtime"));
  if (set) set(&kRuntime);
  auto* lib = new CpuLibrary();
  lib->handle = handle;
  lib->path = path;
  lib->kilnPool = set != nullptr;
  return WrapHandle(env, lib, kCpuLibraryTag);
}

Napi::Value KilnAddon::CpuCall(const Napi::CallbackInfo& info) {
  CpuArgs args = ReadArgs(info, nullptr);
  args.fn(args.bufs.data(), args.ints.data());
  return info.Env().Undefined();
}

Napi::Value KilnAddon::CpuTryCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* lib = UnwrapHandle<CpuLibrary>(info[0], kCpuLibraryTag, "CPU library");
  // An OpenMP library would build a second team of threads for this thread (see the top).
  if (!lib->kilnPool) return Napi::Number::New(env, -1);
  CpuArgs args = ReadArgs(info, nullptr);
  CpuExecutor& executor = CpuExecutor::Get();
  if (!executor.TryBeginInline()) return Napi::Number::New(env, -1);
  const double us = TimedCall(args);
  executor.EndInline();
  return Napi::Number::New(env, us);
}

Napi::Value KilnAddon::CpuCallAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unique_ptr<CpuJob> job(new CpuJob());
  job->args = ReadArgs(info, &job->keep);
  CpuQueue* queue = CpuQueue::ForEnv(env);
  napi_value promise = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &job->deferred, &promise), Napi::Value());
  queue->Submit(env, job.release());
  return Napi::Value(env, promise);
}

}  // namespace kiln
