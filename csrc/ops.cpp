// Every effkernels op schema, declared once. Kernels live in csrc/cpu, csrc/cuda and effkernels/triton.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import effkernels._C` loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(effkernels, m) {
  // out[n, c] = (sum_k rows[n, k] @ x[n, c] @ cols[n, k]^T) * scale[c] + shift[c], cast to out_dtype.
  // x (N, C, H, W); rows (1 or N, K, OH, H); cols (1 or N, K, OW, W); scale, shift (C,).
  m.def(
      "separable_map(Tensor x, Tensor rows, Tensor cols, Tensor? scale=None, Tensor? shift=None, "
      "ScalarType? out_dtype=None) -> Tensor");
#ifdef EFFKERNELS_WITH_CUDA
  // The CUDA C++ kernel of separable_map, chosen by EFFKERNELS_BACKEND=cuda (see effkernels/ops.py).
  m.def(
      "separable_map_cuda(Tensor x, Tensor rows, Tensor cols, Tensor? scale=None, Tensor? shift=None, "
      "ScalarType? out_dtype=None) -> Tensor");
#endif
  // EfficientTrain's low-frequency crop, then an antialiased bilinear resize and normalisation.
  m.def(
      "lowfreq_crop(Tensor x, SymInt[2] size, SymInt[2]? out_size=None, float[]? mean=None, "
      "float[]? std=None, ScalarType? out_dtype=None) -> Tensor");
  // The (rows, cols) operator pair that makes separable_map compute lowfreq_crop.
  m.def(
      "lowfreq_crop_operators(SymInt[2] in_size, SymInt[2] size, SymInt[2] out_size, *, "
      "ScalarType dtype, Device device) -> (Tensor, Tensor)");
}
