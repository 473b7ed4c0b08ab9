// spl::_cam_unary: its schema. A private op (no C++ API): ASAM's unary, called from Python
// (spl/ops/cam_unary.py). Kernels: ops/cpu/cam_unary_kernel.cpp, ops/cuda/cam_unary_kernel.cu.
#include <torch/library.h>

namespace spl {

TORCH_LIBRARY_FRAGMENT(spl, m) {
  m.def(
      "_cam_unary(Tensor cam, Tensor labels, Tensor class_mask, SymInt num_superpixels, float bg_threshold, "
      "float floor) -> Tensor");
}

}  // namespace spl
