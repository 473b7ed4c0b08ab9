// Argument and value checks that raise Python ValueError / TypeError with a message.
//
// Rule: SPL_CHECK_VALUE / SPL_CHECK_TYPE (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE with the message
// built here) build every message from strings, std::to_string and snprintf, never through
// std::ostream's number formatting, and hand c10 one std::string (which c10::str passes through
// without a stream). The extension may carry its own copy of libstdc++'s stream code, whose locale
// facets belong to the process's libstdc++: formatting a number with it can crash the process, so a
// raised error would become a segfault (this happened with torch 2.11 + CUDA 13 and g++ 13).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cstdio>
#include <string>
#include <type_traits>

namespace spl {
namespace detail {

inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, c10::string_view v) { s.append(v.data(), v.size()); }
inline void append(std::string& s, char v) { s += v; }
inline void append(std::string& s, bool v) { s += v ? "true" : "false"; }
template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                           !std::is_same_v<T, char>, int> = 0>
inline void append(std::string& s, T v) {
  s += std::to_string(v);
}
inline void append(std::string& s, double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", v);
  s += buffer;
}
inline void append(std::string& s, float v) { append(s, static_cast<double>(v)); }
inline void append(std::string& s, c10::IntArrayRef v) {
  s += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  s += ']';
}
inline void append(std::string& s, c10::ScalarType v) { s += c10::toString(v); }
inline void append(std::string& s, const c10::Device& v) { s += v.str(); }  // formatted inside libc10

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}

}  // namespace detail
}  // namespace spl

#define SPL_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::spl::detail::message(__VA_ARGS__))
#define SPL_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::spl::detail::message(__VA_ARGS__))
#define SPL_CHECK(cond, ...) TORCH_CHECK(cond, ::spl::detail::message(__VA_ARGS__))
