// CPU entry points of effkernels::dwconv_act and its backward: checks, buffers, and the choice of
// the kernels compiled for this CPU's instruction set (csrc/cpu/dwconv_act_impl.h).
#include <torch/library.h>

#include "dwconv_act_kernels.h"

namespace effkernels {
namespace {

// The accumulation-dtype copies of the conv weights (as (9, C) taps) and bias the kernels read.
std::pair<at::Tensor, at::Tensor> kernel_weights(const at::Tensor& h, const at::Tensor& weight,
                                                 const std::optional<at::Tensor>& bias) {
  const auto acc_dtype = at::toOpMathType(h.scalar_type());
  return {taps_by_channel(weight, acc_dtype), bias ? bias->to(acc_dtype).contiguous() : at::Tensor()};
}

at::Tensor dwconv_act_cpu(const at::Tensor& h_in, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
                          std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h_in, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  const auto h = h_in.contiguous();
  auto out = at::empty_like(h, at::MemoryFormat::Contiguous);
  const auto [taps, bias_acc] = kernel_weights(h, weight, bias);
#ifdef EFFKERNELS_CPU_AVX2
  if (use_avx2()) {
    cpu_avx2::dwconv_act_forward(s, h, taps, bias_acc, out);
    return out;
  }
#endif
  cpu_baseline::dwconv_act_forward(s, h, taps, bias_acc, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_act_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& h_in, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
    std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h_in, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  check_dwconv_act_grad(grad_in, h_in);
  const auto h = h_in.contiguous();
  const auto grad = grad_in.contiguous();
  auto grad_h = at::empty_like(h, at::MemoryFormat::Contiguous);
  const auto [taps, bias_acc] = kernel_weights(h, weight, bias);
  auto partials = at::empty({s.batch, 10, s.channels}, taps.options());
#ifdef EFFKERNELS_CPU_AVX2
  if (use_avx2()) {
    cpu_avx2::dwconv_act_backward(s, grad, h, taps, bias_acc, partials, grad_h);
  } else
#endif
  {
    cpu_baseline::dwconv_act_backward(s, grad, h, taps, bias_acc, partials, grad_h);
  }
  // Sum the per-sample partials in a fixed order, whatever the thread count.
  auto sums = at::zeros({10, s.channels}, taps.options());
  for (int64_t sample = 0; sample < s.batch; ++sample) sums.add_(partials[sample]);
  auto [grad_weight, grad_bias] = weight_and_bias_grads(sums, weight);
  return {grad_h, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CPU, m) {
  m.impl("dwconv_act", &dwconv_act_cpu);
  m.impl("dwconv_act_backward", &dwconv_act_backward_cpu);
}

}  // namespace effkernels
