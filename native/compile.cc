// NVRTC bindings: the loader search (nvrtcLoad) and compiling CUDA C to a cubin or PTX off
// the JS thread (nvrtcCompile), at most `KILN_NVRTC_JOBS` compiles at a time.
#include <regex>

#include "addon.h"
#include "common.h"
#include "nvrtc.h"

namespace kiln {

namespace {

std::vector<std::string> GetStrings(const Napi::Value& v, const std::string& what) {
  std::vector<std::string> out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (!v.IsArray()) ThrowArg(v.Env(), what + " must be an array of strings");
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++)
    out.push_back(GetString(arr.Get(i), what + "[" + std::to_string(i) + "]"));
  return out;
}

Napi::Object StatusToJs(Napi::Env env, const NvrtcStatus& st) {
  auto o = Napi::Object::New(env);
  o.Set("available", st.loaded);
  auto tried = Napi::Array::New(env, st.tried.size());
  for (size_t i = 0; i < st.tried.size(); i++) tried.Set(i, st.tried[i]);
  o.Set("tried", tried);
  if (!st.loaded) {
    o.Set("code", st.errorCode);
    o.Set("reason", st.error);
    return o;
  }
  o.Set("path", st.path);
  o.Set("foundBy", st.foundBy);
  auto version = Napi::Array::New(env, 2);
  version.Set(0u, st.major);
  version.Set(1u, st.minor);
  o.Set("version", version);
  auto archs = Napi::Array::New(env, st.archs.size());
  for (size_t i = 0; i < st.archs.size(); i++) archs.Set(i, "sm_" + std::to_string(st.archs[i]));
  o.Set("archs", archs);
  return o;
}

}  // namespace

/** One NVRTC compile; runs on libuv's pool, queued through CompileQueue. */
class CompileWorker : public PromiseWorker {
 public:
  CompileWorker(Napi::Env env, KilnAddon* addon, const NvrtcApi* api, std::string source,
                std::string name, std::string target, std::vector<std::string> options)
      : PromiseWorker(env), addon_(addon), api_(api), source_(std::move(source)),
        name_(std::move(name)), target_(std::move(target)), options_(std::move(options)) {
    ptx_ = target_.rfind("compute_", 0) == 0;
    options_.push_back("--gpu-architecture=" + target_);
  }

 protected:
  void Execute() override {
    nvrtcProgram prog = nullptr;
    nvrtcResult r =
        api_->nvrtcCreateProgram(&prog, source_.c_str(), name_.c_str(), 0, nullptr, nullptr);
    if (r != 0) return Fail({"KILN_NVRTC_ERROR", "nvrtcCreateProgram failed: " + Text(r), "", ""});
    std::vector<const char*> opts;
    for (const auto& o : options_) opts.push_back(o.c_str());
    r = api_->nvrtcCompileProgram(prog, static_cast<int>(opts.size()), opts.data());
    size_t logSize = 0;
    if (api_->nvrtcGetProgramLogSize(prog, &logSize) == 0 && logSize > 1) {
      log_.resize(logSize);
      api_->nvrtcGetProgramLog(prog, &log_[0]);
      while (!log_.empty() && log_.back() == '\0') log_.pop_back();  // NUL terminator(s)
    }
    if (r == 0) {
      size_t size = 0;
      auto getSize = ptx_ ? api_->nvrtcGetPTXSize : api_->nvrtcGetCUBINSize;
      auto getData = ptx_ ? api_->nvrtcGetPTX : api_->nvrtcGetCUBIN;
      r = getSize(prog, &size);
      if (r == 0) {
        binary_.resize(size);
        r = getData(prog, binary_.data());
        // PTX ends in a NUL; the result is plain text, and module loads add the NUL back.
        if (ptx_ && !binary_.empty() && binary_.back() == '\0') binary_.pop_back();
      }
      if (r != 0) Fail({"KILN_NVRTC_ERROR", "reading the compiled output failed: " + Text(r), "", log_});
    } else {
      Fail({"KILN_NVRTC_COMPILE",
            name_ + ": NVRTC compile for " + target_ + " failed (" + Text(r) + ")" +
                FirstError(),
            "", log_.empty() ? "(empty log)" : log_});
    }
    api_->nvrtcDestroyProgram(&prog);
  }

  Napi::Value Result(Napi::Env env) override {
    auto o = Napi::Object::New(env);
    o.Set("binary", Napi::Buffer<char>::Copy(env, binary_.data(), binary_.size()));
    o.Set("log", log_);
    o.Set("kind", ptx_ ? "ptx" : "cubin");
    return o;
  }

  void OnOK() override {
    PromiseWorker::OnOK();
    addon_->compileQueue().Done();
  }
  void OnError(const Napi::Error& e) override {
    PromiseWorker::OnError(e);
    addon_->compileQueue().Done();
  }

 private:
  std::string Text(nvrtcResult r) const {
    const char* s = api_->nvrtcGetErrorString(r);
    return s ? s : "NVRTC error " + std::to_string(r);
  }
  // The first "error" line of the log, so the message alone says what went wrong.
  std::string FirstError() const {
    size_t at = log_.find("error");
    if (at == std::string::npos) return "";
    size_t start = log_.rfind('\n', at);
    start = start == std::string::npos ? 0 : start + 1;
    return ": " + log_.substr(start, log_.find('\n', at) - start);
  }

  KilnAddon* addon_;
  const NvrtcApi* api_;
  std::string source_, name_, target_;
  std::vector<std::string> options_;
  bool ptx_ = false;
  std::vector<char> binary_;
  std::string log_;
};

void CompileQueue::Submit(CompileWorker* w) {
  if (running_ < limit_) {
    running_++;
    w->Queue();
  } else {
    waiting_.push_back(w);
  }
}

void CompileQueue::Done() {
  running_--;
  if (!waiting_.empty()) {
    CompileWorker* next = waiting_.front();
    waiting_.pop_front();
    Submit(next);
  }
}

Napi::Value KilnAddon::NvrtcLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NvrtcSearch search;
  if (info[0].IsObject()) {
    auto o = info[0].As<Napi::Object>();
    if (o.Get("envPath").IsString()) search.envPath = GetString(o.Get("envPath"), "envPath");
    search.cudaHomes = GetStrings(o.Get("cudaHomes"), "cudaHomes");
    search.siteDirs = GetStrings(o.Get("siteDirs"), "siteDirs");
  }
  return StatusToJs(env, Nvrtc::Get().Load(search));
}

Napi::Value KilnAddon::NvrtcCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowArg(env, "nvrtcCompile expects {source, name, target, options}");
  auto req = info[0].As<Napi::Object>();
  std::string source = GetString(req.Get("source"), "source");
  std::string name = GetString(req.Get("name"), "name");
  std::string target = GetString(req.Get("target"), "target");
  std::vector<std::string> options = GetStrings(req.Get("options"), "options");
  static const std::regex kTarget("(sm|compute)_[0-9]+[af]?");
  if (!std::regex_match(target, kTarget))
    ThrowArg(env, "target must look like sm_90 (cubin) or compute_90 (PTX), got '" + target + "'");
  for (const auto& o : options) {
    // The target is the one source of the architecture; a second one would contradict it.
    if (o.rfind("--gpu-architecture", 0) == 0 || o.rfind("-arch", 0) == 0)
      ThrowArg(env, "options must not set the architecture ('" + o + "'); use target");
  }
  const NvrtcApi* api = Nvrtc::Get().api();
  if (api == nullptr) Throw(env, "KILN_NVRTC_UNAVAILABLE", "NVRTC is not loaded; call nvrtcLoad first");
  auto* worker = new CompileWorker(env, this, api, std::move(source), std::move(name),
                                   std::move(target), std::move(options));
  Napi::Promise promise = worker->Promise();
  compileQueue_.Submit(worker);
  return promise;
}

}  // namespace kiln
