#include "ops/superpixel_pool.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace spl {

std::tuple<at::Tensor, at::Tensor> superpixel_pool(const at::Tensor& x, const at::Tensor& labels,
                                                   int64_t num_superpixels, c10::string_view reduce) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_pool", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymInt,
                                                                 c10::string_view)>();
  return op.call(x, labels, c10::SymInt(num_superpixels), reduce);
}

at::Tensor superpixel_unpool(const at::Tensor& features, const at::Tensor& labels) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_unpool", "")
                       .typed<decltype(superpixel_unpool)>();
  return op.call(features, labels);
}

at::Tensor superpixel_histogram(const at::Tensor& target, const at::Tensor& labels, int64_t num_superpixels,
                                int64_t num_classes, int64_t ignore_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("spl::superpixel_histogram", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t, int64_t)>();
  return op.call(target, labels, c10::SymInt(num_superpixels), num_classes, ignore_index);
}

std::tuple<at::Tensor, at::Tensor> consistency_weights(const at::Tensor& target, const at::Tensor& labels,
                                                       int64_t num_superpixels, int64_t num_classes, double tau,
                                                       double gamma, int64_t ignore_index) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("spl::consistency_weights", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t,
                                                    double, double, int64_t)>();
  return op.call(target, labels, c10::SymInt(num_superpixels), num_classes, tau, gamma, ignore_index);
}

}  // namespace spl
