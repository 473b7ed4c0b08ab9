// Argument and value checks that raise Python ValueError / TypeError with a message, and the
// argument checks that several ops share.
//
// Rules: a wrong dtype is a TypeError (SPL_CHECK_TYPE), a wrong shape, device or value a ValueError
// (SPL_CHECK_VALUE); every message starts with the op's name and names the argument. Messages are
// built from strings, std::to_string and snprintf, never through std::ostream's number formatting,
// and handed to c10 as one std::string (which c10::str passes through without a stream): the
// extension may carry its own copy of libstdc++'s stream code, whose locale facets belong to the
// process's libstdc++, and formatting a number with it can crash the process instead of raising.
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
template <typename T,
          std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>, int> = 0>
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

namespace spl {

// labels: int64 [B, H, W] on `device`, values in [-1, K) (the range is checked by the kernels).
inline void check_labels(const char* op, const at::Tensor& labels, int64_t batch, int64_t height, int64_t width,
                         const at::Device& device, int64_t num_superpixels) {
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ", labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == batch && labels.size(1) == height && labels.size(2) == width,
                  op, ": labels must have shape [B, H, W] = [", batch, ", ", height, ", ", width, "], got ",
                  labels.sizes());
  SPL_CHECK_VALUE(labels.device() == device, op, ": labels are on ", labels.device(), " but the input is on ", device);
  SPL_CHECK_VALUE(num_superpixels >= 0, op, ": num_superpixels must be >= 0, got ", num_superpixels);
}

inline void check_features(const char* op, const at::Tensor& x, int64_t dims) {
  const auto t = x.scalar_type();
  SPL_CHECK_TYPE(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble, op,
                 ": input must be float16, bfloat16, float32 or float64, got ", t);
  SPL_CHECK_VALUE(x.dim() == dims, op, ": input must have ", dims, " dimensions, got shape ", x.sizes());
}

// target: int64 [B, H, W]; classes in [0, num_classes) or ignore_index (checked by the kernels).
inline void check_target(const char* op, const at::Tensor& target, int64_t num_classes) {
  SPL_CHECK_TYPE(target.scalar_type() == at::kLong, op, ": target must be an int64 tensor, got ", target.scalar_type());
  SPL_CHECK_VALUE(target.dim() == 3, op, ": target must have shape [B, H, W], got ", target.sizes());
  SPL_CHECK_VALUE(num_classes >= 1, op, ": num_classes must be >= 1, got ", num_classes);
}

// node_offset: int64 [B + 1] on `device` (the batch CSR of superpixel graphs: ops/superpixel_adjacency.h).
inline void check_node_offset(const char* op, const at::Tensor& node_offset, const at::Device& device) {
  SPL_CHECK_TYPE(node_offset.scalar_type() == at::kLong, op, ": node_offset must be an int64 tensor, got ",
                 node_offset.scalar_type());
  SPL_CHECK_VALUE(node_offset.dim() == 1 && node_offset.size(0) >= 1, op, ": node_offset must have shape [B + 1], got ",
                  node_offset.sizes());
  SPL_CHECK_VALUE(node_offset.device() == device, op, ": node_offset is on ", node_offset.device(),
                  " but the labels / features are on ", device);
}

// Messages for values out of range, found by the kernels.
inline const char* label_range_message() { return "labels must be in [-1, num_superpixels) (-1: ignored pixel)"; }
inline const char* target_range_message() {
  return "target must hold class indices in [0, num_classes) or ignore_index";
}

}  // namespace spl
