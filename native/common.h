// Shared helpers of the kiln addon: coded errors, type-tagged handles, Promise workers.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

/** What went wrong, in the shape lib/runtime/native.ts translates into typed errors. */
struct ErrorInfo {
  ErrorInfo() = default;
  ErrorInfo(std::string c, std::string m, std::string cuda = "", std::string l = "")
      : code(std::move(c)), message(std::move(m)), cudaError(std::move(cuda)), log(std::move(l)) {}
  std::string code;       // stable code, e.g. KILN_CUDA_UNAVAILABLE
  std::string message;
  std::string cudaError;  // CUDA result name when a driver call failed
  std::string log;        // compiler log for NVRTC failures
  std::vector<std::pair<std::string, double>> numbers;  // extra numeric fields, e.g. bytes
};

/** Builds a JS Error carrying `code` (and `cudaError` / `log` when set). */
Napi::Error MakeError(Napi::Env env, const ErrorInfo& info);

/** Throws a coded JS error (a C++ exception, since NAPI_CPP_EXCEPTIONS is on). */
[[noreturn]] void Throw(Napi::Env env, const std::string& code, const std::string& message);

/** Throws KILN_ARGUMENT naming the argument that was wrong. */
[[noreturn]] void ThrowArg(Napi::Env env, const std::string& message);

/** Raw bytes of an ArrayBuffer or any ArrayBuffer view (TypedArray, Buffer, DataView). */
struct Bytes {
  void* data = nullptr;
  size_t size = 0;
};

/** Reads `value` as bytes or throws KILN_ARGUMENT naming `what`. */
Bytes GetBytes(const Napi::Value& value, const std::string& what);

/** Reads an integer argument (Number or BigInt) or throws KILN_ARGUMENT naming `what`. */
int64_t GetInt(const Napi::Value& value, const std::string& what);

/** Reads `value` as a string or throws KILN_ARGUMENT naming `what`. */
std::string GetString(const Napi::Value& value, const std::string& what);

/** Tags so that one kind of native handle can never be passed where another is expected. */
extern const napi_type_tag kCpuLibraryTag;
extern const napi_type_tag kDeviceMemoryTag;
extern const napi_type_tag kModuleTag;
extern const napi_type_tag kFunctionTag;
extern const napi_type_tag kExecutorTag;

/** Wraps `ptr` in a tagged External whose finalizer deletes it (via Finalize(env, ptr)). */
template <typename T>
Napi::External<T> WrapHandle(Napi::Env env, T* ptr, const napi_type_tag& tag) {
  auto ext = Napi::External<T>::New(env, ptr, [](Napi::Env e, T* p) { Finalize(e, p); });
  ext.TypeTag(&tag);
  return ext;
}

/** Unwraps a handle made by WrapHandle with the same tag, or throws KILN_ARGUMENT. */
template <typename T>
T* UnwrapHandle(const Napi::Value& value, const napi_type_tag& tag, const char* what) {
  if (!value.IsExternal() || !value.As<Napi::External<T>>().CheckTypeTag(&tag)) {
    ThrowArg(value.Env(), std::string(what) + " must be a kiln " + what + " handle");
  }
  return value.As<Napi::External<T>>().Data();
}

/**
 * An AsyncWorker that settles a Promise: work runs on libuv's pool in Execute(), a failure
 * is recorded with Fail() and rejects with a coded error, success resolves with Result().
 */
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  /** Records a failure from Execute(); the Promise rejects with it. */
  void Fail(ErrorInfo info) {
    error_ = std::move(info);
    SetError(error_.message);
  }
  /** The resolved value, built on the JS thread. */
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& e) override {
    if (error_.code.empty()) error_ = {"KILN_NATIVE", e.Message(), "", ""};
    deferred_.Reject(MakeError(Env(), error_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  ErrorInfo error_;
};

/** Holds JS values alive while a worker thread reads or writes their memory. */
class KeepAlive {
 public:
  void Add(const Napi::Value& v) {
    if (v.IsObject()) refs_.emplace_back(Napi::Persistent(v.As<Napi::Object>()));
  }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

}  // namespace kiln
