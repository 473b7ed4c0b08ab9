// spl::_cam_unary (private: no C++ API): ASAM's unary term, pooled over superpixels straight from
// the CAM.
//
//   T_p         = t + sum over the image's present classes c of cam_c(p)
//   out[b,0,k]  = mean over the pixels p of superpixel k of  log max(t,         floor * T_p) - log T_p
//   out[b,1+c,k]= mean over the pixels p of superpixel k of  log max(cam_c(p),  floor * T_p) - log T_p
//                 for the present classes c (class_mask[b, c]); 0 for the others and for empty
//                 superpixels.
//
// That is the mean log-probability of [background, classes] after normalising [t, cam] per pixel,
// floored at `floor`. One pass over the CAM (the largest input of ASAM), and only the present
// classes' planes are read: spl.reference.cam_unary computes the same with dense tensor ops, which
// read and write every plane several times.
//
// Every per-pixel value lies in [log floor, 0] (both arguments of max are <= T_p), so the means are
// taken over fixed-point int64 sums with a scale known in advance: exact, deterministic sums whose
// order (threads, atomics) never matters, on the CPU and the GPU alike.
//
// A private op: asam_refine checks the inputs first (finite, non-negative CAM; labels in [-1, K)).
// The kernels still check shapes, dtypes and devices, and skip labels outside [0, K). Its gradient
// (spl/ops/cam_unary.py) is the reference formula's, differentiated by autograd.
#pragma once

#include "ops/check.h"
#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>

namespace spl {
namespace cam_unary {

// Fixed-point scale 2^s for sums of up to `pixels` values of magnitude <= |log floor|: the largest
// s with pixels * (|log floor| + 1) * 2^s < 2^62.
inline double fixed_scale(double floor, int64_t pixels) {
  const double log_floor = std::log(floor);
  int bits = 0;
  while ((int64_t{1} << bits) < pixels + 1) ++bits;  // pixels < 2^bits
  int e = 0;
  std::frexp(std::fabs(log_floor) + 1.0, &e);  // |log floor| + 1 < 2^e (+1: rounding slack)
  return std::ldexp(1.0, 62 - bits - e);
}

}  // namespace cam_unary

inline void check_cam_unary_args(const at::Tensor& cam, const at::Tensor& labels, const at::Tensor& class_mask,
                                 int64_t num_superpixels, double bg_threshold, double floor) {
  const char* op = "_cam_unary";
  SPL_CHECK_TYPE(cam.scalar_type() == at::kFloat || cam.scalar_type() == at::kDouble, op,
                 ": cam must be float32 or float64, got ", cam.scalar_type());
  SPL_CHECK_VALUE(cam.dim() == 4, op, ": cam must have shape [B, C, H, W], got ", cam.sizes());
  const int64_t B = cam.size(0), C = cam.size(1), H = cam.size(2), W = cam.size(3);
  SPL_CHECK_TYPE(labels.scalar_type() == at::kLong, op, ": labels must be an int64 tensor, got ", labels.scalar_type());
  SPL_CHECK_VALUE(labels.dim() == 3 && labels.size(0) == B && labels.size(1) == H && labels.size(2) == W, op,
                  ": labels must have shape [B, H, W] = [", B, ", ", H, ", ", W, "], got ", labels.sizes());
  SPL_CHECK_TYPE(class_mask.scalar_type() == at::kBool, op, ": class_mask must be a bool tensor, got ",
                 class_mask.scalar_type());
  SPL_CHECK_VALUE(class_mask.dim() == 2 && class_mask.size(0) == B && class_mask.size(1) == C, op,
                  ": class_mask must have shape [B, C] = [", B, ", ", C, "], got ", class_mask.sizes());
  SPL_CHECK_VALUE(labels.device() == cam.device() && class_mask.device() == cam.device(), op,
                  ": cam, labels and class_mask must be on one device, got ", cam.device(), ", ", labels.device(),
                  " and ", class_mask.device());
  SPL_CHECK_VALUE(num_superpixels >= 0, op, ": num_superpixels must be >= 0, got ", num_superpixels);
  SPL_CHECK_VALUE(std::isfinite(bg_threshold) && bg_threshold > 0.0, op, ": bg_threshold must be finite and > 0, got ",
                  bg_threshold);
  SPL_CHECK_VALUE(floor >= 1e-30 && floor < 1.0, op, ": floor must be in [1e-30, 1), got ", floor);
}

}  // namespace spl
