// The spl extension: the Python module stub and the one library that holds every schema.
// Kernels register themselves per backend in ops/cpu/*_kernel.cpp and ops/cuda/*_kernel.cu, so a
// build without CUDA simply has no CUDA kernels.
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// `import spl._C` only has to load this library so the registrations below run; the module has no
// Python functions of its own. (PyMODINIT_FUNC exports the symbol despite -fvisibility=hidden.)
// The CMake build (a plain libtorch library, no Python) leaves it out.
#ifndef SPL_NO_PYTHON_MODULE
#include <Python.h>
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

namespace spl {
namespace {

// CUDA runtime version the extension was compiled with (e.g. 13000), or 0 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDART_VERSION;
#else
  return 0;
#endif
}

}  // namespace

TORCH_LIBRARY(spl, m) {
  m.def("_cuda_version() -> int", &cuda_version);
  m.def(
      "slic(Tensor image, int n_segments, float compactness, int max_num_iter, bool convert2lab, "
      "bool enforce_connectivity, float min_size_factor, float[] spacing, Tensor? mask) "
      "-> (Tensor labels, Tensor counts)");
  m.def("enforce_connectivity(Tensor labels, int min_size) -> (Tensor labels, Tensor counts)");
  // aux: counts [B, K] (int64) for "sum"/"mean", the argmax pixel [B, C, K] (int64, -1: empty) for "max".
  m.def("superpixel_pool(Tensor x, Tensor labels, SymInt num_superpixels, str reduce) -> (Tensor output, Tensor aux)");
  m.def(
      "_superpixel_pool_backward(Tensor grad, Tensor labels, Tensor aux, SymInt height, SymInt width, str reduce) "
      "-> Tensor");
  m.def("superpixel_unpool(Tensor features, Tensor labels) -> Tensor");
  // Unpooling with colour-guided soft boundaries (ops/edge_aware_unpool.h): ASAM's pixel-level step.
  m.def(
      "edge_aware_unpool(Tensor features, Tensor labels, Tensor guide, Tensor guide_means, float sigma, int radius) "
      "-> Tensor");
  m.def(
      "superpixel_histogram(Tensor target, Tensor labels, SymInt num_superpixels, int num_classes, int ignore_index) "
      "-> Tensor");
  m.def(
      "consistency_weights(Tensor target, Tensor labels, SymInt num_superpixels, int num_classes, float tau, "
      "float gamma, int ignore_index) -> (Tensor weights, Tensor transformed)");
  // ASAM. The graph of a batch: CSR over all images' superpixels, node_offset [B + 1].
  m.def("superpixel_adjacency(Tensor labels, Tensor node_offset) -> (Tensor indptr, Tensor indices, Tensor border)");
  // ASAM's unary, the mean log-probability of [background, classes] per superpixel (ops/cam_unary.h).
  m.def(
      "_cam_unary(Tensor cam, Tensor labels, Tensor class_mask, SymInt num_superpixels, float bg_threshold, "
      "float floor) -> Tensor");
  // iters rounds of s <- alpha * T s + (1 - alpha) * x, T = off-diagonal CSR values + a diagonal.
  m.def(
      "sparse_propagate(Tensor indptr, Tensor indices, Tensor node_offset, Tensor edge_value, Tensor self_value, "
      "Tensor x, int iters, float alpha) -> Tensor");
  m.def(
      "_sparse_propagate_backward(Tensor grad, Tensor indptr, Tensor indices, Tensor node_offset, "
      "Tensor edge_value, Tensor self_value, Tensor x, int iters, float alpha) "
      "-> (Tensor grad_edge_value, Tensor grad_self_value, Tensor grad_x)");
}

}  // namespace spl
