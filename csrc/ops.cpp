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
  // out[n, c] = (sum_k rows[n, k] @ x[n, c] @ cols[n, k]^T + (row_v[n] . x[n, c] col_v[n]) row_u[n] col_u[n]^T)
  //             * scale[c] + shift[c], cast to out_dtype.
  // x (N, C, H, W); rows (1 or N, K, OH, H); cols (1 or N, K, OW, W); scale, shift (C,); the optional
  // rank-one term (all four or none): row_u (1 or N, OH), row_v (1 or N, H), col_u (1 or N, OW), col_v (1 or N, W).
  m.def(
      "separable_map(Tensor x, Tensor rows, Tensor cols, Tensor? scale=None, Tensor? shift=None, "
      "ScalarType? out_dtype=None, Tensor? row_u=None, Tensor? row_v=None, Tensor? col_u=None, "
      "Tensor? col_v=None) -> Tensor");
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
  // The operators that make separable_map compute lowfreq_crop: (rows, cols) of the real term, K = 1,
  // and the rank-one imaginary term's factors (row_u, row_v, col_u, col_v), zero unless both bands are even.
  m.def(
      "lowfreq_crop_operators(SymInt[2] in_size, SymInt[2] size, SymInt[2] out_size, *, "
      "ScalarType dtype, Device device) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  // LocalFFN (ViT in 24 h): y = fc2(act(dwconv3x3(pre_act(fc1(x))) on the token grid)); prefix tokens
  // bypass the conv ("mlp") or get zeros ("skip"). x (B, P + H*W, D); dw_weight (hidden, 1, 3, 3).
  m.def(
      "local_ffn(Tensor x, SymInt[2] grid_size, Tensor fc1_weight, Tensor? fc1_bias, Tensor dw_weight, "
      "Tensor? dw_bias, Tensor fc2_weight, Tensor? fc2_bias, *, int num_prefix_tokens=0, str prefix=\"mlp\", "
      "str? pre_act=None, str act=\"hardswish\") -> Tensor");
  // The fused middle of local_ffn on token-major h = fc1(x): pre_act, depthwise 3x3 conv + bias on the
  // grid tokens, act. Its backward returns (grad_h, grad_weight, grad_bias).
#define EFFKERNELS_DWCONV_ACT_ARGS                                                               \
  "SymInt[2] grid_size, Tensor weight, Tensor? bias=None, *, int num_prefix_tokens=0, "          \
  "str prefix=\"mlp\", str? pre_act=None, str act=\"hardswish\")"
  m.def("dwconv_act(Tensor h, " EFFKERNELS_DWCONV_ACT_ARGS " -> Tensor");
  m.def("dwconv_act_backward(Tensor grad, Tensor h, " EFFKERNELS_DWCONV_ACT_ARGS " -> (Tensor, Tensor, Tensor)");
#ifdef EFFKERNELS_WITH_CUDA
  // The CUDA C++ kernels of dwconv_act, chosen by EFFKERNELS_BACKEND=cuda.
  m.def("dwconv_act_cuda(Tensor h, " EFFKERNELS_DWCONV_ACT_ARGS " -> Tensor");
  m.def("dwconv_act_backward_cuda(Tensor grad, Tensor h, " EFFKERNELS_DWCONV_ACT_ARGS
        " -> (Tensor, Tensor, Tensor)");
#endif
#undef EFFKERNELS_DWCONV_ACT_ARGS
}
