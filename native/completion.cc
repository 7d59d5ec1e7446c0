// The completion queue: see completion.h for why it is a waiter thread.
#include "completion.h"

#include <chrono>
#include <cstdlib>

#include "driver.h"

namespace kiln {

namespace {

constexpr int kDefaultPollMicros = 50;  // a short graph replay (a few kernels) fits easily

// Queries `ev` until it is no longer CUDA_ERROR_NOT_READY or `micros` have passed.
CUresult Spin(CUevent ev, int micros) {
  const auto query = Driver::Get().api().cuEventQuery;
  auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  CUresult r = 0;
  do {
    r = query(ev);
  } while (r == KILN_CUDA_ERROR_NOT_READY && std::chrono::steady_clock::now() < until);
  return r;
}

// What a failed event means to the caller, the same whichever thread saw it.
void Failed(CUresult r, const char* via, ErrorInfo* err) {
  Driver::Get().Check(r, std::string("GPU work of this call failed (reported by ") + via + ")", err);
}

}  // namespace

int CompletionPollMicros() {
  const char* env = std::getenv("KILN_CUDA_POLL_US");
  if (env == nullptr || *env == '\0') return kDefaultPollMicros;
  char* end = nullptr;
  long v = std::strtol(env, &end, 10);
  return *end == '\0' && v >= 0 && v <= 10000 ? static_cast<int>(v) : kDefaultPollMicros;
}

std::shared_ptr<Completions> Completions::Create(Napi::Env env) {
  std::shared_ptr<Completions> self(new Completions());
  // The TSFN's finalizer holds a second reference, so whichever of the environment's
  // teardown steps runs last (this TSFN's close or the addon's destructor) frees the queue.
  auto* ref = new std::shared_ptr<Completions>(self);
  self->tsfn_ = Tsfn::New(env, "kiln-gpu-completion", 0, 1, self.get(),
                          [](Napi::Env, std::shared_ptr<Completions>* r, Completions* c) {
                            c->Join();
                            c->closed_ = true;
                            delete r;
                          },
                          ref);
  self->tsfn_.Unref(env);  // idle: only pending runs keep the event loop alive
  self->pollMicros_ = CompletionPollMicros();
  // The poll is queued as a reaction to one Promise resolved here, through
  // Promise.prototype.then as it is now, not through the global queueMicrotask: test fake
  // timers replace that global (and never run what is queued), which would leave a lone
  // awaited run pending forever. `then` on a settled Promise queues its reaction at once.
  Napi::Value promise = env.Global().Get("Promise");
  Napi::Value then = promise.IsFunction()
                         ? promise.As<Napi::Object>().Get("prototype").As<Napi::Object>().Get("then")
                         : env.Undefined();
  napi_deferred deferred = nullptr;
  napi_value resolved = nullptr;
  if (self->pollMicros_ > 0 && then.IsFunction() &&
      napi_create_promise(env, &deferred, &resolved) == napi_ok &&
      napi_resolve_deferred(env, deferred, env.Undefined()) == napi_ok) {
    Completions* c = self.get();  // lives as long as the environment, so as the function
    auto poll = Napi::Function::New(
        env, [](const Napi::CallbackInfo& info) {
          static_cast<Completions*>(info.Data())->Poll(info.Env());
        },
        "kilnCompletionPoll", c);
    self->then_ = Napi::Persistent(then.As<Napi::Function>());
    self->pollFn_ = Napi::Persistent(poll);
    self->resolved_ = Napi::Persistent(Napi::Object(env, resolved));
    self->then_.SuppressDestruct();  // the environment frees them at teardown
    self->pollFn_.SuppressDestruct();
    self->resolved_.SuppressDestruct();
  } else {
    self->pollMicros_ = 0;
  }
  self->thread_ = std::thread(&Completions::Loop, self.get());
  return self;
}

bool Completions::Track(Napi::Env env, int device, CUstream stream, Napi::Promise* promise,
                        ErrorInfo* err) {
  Driver& d = Driver::Get();
  CUevent ev = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < spareEvents_.size(); i++) {
      if (spareEvents_[i].first != device) continue;
      ev = spareEvents_[i].second;
      spareEvents_.erase(spareEvents_.begin() + i);
      break;
    }
  }
  if (ev == nullptr &&
      !d.Check(d.api().cuEventCreate(&ev, KILN_CU_EVENT_DISABLE_TIMING), "cuEventCreate", err))
    return false;
  if (!d.Check(d.api().cuEventRecord(ev, stream), "cuEventRecord", err)) {
    Spare(device, ev);
    return false;
  }
  napi_deferred deferred = nullptr;
  napi_value value = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &value), false);
  *promise = Napi::Promise(env, value);
  auto* item = new Item{device, ev, deferred, {}, true};
  if (pending_++ == 0) tsfn_.Ref(env);
  if (polled_ != nullptr) {  // a run issued before this one settles first: both to the waiter
    Hand(polled_);
    polled_ = nullptr;
  }
  if (pending_ == 1 && pollMicros_ > 0 && polledInARow_ < kMaxPolledInARow) {
    polled_ = item;
    if (QueuePoll(env)) return true;
    polled_ = nullptr;  // not polled, then: the waiter takes it
  }
  Hand(item);
  return true;
}

bool Completions::QueuePoll(Napi::Env) {
  try {
    then_.Call(resolved_.Value(), {pollFn_.Value()});
    return true;
  } catch (const Napi::Error&) {
    return false;
  }
}

void Completions::Spare(int device, CUevent ev) {
  std::lock_guard<std::mutex> lock(mu_);
  spareEvents_.push_back({device, ev});
}

void Completions::Hand(Item* item) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(item);
    wake = sleeping_;
  }
  if (wake) cv_.notify_one();  // a busy waiter finds the item without a futex wake-up
}

void Completions::Poll(Napi::Env env) {
  Item* item = polled_;
  if (item == nullptr) return;  // handed to the waiter when a later run was tracked
  polled_ = nullptr;
  Driver& d = Driver::Get();
  if (d.UseDevice(item->device, &item->err)) {
    CUresult r = Spin(item->event, pollMicros_);
    if (r == KILN_CUDA_ERROR_NOT_READY) {  // longer work: the waiter settles it
      Hand(item);
      return;
    }
    if (r != 0) {
      Failed(r, "cuEventQuery", &item->err);
      item->ok = false;
    }
  } else {
    item->ok = false;
  }
  Spare(item->device, item->event);
  polledInARow_++;
  Settle(env, item);
}

void Completions::Loop() {
  Driver& d = Driver::Get();
  for (;;) {
    Item* item = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_ = true;
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      sleeping_ = false;
      if (queue_.empty()) return;  // stopping, and every pending run was waited for
      item = queue_.front();
      queue_.pop_front();
    }
    // Events complete in stream order, so waiting for them one by one loses nothing.
    if (d.UseDevice(item->device, &item->err)) {
      CUresult r = d.api().cuEventSynchronize(item->event);
      if (r != 0) {
        Failed(r, "cuEventSynchronize", &item->err);
        item->ok = false;
      }
    } else {
      item->ok = false;
    }
    Spare(item->device, item->event);
    if (tsfn_.NonBlockingCall(item) != napi_ok) delete item;  // the environment is closing
  }
}

void Completions::Deliver(Napi::Env env, Napi::Function, Completions* self, Item* item) {
  if (static_cast<napi_env>(env) == nullptr) {  // torn down: nobody is waiting
    delete item;
    return;
  }
  self->polledInARow_ = 0;  // the event loop turned to get here
  self->Settle(env, item);
}

void Completions::Settle(Napi::Env env, Item* item) {
  std::unique_ptr<Item> owned(item);
  try {
    if (item->ok) {
      napi_resolve_deferred(env, item->deferred, env.Undefined());
    } else {
      napi_reject_deferred(env, item->deferred, MakeError(env, item->err).Value());
    }
  } catch (const Napi::Error&) {
    // Building the error failed (the environment is going away); nothing else to do.
  }
  if (--pending_ == 0) tsfn_.Unref(env);
}

void Completions::Join() {
  if (!thread_.joinable()) return;
  if (polled_ != nullptr) {  // its microtask will not run now: the waiter finishes it
    Hand(polled_);
    polled_ = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Completions::Shutdown() {
  Join();
  if (!closed_) {
    closed_ = true;
    tsfn_.Release();
  }
}

Completions::~Completions() {
  ErrorInfo ignored;
  Driver& d = Driver::Get();
  for (const auto& [device, ev] : spareEvents_) {
    if (d.UseDevice(device, &ignored)) d.api().cuEventDestroy(ev);
  }
}

}  // namespace kiln
