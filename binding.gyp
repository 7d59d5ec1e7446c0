# The canonical build of kiln's addon (prebuildify and npm's install fallback drive node-gyp).
# CMakeLists.txt mirrors it for cmake-js. No CUDA here: the driver and NVRTC are dlopen'd.
{
  "targets": [
    {
      "target_name": "kiln",
      "sources": [
        "native/common.cc",
        "native/compile.cc",
        "native/completion.cc",
        "native/cpu.cc",
        "native/driver.cc",
        "native/executor.cc",
        "native/graph.cc",
        "native/kiln.cc",
        "native/launch.cc",
        "native/memory.cc",
        "native/nvrtc.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "libraries": ["-ldl", "-lpthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}
