// Argument checks and option parsing shared by the C++ kernels of effkernels::dwconv_act. They
// guard memory safety for direct torch.ops calls; effkernels/local_ffn_ops.py raises the same errors
// with the same wording first.
#pragma once
#include "check_message.h"

#include "activations.h"

namespace effkernels {

// Everything a dwconv_act kernel needs to know besides the data pointers.
struct DwconvActShape {
  int64_t batch, tokens, channels, height, width, prefix_tokens;
  bool skip_prefix;
  Activation pre_act, act;
};

inline Activation parse_activation(c10::string_view name, const char* argument, bool allow_gelu) {
  if (name == "relu") return Activation::kReLU;
  if (name == "hardswish") return Activation::kHardswish;
  if (allow_gelu && name == "gelu") return Activation::kGELU;
  if (allow_gelu && name == "gelu_tanh") return Activation::kGELUTanh;
  EFFKERNELS_CHECK_VALUE(false, argument, " must be one of ",
                    allow_gelu ? "'hardswish', 'gelu', 'gelu_tanh', 'relu'" : "None, 'relu', 'hardswish'",
                    ", got '", name, "'");
  return Activation::kIdentity;
}

inline DwconvActShape check_dwconv_act(
    const at::Tensor& h,
    c10::SymIntArrayRef grid_size,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_prefix_tokens,
    c10::string_view prefix,
    std::optional<c10::string_view> pre_act,
    c10::string_view act) {
  EFFKERNELS_CHECK_VALUE(h.dim() == 3, "h must have shape (B, P + H*W, hidden), got ", h.sizes());
  const auto dtype = h.scalar_type();
  EFFKERNELS_CHECK_TYPE(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
                   "h must be float16, bfloat16, float32 or float64, got ", dtype);
  EFFKERNELS_CHECK_VALUE(grid_size.size() == 2, "grid_size must be (H, W), got ", grid_size);
  const int64_t height = grid_size[0].guard_int(__FILE__, __LINE__);
  const int64_t width = grid_size[1].guard_int(__FILE__, __LINE__);
  EFFKERNELS_CHECK_VALUE(height >= 1 && width >= 1, "grid_size must be positive, got (", height, ", ", width, ")");
  EFFKERNELS_CHECK_VALUE(num_prefix_tokens >= 0, "num_prefix_tokens must be >= 0, got ", num_prefix_tokens);
  EFFKERNELS_CHECK_VALUE(h.size(1) == num_prefix_tokens + height * width, "h must hold num_prefix_tokens + H*W = ",
                    num_prefix_tokens, " + ", height, "*", width, " tokens, got ", h.size(1));
  const int64_t channels = h.size(2);
  EFFKERNELS_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 &&
                        weight.size(2) == 3 && weight.size(3) == 3,
                    "weight must have shape (hidden, 1, 3, 3) = (", channels, ", 1, 3, 3), got ", weight.sizes());
  EFFKERNELS_CHECK_TYPE(weight.scalar_type() == dtype, "weight must be ", dtype, " like h, got ", weight.scalar_type());
  EFFKERNELS_CHECK_VALUE(weight.device() == h.device(), "weight must be on ", h.device(), " like h, got ", weight.device());
  if (bias.has_value()) {
    EFFKERNELS_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == channels, "bias must have shape (hidden,) = (",
                      channels, ",), got ", bias->sizes());
    EFFKERNELS_CHECK_TYPE(bias->scalar_type() == dtype, "bias must be ", dtype, " like h, got ", bias->scalar_type());
    EFFKERNELS_CHECK_VALUE(bias->device() == h.device(), "bias must be on ", h.device(), " like h, got ", bias->device());
  }
  EFFKERNELS_CHECK_VALUE(prefix == "mlp" || prefix == "skip", "prefix must be 'mlp' or 'skip', got '", prefix, "'");
  return DwconvActShape{h.size(0),
                        h.size(1),
                        channels,
                        height,
                        width,
                        num_prefix_tokens,
                        prefix == "skip",
                        pre_act.has_value() ? parse_activation(*pre_act, "pre_act", false) : Activation::kIdentity,
                        parse_activation(act, "act", true)};
}

inline void check_dwconv_act_grad(const at::Tensor& grad, const at::Tensor& h) {
  EFFKERNELS_CHECK_VALUE(grad.sizes() == h.sizes(), "grad must have h's shape ", h.sizes(), ", got ", grad.sizes());
  EFFKERNELS_CHECK_TYPE(grad.scalar_type() == h.scalar_type(), "grad must be ", h.scalar_type(), " like h, got ",
                   grad.scalar_type());
  EFFKERNELS_CHECK_VALUE(grad.device() == h.device(), "grad must be on ", h.device(), " like h, got ", grad.device());
}

// The 3x3 weights as (9, hidden) in the accumulation dtype: tap k = 3 * (dy + 1) + (dx + 1) reads the
// neighbour (y + dy, x + dx), and each tap's weights are contiguous over channels.
inline at::Tensor taps_by_channel(const at::Tensor& weight, at::ScalarType acc_dtype) {
  return weight.reshape({weight.size(0), 9}).t().to(acc_dtype).contiguous();
}

// (grad_weight (C, 1, 3, 3), grad_bias (C,)) in weight's dtype from the summed (10, C) tap-major
// weight grads (taps 0..8) and bias grad.
inline std::pair<at::Tensor, at::Tensor> weight_and_bias_grads(const at::Tensor& sums, const at::Tensor& weight) {
  const int64_t channels = sums.size(1);
  return {sums.narrow(0, 0, 9).t().contiguous().reshape({channels, 1, 3, 3}).to(weight.scalar_type()),
          sums.select(0, 9).to(weight.scalar_type(), /*non_blocking=*/false, /*copy=*/true)};
}

}  // namespace effkernels
