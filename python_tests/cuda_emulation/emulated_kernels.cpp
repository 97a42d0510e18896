// The CUDA C++ kernels of csrc/cuda, emulated on the CPU (cuda_emulation.h), behind the bodies of the
// ops dwconv_act_cuda, dwconv_act_backward_cuda and separable_map_cuda: the tests register them as
// CPU kernels of the ops they implement.
#include "cuda_emulation.h"

#include <torch/extension.h>

#include "../../csrc/cuda/dwconv_act_stencil.cuh"
#include "../../csrc/cuda/separable_map_kernel.cuh"

namespace {

// Few CTAs at once, as on a small GPU: each CTA then takes several samples (the sample loop, the
// shared rows turning across samples and the partial sums over them are exercised).
constexpr int64_t kCtasPerWave = 3;

struct EmulatedLauncher {  // dwconv_act's launcher also answers how many CTAs fit at once
  template <typename Kernel>
  int64_t ctas_per_wave(Kernel, int) const {
    return kCtasPerWave;
  }
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, dim3 grid, dim3 block, Args... args) const {
    cuda_emulation::launch(kernel, grid, block, args...);
  }
};

effkernels::DwconvActShape shape(const at::Tensor& h, const std::vector<int64_t>& grid_size, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens,
                                 const std::string& prefix, const std::optional<std::string>& pre_act,
                                 const std::string& act) {
  std::optional<c10::string_view> pre;
  if (pre_act) pre = c10::string_view(*pre_act);
  return effkernels::check_dwconv_act(h, c10::fromIntArrayRefSlow(grid_size), weight, bias, num_prefix_tokens, prefix,
                                      pre, act);
}

at::Tensor forward(const at::Tensor& h, const std::vector<int64_t>& grid_size, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, const std::string& prefix,
                   const std::optional<std::string>& pre_act, const std::string& act) {
  const auto s = shape(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  return effkernels::stencil::dwconv_act(s, h, weight, bias, EmulatedLauncher{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad, const at::Tensor& h, const std::vector<int64_t>& grid_size, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, const std::string& prefix,
    const std::optional<std::string>& pre_act, const std::string& act) {
  const auto s = shape(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  effkernels::check_dwconv_act_grad(grad, h);
  return effkernels::stencil::dwconv_act_backward(s, grad, h, weight, bias, EmulatedLauncher{});
}

at::Tensor separable_map(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                         const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
                         std::optional<at::ScalarType> out_dtype) {
  const auto s = effkernels::check_separable_map(x, rows, cols, scale, shift, out_dtype);
  return effkernels::separable_map_cuda_kernel::run(s, x, rows, cols, scale, shift, out_dtype, EmulatedLauncher{});
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("dwconv_act", &forward);
  m.def("dwconv_act_backward", &backward);
  m.def("separable_map", &separable_map);
}
