// CUDA C++ kernels of effkernels::dwconv_act and its backward (the ops "dwconv_act_cuda" and
// "dwconv_act_backward_cuda"; Triton is the default GPU backend, EFFKERNELS_BACKEND=cuda selects
// these). Token-major throughout: a warp covers 32 consecutive channels of one token, so every load
// and store is coalesced, and the 3x3 neighbours of a token are re-read from L1/L2.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../dwconv_act_checks.h"

namespace effkernels {
namespace {

constexpr int kWarp = 32;             // channels per block
constexpr int kTokenRows = 8;         // tokens per block in the elementwise kernels
constexpr int kTokensPerThread = 16;  // tokens each thread reduces in the weight-grad pass
constexpr int kTokensPerPartial = kTokenRows * kTokensPerThread;

struct TokenPosition {
  int64_t grid_base;  // flat index of the sample's first grid token
  int64_t y, x;       // -1 for prefix tokens
};

__device__ inline TokenPosition locate(const DwconvActShape& s, int64_t token) {
  const int64_t sample = token / s.tokens, n = token % s.tokens;
  const int64_t grid_base = sample * s.tokens + s.prefix_tokens;
  if (n < s.prefix_tokens) return {grid_base, -1, -1};
  const int64_t cell = n - s.prefix_tokens;
  return {grid_base, cell / s.width, cell % s.width};
}

// Calls tap(k, neighbour_token) for each in-grid neighbour (y + dir*dy, x + dir*dx) of the token.
template <typename F>
__device__ inline void for_each_tap(const DwconvActShape& s, const TokenPosition& p, int dir, F&& tap) {
#pragma unroll
  for (int dy = -1; dy <= 1; ++dy) {
    const int64_t yy = p.y + dir * dy;
#pragma unroll
    for (int dx = -1; dx <= 1; ++dx) {
      const int64_t xx = p.x + dir * dx;
      if (yy >= 0 && yy < s.height && xx >= 0 && xx < s.width) tap(3 * (dy + 1) + (dx + 1), p.grid_base + yy * s.width + xx);
    }
  }
}

// z = bias + sum_k taps[k][c] * pre_act(h[neighbour_k][c]) for one grid token and channel.
template <Activation Pre, typename scalar_t, typename acc_t>
__device__ inline acc_t conv_at(const DwconvActShape& s, const TokenPosition& p, int64_t c,
                                const scalar_t* __restrict__ h, const acc_t* __restrict__ taps,
                                const acc_t* __restrict__ bias) {
  acc_t z = bias ? bias[c] : acc_t(0);
  for_each_tap(s, p, 1, [&](int k, int64_t neighbour) {
    z += taps[k * s.channels + c] * activate<Pre>(static_cast<acc_t>(h[neighbour * s.channels + c]));
  });
  return z;
}

// Which (token, channel) this thread owns in the elementwise kernels; false when outside.
__device__ inline bool element_of_thread(const DwconvActShape& s, int64_t channel_groups, int64_t& token,
                                         int64_t& c) {
  c = (blockIdx.x % channel_groups) * kWarp + threadIdx.x;
  token = (blockIdx.x / channel_groups) * kTokenRows + threadIdx.y;
  return c < s.channels && token < s.batch * s.tokens;
}

template <Activation Pre, Activation Act, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarp * kTokenRows) dwconv_act_kernel(
    DwconvActShape s, int64_t channel_groups, const scalar_t* __restrict__ h, const acc_t* __restrict__ taps,
    const acc_t* __restrict__ bias, scalar_t* __restrict__ out) {
  int64_t token, c;
  if (!element_of_thread(s, channel_groups, token, c)) return;
  const auto p = locate(s, token);
  acc_t a;
  if (p.y >= 0) {
    a = activate<Act>(conv_at<Pre>(s, p, c, h, taps, bias));
  } else {
    a = s.skip_prefix ? acc_t(0) : activate<Act>(activate<Pre>(static_cast<acc_t>(h[token * s.channels + c])));
  }
  out[token * s.channels + c] = static_cast<scalar_t>(a);
}

// Backward pass 1: grad_z = grad * act'(z) (prefix tokens: grad * act'(pre_act(h))), and per block
// the partial weight and bias grads over its kTokensPerPartial tokens, summed in a fixed order.
template <Activation Pre, Activation Act, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarp * kTokenRows) dwconv_act_grad_z_kernel(
    DwconvActShape s, int64_t channel_groups, const scalar_t* __restrict__ grad, const scalar_t* __restrict__ h,
    const acc_t* __restrict__ taps, const acc_t* __restrict__ bias, acc_t* __restrict__ grad_z,
    acc_t* __restrict__ partials) {
  __shared__ acc_t block_sums[kTokenRows][10][kWarp];
  const int64_t c = (blockIdx.x % channel_groups) * kWarp + threadIdx.x;
  const int64_t chunk = blockIdx.x / channel_groups;
  const int64_t total = s.batch * s.tokens;
  acc_t sums[10] = {};
  if (c < s.channels) {
    for (int i = 0; i < kTokensPerThread; ++i) {
      const int64_t token = chunk * kTokensPerPartial + i * kTokenRows + threadIdx.y;
      if (token >= total) break;
      const auto p = locate(s, token);
      const acc_t g = static_cast<acc_t>(grad[token * s.channels + c]);
      if (p.y < 0) {
        grad_z[token * s.channels + c] =
            s.skip_prefix ? acc_t(0)
                          : g * activate_grad<Act>(activate<Pre>(static_cast<acc_t>(h[token * s.channels + c])));
        continue;
      }
      const acc_t gz = g * activate_grad<Act>(conv_at<Pre>(s, p, c, h, taps, bias));
      grad_z[token * s.channels + c] = gz;
      for_each_tap(s, p, 1, [&](int k, int64_t neighbour) {
        sums[k] += gz * activate<Pre>(static_cast<acc_t>(h[neighbour * s.channels + c]));
      });
      sums[9] += gz;
    }
  }
#pragma unroll
  for (int k = 0; k < 10; ++k) block_sums[threadIdx.y][k][threadIdx.x] = sums[k];
  __syncthreads();
  if (c >= s.channels) return;
  for (int k = threadIdx.y; k < 10; k += kTokenRows) {
    acc_t total_k = 0;
#pragma unroll
    for (int row = 0; row < kTokenRows; ++row) total_k += block_sums[row][k][threadIdx.x];
    partials[(chunk * 10 + k) * s.channels + c] = total_k;
  }
}

// Backward pass 2: grad_h = pre_act'(h) * conv^T(grad_z); prefix tokens: pre_act'(h) * grad_z.
template <Activation Pre, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarp * kTokenRows) dwconv_act_grad_h_kernel(
    DwconvActShape s, int64_t channel_groups, const scalar_t* __restrict__ h, const acc_t* __restrict__ taps,
    const acc_t* __restrict__ grad_z, scalar_t* __restrict__ grad_h) {
  int64_t token, c;
  if (!element_of_thread(s, channel_groups, token, c)) return;
  const auto p = locate(s, token);
  acc_t g = 0;
  if (p.y >= 0) {
    // Token (y, x) receives tap k from the token it fed, (y - dy, x - dx).
    for_each_tap(s, p, -1, [&](int k, int64_t neighbour) {
      g += taps[k * s.channels + c] * grad_z[neighbour * s.channels + c];
    });
  } else {
    g = grad_z[token * s.channels + c];
  }
  const int64_t i = token * s.channels + c;
  grad_h[i] = static_cast<scalar_t>(g * activate_grad<Pre>(static_cast<acc_t>(h[i])));
}

int64_t blocks_for(int64_t tokens_per_block, const DwconvActShape& s, int64_t channel_groups) {
  return (s.batch * s.tokens + tokens_per_block - 1) / tokens_per_block * channel_groups;
}

at::Tensor dwconv_act_cuda(const at::Tensor& h_in, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
                           std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h_in, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  const c10::cuda::CUDAGuard guard(h_in.device());
  const auto h = h_in.contiguous();
  auto out = at::empty_like(h, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const int64_t groups = (s.channels + kWarp - 1) / kWarp;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = taps_by_channel(weight, c10::CppTypeToScalarType<acc_t>::value);
    const auto bias_acc = bias ? bias->to(taps.scalar_type()).contiguous() : at::Tensor();
    dispatch_activations(s.pre_act, s.act, [&](auto pre, auto a) {
      dwconv_act_kernel<decltype(pre)::value, decltype(a)::value>
          <<<blocks_for(kTokenRows, s, groups), dim3(kWarp, kTokenRows), 0, stream>>>(
              s, groups, h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
              bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr, out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_act_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& h_in, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
    std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h_in, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  check_dwconv_act_grad(grad_in, h_in);
  const c10::cuda::CUDAGuard guard(h_in.device());
  const auto h = h_in.contiguous();
  const auto grad = grad_in.contiguous();
  auto grad_h = at::empty_like(h, at::MemoryFormat::Contiguous);
  at::Tensor grad_weight, grad_bias;
  const int64_t groups = (s.channels + kWarp - 1) / kWarp;
  const int64_t chunks = (s.batch * s.tokens + kTokensPerPartial - 1) / kTokensPerPartial;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    const auto taps = taps_by_channel(weight, acc_dtype);
    const auto bias_acc = bias ? bias->to(acc_dtype).contiguous() : at::Tensor();
    auto grad_z = at::empty(h.sizes(), h.options().dtype(acc_dtype));
    auto partials = at::empty({chunks, 10, s.channels}, h.options().dtype(acc_dtype));
    if (h.numel() > 0) {
      dispatch_activations(s.pre_act, s.act, [&](auto pre, auto a) {
        dwconv_act_grad_z_kernel<decltype(pre)::value, decltype(a)::value>
            <<<chunks * groups, dim3(kWarp, kTokenRows), 0, stream>>>(
                s, groups, grad.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
                bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr, grad_z.mutable_data_ptr<acc_t>(),
                partials.mutable_data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        dwconv_act_grad_h_kernel<decltype(pre)::value>
            <<<blocks_for(kTokenRows, s, groups), dim3(kWarp, kTokenRows), 0, stream>>>(
                s, groups, h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(), grad_z.const_data_ptr<acc_t>(),
                grad_h.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    std::tie(grad_weight, grad_bias) = weight_and_bias_grads(partials.sum(0), weight);  // fixed-order sum
  });
  return {grad_h, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CUDA, m) {
  m.impl("dwconv_act_cuda", &dwconv_act_cuda);
  m.impl("dwconv_act_backward_cuda", &dwconv_act_backward_cuda);
}

}  // namespace effkernels
