// CPU kernels of effkernels::dwconv_act and its backward: the depthwise 3x3 conv + bias + activations
// of LocalFFN, read and written token-major (B, P + H*W, hidden), so no Seq2Im/Im2Seq copies. Each
// token's channels are contiguous, so the inner loops run over channels and vectorise.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../dwconv_act_checks.h"

namespace effkernels {
namespace {

constexpr int64_t kTokensPerTask = 16;       // parallel grain of the token loops
constexpr int64_t kTokensPerPartial = 256;   // fixed reduction chunk: the weight grad is deterministic

// Where token `token` of the flattened (B * N) sequence sits on the grid.
struct TokenPosition {
  int64_t grid_base;  // flat index of the sample's first grid token
  int64_t y, x;       // -1 for prefix tokens
};

inline TokenPosition locate(const DwconvActShape& s, int64_t token) {
  const int64_t sample = token / s.tokens, n = token % s.tokens;
  const int64_t grid_base = sample * s.tokens + s.prefix_tokens;
  if (n < s.prefix_tokens) return {grid_base, -1, -1};
  const int64_t cell = n - s.prefix_tokens;
  return {grid_base, cell / s.width, cell % s.width};
}

// Calls tap(k, neighbour_token) for each in-grid neighbour of (y, x); k indexes the 3x3 taps.
template <typename F>
inline void for_each_tap(const DwconvActShape& s, const TokenPosition& p, int dir, F&& tap) {
  for (int dy = -1; dy <= 1; ++dy) {
    const int64_t yy = p.y + dir * dy;
    if (yy < 0 || yy >= s.height) continue;
    for (int dx = -1; dx <= 1; ++dx) {
      const int64_t xx = p.x + dir * dx;
      if (xx < 0 || xx >= s.width) continue;
      tap(3 * (dy + 1) + (dx + 1), p.grid_base + yy * s.width + xx);
    }
  }
}

// acc[c] = bias[c] + sum_k taps[k][c] * pre_act(h[neighbour_k][c]): the conv output z of one grid token.
template <Activation Pre, typename scalar_t, typename acc_t>
inline void conv_at(const DwconvActShape& s, const TokenPosition& p, const scalar_t* h, const acc_t* taps,
                    const acc_t* bias, acc_t* acc) {
  const int64_t C = s.channels;
  for (int64_t c = 0; c < C; ++c) acc[c] = bias ? bias[c] : acc_t(0);
  for_each_tap(s, p, 1, [&](int k, int64_t neighbour) {
    const scalar_t* src = h + neighbour * C;
    const acc_t* w = taps + k * C;
    for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * activate<Pre>(static_cast<acc_t>(src[c]));
  });
}

template <Activation Pre, Activation Act, typename scalar_t>
void forward_kernel(const DwconvActShape& s, const scalar_t* h, const at::opmath_type<scalar_t>* taps,
                    const at::opmath_type<scalar_t>* bias, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = s.channels;
  at::parallel_for(0, s.batch * s.tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t t = begin; t < end; ++t) {
      const auto p = locate(s, t);
      scalar_t* dst = out + t * C;
      if (p.y < 0) {  // prefix token: no conv
        const scalar_t* src = h + t * C;
        for (int64_t c = 0; c < C; ++c)
          dst[c] = s.skip_prefix ? scalar_t(0) : scalar_t(activate<Act>(activate<Pre>(static_cast<acc_t>(src[c]))));
        continue;
      }
      conv_at<Pre>(s, p, h, taps, bias, acc.data());
      for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(activate<Act>(acc[c]));
    }
  });
}

// Pass 1 of the backward: grad_z = grad * act'(z) (for prefix tokens grad * act'(pre_act(h))), and the
// per-chunk partial sums of the weight and bias grads. Pass 2: grad_h = pre_act'(h) * conv^T(grad_z).
template <Activation Pre, Activation Act, typename scalar_t>
void backward_kernel(const DwconvActShape& s, const scalar_t* grad, const scalar_t* h,
                     const at::opmath_type<scalar_t>* taps, const at::opmath_type<scalar_t>* bias,
                     at::opmath_type<scalar_t>* grad_z, at::opmath_type<scalar_t>* partials, scalar_t* grad_h) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = s.channels, total = s.batch * s.tokens;
  const int64_t chunks = (total + kTokensPerPartial - 1) / kTokensPerPartial;
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> z(C);
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      acc_t* partial = partials + chunk * 10 * C;  // taps 0..8, then the bias
      std::fill(partial, partial + 10 * C, acc_t(0));
      const int64_t end = std::min(total, (chunk + 1) * kTokensPerPartial);
      for (int64_t t = chunk * kTokensPerPartial; t < end; ++t) {
        const auto p = locate(s, t);
        const scalar_t* g = grad + t * C;
        acc_t* gz = grad_z + t * C;
        if (p.y < 0) {
          const scalar_t* src = h + t * C;
          for (int64_t c = 0; c < C; ++c)
            gz[c] = s.skip_prefix ? acc_t(0)
                                  : static_cast<acc_t>(g[c]) * activate_grad<Act>(activate<Pre>(static_cast<acc_t>(src[c])));
          continue;
        }
        conv_at<Pre>(s, p, h, taps, bias, z.data());
        for (int64_t c = 0; c < C; ++c) gz[c] = static_cast<acc_t>(g[c]) * activate_grad<Act>(z[c]);
        for_each_tap(s, p, 1, [&](int k, int64_t neighbour) {
          const scalar_t* src = h + neighbour * C;
          acc_t* dw = partial + k * C;
          for (int64_t c = 0; c < C; ++c) dw[c] += gz[c] * activate<Pre>(static_cast<acc_t>(src[c]));
        });
        acc_t* db = partial + 9 * C;
        for (int64_t c = 0; c < C; ++c) db[c] += gz[c];
      }
    }
  });
  at::parallel_for(0, total, kTokensPerTask, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t t = begin; t < end; ++t) {
      const auto p = locate(s, t);
      const scalar_t* src = h + t * C;
      scalar_t* dst = grad_h + t * C;
      if (p.y < 0) {
        for (int64_t c = 0; c < C; ++c) acc[c] = grad_z[t * C + c];
      } else {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        // The transposed conv: token (y, x) receives tap k from the token it fed, (y - dy, x - dx).
        for_each_tap(s, p, -1, [&](int k, int64_t neighbour) {
          const acc_t* gz = grad_z + neighbour * C;
          const acc_t* w = taps + k * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += w[c] * gz[c];
        });
      }
      for (int64_t c = 0; c < C; ++c)
        dst[c] = static_cast<scalar_t>(acc[c] * activate_grad<Pre>(static_cast<acc_t>(src[c])));
    }
  });
}

at::Tensor dwconv_act_cpu(const at::Tensor& h_in, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
                          std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h_in, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  const auto h = h_in.contiguous();
  auto out = at::empty_like(h, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto taps = taps_by_channel(weight, c10::CppTypeToScalarType<acc_t>::value);
    const auto bias_acc = bias ? bias->to(taps.scalar_type()).contiguous() : at::Tensor();
    dispatch_activations(s.pre_act, s.act, [&](auto pre, auto a) {
      forward_kernel<decltype(pre)::value, decltype(a)::value>(
          s, h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
          bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr, out.mutable_data_ptr<scalar_t>());
    });
  });
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
  at::Tensor grad_weight, grad_bias;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    const auto taps = taps_by_channel(weight, acc_dtype);
    const auto bias_acc = bias ? bias->to(acc_dtype).contiguous() : at::Tensor();
    const int64_t chunks = (s.batch * s.tokens + kTokensPerPartial - 1) / kTokensPerPartial;
    auto grad_z = at::empty(h.sizes(), h.options().dtype(acc_dtype));
    auto partials = at::empty({chunks, 10, s.channels}, h.options().dtype(acc_dtype));
    dispatch_activations(s.pre_act, s.act, [&](auto pre, auto a) {
      backward_kernel<decltype(pre)::value, decltype(a)::value>(
          s, grad.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
          bias_acc.defined() ? bias_acc.const_data_ptr<acc_t>() : nullptr, grad_z.mutable_data_ptr<acc_t>(),
          partials.mutable_data_ptr<acc_t>(), grad_h.mutable_data_ptr<scalar_t>());
    });
    // Sum the chunks in a fixed order, whatever the thread count.
    auto sums = at::empty({10, s.channels}, partials.options());
    const acc_t* src = partials.const_data_ptr<acc_t>();
    acc_t* dst = sums.mutable_data_ptr<acc_t>();
    at::parallel_for(0, 10 * s.channels, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        acc_t total = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) total += src[chunk * 10 * s.channels + i];
        dst[i] = total;
      }
    });
    grad_weight = sums.narrow(0, 0, 9).t().contiguous().reshape({s.channels, 1, 3, 3}).to(weight.scalar_type());
    grad_bias = sums.select(0, 9).to(weight.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  });
  return {grad_h, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CPU, m) {
  m.impl("dwconv_act", &dwconv_act_cpu);
  m.impl("dwconv_act_backward", &dwconv_act_backward_cpu);
}

}  // namespace effkernels
