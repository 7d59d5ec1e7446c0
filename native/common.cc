// Coded errors and argument readers shared by every part of the kiln addon.
#include "common.h"

#include <cmath>

namespace kiln {

// Random 128-bit tags: napi compares them by value to tell handle kinds apart.
const napi_type_tag kCpuLibraryTag = {0x6b696c6e43505531ULL, 0x9d1c2e4fa0b3c5d7ULL};
const napi_type_tag kDeviceMemoryTag = {0x6b696c6e4d454d31ULL, 0x4e8a7b2c1d0f3e65ULL};
const napi_type_tag kModuleTag = {0x6b696c6e4d4f4431ULL, 0x1f2e3d4c5b6a7988ULL};
const napi_type_tag kFunctionTag = {0x6b696c6e46554e31ULL, 0x8877665544332211ULL};
const napi_type_tag kExecutorTag = {0x6b696c6e45584531ULL, 0x5a3c9e1b7d2f4068ULL};

Napi::Error MakeError(Napi::Env env, const ErrorInfo& info) {
  Napi::Error err = Napi::Error::New(env, info.message);
  err.Set("code", Napi::String::New(env, info.code));
  if (!info.cudaError.empty()) err.Set("cudaError", Napi::String::New(env, info.cudaError));
  if (!info.log.empty()) err.Set("log", Napi::String::New(env, info.log));
  for (const auto& [key, value] : info.numbers) err.Set(key, Napi::Number::New(env, value));
  return err;
}

void Throw(Napi::Env env, const std::string& code, const std::string& message) {
  throw MakeError(env, {code, message, "", ""});
}

void ThrowArg(Napi::Env env, const std::string& message) { Throw(env, "KILN_ARGUMENT", message); }

Bytes GetBytes(const Napi::Value& value, const std::string& what) {
  if (value.IsArrayBuffer()) {
    auto ab = value.As<Napi::ArrayBuffer>();
    return {ab.Data(), ab.ByteLength()};
  }
  if (value.IsTypedArray()) {
    auto ta = value.As<Napi::TypedArray>();
    auto* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data());
    return {base + ta.ByteOffset(), ta.ByteLength()};
  }
  if (value.IsDataView()) {
    auto dv = value.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.Data()), dv.ByteLength()};
  }
  ThrowArg(value.Env(), what + " must be an ArrayBuffer or a TypedArray");
}

int64_t GetInt(const Napi::Value& value, const std::string& what) {
  if (value.IsBigInt()) {
    bool lossless = false;
    int64_t v = value.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) ThrowArg(value.Env(), what + " does not fit in int64");
    return v;
  }
  if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    // 2^63 as a double: the first value past int64's range.
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) >= 9223372036854775808.0) {
      ThrowArg(value.Env(), what + " must be an integer, got " + std::to_string(d));
    }
    return static_cast<int64_t>(d);
  }
  ThrowArg(value.Env(), what + " must be a number or a bigint");
}

std::string GetString(const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) ThrowArg(value.Env(), what + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

}  // namespace kiln
