// The completion queue: see completion.h for why it is a waiter thread.
#include "completion.h"

#include "driver.h"

namespace kiln {

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
    std::lock_guard<std::mutex> lock(mu_);
    spareEvents_.push_back({device, ev});
    return false;
  }
  napi_deferred deferred = nullptr;
  napi_value value = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &value), false);
  *promise = Napi::Promise(env, value);
  auto* item = new Item{device, ev, deferred, {}, true};
  if (pending_++ == 0) tsfn_.Ref(env);
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(item);
    wake = sleeping_;
  }
  if (wake) cv_.notify_one();  // a busy waiter finds the item without a futex wake-up
  return true;
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
        d.Check(r, "GPU work of this call failed (reported by cuEventSynchronize)", &item->err);
        item->ok = false;
      }
    } else {
      item->ok = false;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      spareEvents_.push_back({item->device, item->event});
    }
    if (tsfn_.NonBlockingCall(item) != napi_ok) delete item;  // the environment is closing
  }
}

void Completions::Deliver(Napi::Env env, Napi::Function, Completions* self, Item* item) {
  std::unique_ptr<Item> owned(item);
  if (static_cast<napi_env>(env) == nullptr) return;  // torn down: nobody is waiting
  try {
    if (item->ok) {
      napi_resolve_deferred(env, item->deferred, env.Undefined());
    } else {
      napi_reject_deferred(env, item->deferred, MakeError(env, item->err).Value());
    }
  } catch (const Napi::Error&) {
    // Building the error failed (the environment is going away); nothing else to do.
  }
  if (--self->pending_ == 0) self->tsfn_.Unref(env);
}

void Completions::Join() {
  if (!thread_.joinable()) return;
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
