// Argument checks that raise torch's ValueError / TypeError with messages built without iostreams.
//
// Why: a toolchain may put its own copies of parts of libstdc++ into the extension (the GPU image's
// /opt/gcc did, 2026-11-23): formatting a number through an ostream inside the extension then mixed
// two libstdc++ copies and crashed (SIGSEGV in basic_ostream::_M_insert<long>, reached from
// TORCH_CHECK_VALUE's message). std::to_string and string appends touch no locale, and c10::Error's
// constructor runs inside libc10, so a bad argument always becomes a Python exception.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <string_view>
#include <type_traits>

namespace effkernels::message {

inline std::string piece(std::string_view text) { return std::string(text); }
inline std::string piece(const char* text) { return text; }
inline std::string piece(at::ScalarType dtype) { return c10::toString(dtype); }
inline std::string piece(const c10::Device& device) { return device.str(); }
inline std::string piece(const c10::SymInt& value) {
  const auto concrete = value.maybe_as_int();
  return concrete.has_value() ? std::to_string(*concrete) : "<symbolic>";
}

template <typename Integer, typename = std::enable_if_t<std::is_integral_v<Integer>>>
std::string piece(Integer value) {
  return std::to_string(value);
}

// A shape or list as "[a, b, c]", as torch prints sizes.
template <typename T>
std::string piece(c10::ArrayRef<T> values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    out += (i ? ", " : "") + piece(values[i]);
  }
  return out + "]";
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::string out;
  (out.append(piece(args)), ...);
  return out;
}

}  // namespace effkernels::message

#define EFFKERNELS_CHECK_AS(error, condition, ...)                                 \
  do {                                                                             \
    if (C10_UNLIKELY(!(condition))) {                                              \
      C10_THROW_ERROR(error, ::effkernels::message::concat(__VA_ARGS__));          \
    }                                                                              \
  } while (false)

// A bad value or shape: ValueError in Python.
#define EFFKERNELS_CHECK_VALUE(condition, ...) EFFKERNELS_CHECK_AS(ValueError, condition, __VA_ARGS__)
// A bad dtype: TypeError in Python.
#define EFFKERNELS_CHECK_TYPE(condition, ...) EFFKERNELS_CHECK_AS(TypeError, condition, __VA_ARGS__)
// A broken internal invariant: RuntimeError in Python.
#define EFFKERNELS_CHECK(condition, ...) EFFKERNELS_CHECK_AS(Error, condition, __VA_ARGS__)
