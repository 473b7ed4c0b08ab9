#include "ops/edge_aware_unpool.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace spl {

at::Tensor edge_aware_unpool(const at::Tensor& features, const at::Tensor& labels, const at::Tensor& guide,
                             const at::Tensor& guide_means, double sigma, int64_t radius) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::edge_aware_unpool", "")
                       .typed<decltype(edge_aware_unpool)>();
  return op.call(features, labels, guide, guide_means, sigma, radius);
}

}  // namespace spl
