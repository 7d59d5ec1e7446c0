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
#include <dlfcn.h>

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

CpuArgs ReadArgs(const Napi::CallbackInfo& info, KeepAlive* keep) {
  Napi::Env env = info.Env();
  auto* lib = UnwrapHandle<CpuLibrary>(info[0], kCpuLibraryTag, "CPU library");
  CpuArgs args;
  args.fn = Lookup(env, lib, GetString(info[1], "symbol"));
  if (!info[2].IsArray()) ThrowArg(env, "buffers must be an array of ArrayBuffers or TypedArrays");
  auto bufs = info[2].As<Napi::Array>();
  args.bufs.reserve(bufs.Length());
  for (uint32_t i = 0; i < bufs.Length(); i++) {
    Napi::Value b = bufs.Get(i);
    args.bufs.push_back(GetBytes(b, "buffers[" + std::to_string(i) + "]").data);
    if (keep) keep->Add(b);
  }
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

class CpuQueue;

/** One asynchronous call: what to run, the buffers it keeps alive, the Promise it settles. */
struct CpuJob {
  CpuArgs args;
  KeepAlive keep;  // released on the JS thread (Deliver), never on the compute thread
  napi_deferred deferred = nullptr;
  CpuQueue* owner = nullptr;
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
        cv_.wait(lock, [this] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
        running_ = job;
      }
      job->args.fn(job->args.bufs.data(), job->args.ints.data());
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
  napi_resolve_deferred(env, job->deferred, env.Undefined());
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
  auto* lib = new CpuLibrary();
  lib->handle = handle;
  lib->path = path;
  return WrapHandle(env, lib, kCpuLibraryTag);
}

Napi::Value KilnAddon::CpuCall(const Napi::CallbackInfo& info) {
  CpuArgs args = ReadArgs(info, nullptr);
  args.fn(args.bufs.data(), args.ints.data());
  return info.Env().Undefined();
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
