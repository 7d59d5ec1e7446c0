// Searching for NVRTC and loading it with dlopen. Order: KILN_NVRTC_PATH (no fallback when
// it is wrong), already loaded in the process, CUDA_PATH/CUDA_HOME, the loader's own search,
// /usr/local/cuda*/lib64, then Python site-packages dirs handed in by lib/.
#include "nvrtc.h"

#include <dlfcn.h>
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>

namespace kiln {

namespace {

// Newest first: CUDA 13's NVRTC, then CUDA 12's.
const char* const kNames[] = {"libnvrtc.so.13", "libnvrtc.so.12"};

bool Exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

bool IsDir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string DirOf(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::string DlError() {
  const char* e = dlerror();
  return e ? e : "unknown dlopen error";
}

bool ResolveApi(void* lib, NvrtcApi* api, std::string* missing) {
  auto find = [&](const char* name, auto& slot) {
    void* fn = dlsym(lib, name);
    if (fn == nullptr && missing->empty()) *missing = name;
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(fn);
  };
  find("nvrtcVersion", api->nvrtcVersion);
  find("nvrtcGetNumSupportedArchs", api->nvrtcGetNumSupportedArchs);
  find("nvrtcGetSupportedArchs", api->nvrtcGetSupportedArchs);
  find("nvrtcGetErrorString", api->nvrtcGetErrorString);
  find("nvrtcCreateProgram", api->nvrtcCreateProgram);
  find("nvrtcDestroyProgram", api->nvrtcDestroyProgram);
  find("nvrtcCompileProgram", api->nvrtcCompileProgram);
  find("nvrtcGetProgramLogSize", api->nvrtcGetProgramLogSize);
  find("nvrtcGetProgramLog", api->nvrtcGetProgramLog);
  find("nvrtcGetPTXSize", api->nvrtcGetPTXSize);
  find("nvrtcGetPTX", api->nvrtcGetPTX);
  find("nvrtcGetCUBINSize", api->nvrtcGetCUBINSize);
  find("nvrtcGetCUBIN", api->nvrtcGetCUBIN);
  return missing->empty();
}

/** One search: tries candidates in order and records each in `status.tried`. */
class Searcher {
 public:
  Searcher(NvrtcStatus* status, NvrtcApi* api) : st_(*status), api_(*api) {}

  /** Opens `target` (a full path, or a bare name for the loader); true when it is usable. */
  bool Try(const std::string& target, const std::string& method, int flags = 0) {
    bool fullPath = target.find('/') != std::string::npos;
    if (fullPath && !Exists(target)) {
      st_.tried.push_back(target + " [" + method + "]: not found");
      return false;
    }
    dlerror();
    void* lib = dlopen(target.c_str(), RTLD_NOW | RTLD_LOCAL | flags);
    if (lib == nullptr) {
      // RTLD_NOLOAD failing only means "not loaded yet"; dlerror has nothing useful then.
      st_.tried.push_back(target + " [" + method + "]: " +
                          ((flags & RTLD_NOLOAD) ? std::string("not loaded") : DlError()));
      return false;
    }
    std::string missing;
    if (!ResolveApi(lib, &api_, &missing)) {
      st_.tried.push_back(target + " [" + method + "]: lacks " + missing);
      return false;
    }
    std::string path = target;
    Dl_info where;
    if (dladdr(reinterpret_cast<void*>(api_.nvrtcVersion), &where) && where.dli_fname)
      path = where.dli_fname;
    api_.nvrtcVersion(&st_.major, &st_.minor);
    PreloadBuiltins(DirOf(path));
    st_.tried.push_back(target + " [" + method + "]: ok");
    st_.loaded = true;
    st_.path = path;
    st_.foundBy = method;
    return true;
  }

  /** Tries each known library name inside `dir`. */
  bool TryDir(const std::string& dir, const std::string& method) {
    for (const char* name : kNames)
      if (Try(dir + "/" + name, method)) return true;
    return false;
  }

 private:
  // libnvrtc dlopens "libnvrtc-builtins.so.M.m" by name at compile time; a library loaded by
  // full path (the pip wheel has no RUNPATH) cannot find it unless it is already loaded.
  void PreloadBuiltins(const std::string& dir) {
    std::string builtins = dir + "/libnvrtc-builtins.so." + std::to_string(st_.major) + "." +
                           std::to_string(st_.minor);
    if (Exists(builtins)) dlopen(builtins.c_str(), RTLD_NOW | RTLD_GLOBAL);
  }

  NvrtcStatus& st_;
  NvrtcApi& api_;
};

std::vector<std::string> UsrLocalCudaDirs() {
  std::vector<std::string> dirs;
  if (IsDir("/usr/local/cuda/lib64")) dirs.push_back("/usr/local/cuda/lib64");
  glob_t g;
  if (glob("/usr/local/cuda-*/lib64", 0, nullptr, &g) == 0) {
    std::vector<std::string> versioned(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    std::sort(versioned.rbegin(), versioned.rend());  // newest version first
    dirs.insert(dirs.end(), versioned.begin(), versioned.end());
  }
  globfree(&g);
  return dirs;
}

}  // namespace

Nvrtc& Nvrtc::Get() {
  static Nvrtc* nvrtc = new Nvrtc();  // leaked on purpose: NVRTC outlives every env
  return *nvrtc;
}

NvrtcStatus Nvrtc::Current() {
  std::lock_guard<std::mutex> lock(mutex_);
  return loaded_ ? status_ : NvrtcStatus{};
}

const NvrtcApi* Nvrtc::api() {
  std::lock_guard<std::mutex> lock(mutex_);
  return loaded_ ? &api_ : nullptr;
}

NvrtcStatus Nvrtc::Load(const NvrtcSearch& search) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (loaded_) return status_;
  NvrtcStatus st;
  NvrtcApi api;
  Searcher s(&st, &api);
  bool ok = false;
  if (!search.envPath.empty()) {
    const std::string& p = search.envPath;
    const std::string method = "env KILN_NVRTC_PATH";
    ok = IsDir(p) ? s.TryDir(p, method) : s.Try(p, method);
    if (!ok) {
      // An explicit path is the user's decision: report it rather than load another NVRTC.
      std::string why;
      for (const std::string& t : st.tried) why += (why.empty() ? "" : "; ") + t;
      st.errorCode = "KILN_NVRTC_BAD_PATH";
      st.error = "KILN_NVRTC_PATH=" + p + " does not lead to a usable NVRTC (" +
                 (Exists(p) ? why : "no such file or directory") +
                 "); point it at libnvrtc.so.13/.12 or the directory holding it, or unset it";
      return st;
    }
  }
  for (const char* name : kNames)
    if (!ok) ok = s.Try(name, "already loaded", RTLD_NOLOAD);
  for (const std::string& entry : search.cudaHomes) {
    if (ok) break;
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    ok = s.TryDir(entry.substr(eq + 1) + "/lib64", entry.substr(0, eq));
  }
  for (const char* name : kNames)
    if (!ok) ok = s.Try(name, "loader");
  for (const std::string& dir : UsrLocalCudaDirs())
    if (!ok) ok = s.TryDir(dir, "/usr/local/cuda*");
  for (const std::string& dir : search.siteDirs)
    if (!ok) ok = s.TryDir(dir, "site-packages");
  if (!ok) {
    st.errorCode = "KILN_NVRTC_UNAVAILABLE";
    st.error = "NVRTC (libnvrtc.so.13 or .so.12) not found; install it with `pip install "
               "nvidia-cuda-nvrtc` or set KILN_NVRTC_PATH to its file or directory";
    return st;
  }
  int count = 0;
  if (api.nvrtcGetNumSupportedArchs(&count) == 0 && count > 0) {
    st.archs.resize(count);
    if (api.nvrtcGetSupportedArchs(st.archs.data()) != 0) st.archs.clear();
  }
  status_ = st;
  api_ = api;
  loaded_ = true;
  return st;
}

}  // namespace kiln
