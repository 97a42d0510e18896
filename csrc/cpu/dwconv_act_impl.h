// The CPU kernels of dwconv_act, compiled once per instruction set: each including file defines
// EFFKERNELS_CPU_ISA (the namespace the entry points land in) and the target options before it.
//
// A task owns one sample and one block of kBlock channels and sweeps the grid row by row, keeping the
// last three rows of pre_act(h) (and, backward, of grad_z) in rolling buffers with a zero border, so
// every 3x3 tap is in range and needs no test. pre_act runs once per element; for each group of
// kLanes channels the 9 weights, the conv sum and (backward) the 9 weight-grad sums stay in vector
// registers along a row. The backward is one sweep: grad_z of row y, then grad_h of row y - 1 from
// grad_z rows y - 2 .. y, with no full-size intermediate. Weight and bias grads are summed per
// sample (the caller sums the samples in a fixed order), so they do not depend on the thread count.
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dwconv_act_kernels.h"

namespace effkernels::EFFKERNELS_CPU_ISA {
namespace {

constexpr int64_t kBlock = 128;  // channels per task
constexpr int64_t kLanes = 8;   // channels per register group (one AVX2 vector of float)
constexpr int kTaps = 9;

// kLanes values of T as one compiler vector: one AVX2 register of float in the AVX2 build, two SSE
// registers in the baseline one. Loads and stores go through memcpy: no alignment is assumed.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(kLanes * sizeof(T))));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T, typename V>
inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// The first `lanes` values at p, converted to acc_t; the other lanes are zero.
template <typename acc_t, typename scalar_t>
inline Vec<acc_t> load_lanes(const scalar_t* p, int64_t lanes) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (lanes == kLanes) return load<Vec<acc_t>>(p);
  }
  Vec<acc_t> v = {};
  for (int64_t j = 0; j < lanes; ++j) v[j] = static_cast<acc_t>(p[j]);
  return v;
}

template <typename scalar_t, typename V>
inline void store_lanes(scalar_t* p, const V& v, int64_t lanes) {
  if constexpr (std::is_same_v<scalar_t, std::decay_t<decltype(v[0])>>) {
    if (lanes == kLanes) return store(p, v);
  }
  for (int64_t j = 0; j < lanes; ++j) p[j] = static_cast<scalar_t>(v[j]);
}

// exp on float lanes (Cephes expf: range reduction by ln 2, degree-6 polynomial, 2^n by exponent bits).
inline Vec<float> exp_lanes(Vec<float> x) {
  typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t))));
  const Vec<float> zero = {};
  x = x < zero - 87.3f ? zero - 87.3f : x;
  x = x > zero + 88.3f ? zero + 88.3f : x;
  const Vec<float> scaled = x * 1.44269504088896341f;
  const IntVec n = __builtin_convertvector(scaled + (scaled < zero ? zero - 0.5f : zero + 0.5f), IntVec);
  const Vec<float> nf = __builtin_convertvector(n, Vec<float>);
  const Vec<float> r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  Vec<float> p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vec<float> y = p * r * r + r + 1.0f;
  const IntVec exponent = (n + 127) << 23;
  Vec<float> pow2n;
  std::memcpy(&pow2n, &exponent, sizeof pow2n);
  return y * pow2n;
}

// (erf(z / sqrt 2), exp(-z^2 / 2)) on float lanes: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7),
// the approximation torch's own vectorised CPU erf uses; both GELU and its derivative need the exp.
inline std::pair<Vec<float>, Vec<float>> erf_and_gauss_lanes(Vec<float> z) {
  const Vec<float> zero = {};
  const Vec<float> x = z * 0.70710678118654752f;
  const Vec<float> ax = x < zero ? -x : x;
  const Vec<float> t = 1.0f / (1.0f + 0.3275911f * ax);
  Vec<float> poly = zero + 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  const Vec<float> gauss = exp_lanes(-0.5f * z * z);
  const Vec<float> erf_abs = 1.0f - poly * t * gauss;
  return {x < zero ? -erf_abs : erf_abs, gauss};
}

// tanh on float lanes, through exp(-2|u|) so it cannot overflow.
inline Vec<float> tanh_lanes(Vec<float> u) {
  const Vec<float> zero = {};
  const Vec<float> e = exp_lanes(-2.0f * (u < zero ? -u : u));
  const Vec<float> t = (1.0f - e) / (1.0f + e);
  return u < zero ? -t : t;
}

// activate / activate_grad (csrc/activations.h) on every lane; the piecewise ones as vector selects.
template <Activation A, typename V>
inline V activate_lanes(V z) {
  const V zero = {};
  if constexpr (A == Activation::kIdentity) {
    return z;
  } else if constexpr (A == Activation::kReLU) {
    return z > zero ? z : zero;
  } else if constexpr (A == Activation::kHardswish) {
    V gate = z + 3;
    gate = gate < zero ? zero : gate;
    gate = gate > zero + 6 ? zero + 6 : gate;
    return z * gate * static_cast<decltype(z[0] + 0)>(1.0 / 6);  // a multiply: vdivps is slow
  } else if constexpr (std::is_same_v<V, Vec<float>> && A == Activation::kGELU) {
    return 0.5f * z * (1.0f + erf_and_gauss_lanes(z).first);
  } else if constexpr (std::is_same_v<V, Vec<float>> && A == Activation::kGELUTanh) {
    return 0.5f * z * (1.0f + tanh_lanes(0.7978845608028654f * (z + 0.044715f * z * z * z)));
  } else {
    for (int64_t j = 0; j < kLanes; ++j) z[j] = activate<A>(z[j]);
    return z;
  }
}

template <Activation A, typename V>
inline V activate_grad_lanes(V z) {
  const V zero = {};
  if constexpr (A == Activation::kIdentity) {
    return zero + 1;
  } else if constexpr (A == Activation::kReLU) {
    return z > zero ? zero + 1 : zero;
  } else if constexpr (A == Activation::kHardswish) {
    return z < zero - 3 ? zero : (z <= zero + 3 ? z * static_cast<decltype(z[0] + 0)>(1.0 / 3) + 0.5 : zero + 1);
  } else if constexpr (std::is_same_v<V, Vec<float>> && A == Activation::kGELU) {
    const auto [erf, gauss] = erf_and_gauss_lanes(z);
    return 0.5f * (1.0f + erf) + z * 0.3989422804014327f * gauss;
  } else if constexpr (std::is_same_v<V, Vec<float>> && A == Activation::kGELUTanh) {
    const V t = tanh_lanes(0.7978845608028654f * (z + 0.044715f * z * z * z));
    return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 0.134145f * z * z);
  } else {
    for (int64_t j = 0; j < kLanes; ++j) z[j] = activate_grad<A>(z[j]);
    return z;
  }
}

template <typename scalar_t>
struct Sweep {
  using acc_t = at::opmath_type<scalar_t>;
  const DwconvActShape& s;
  int64_t sample, c0, width;  // channels [c0, c0 + width) of one sample
  acc_t taps[kTaps][kBlock] = {};  // this block's weights, zero-padded to kBlock channels
  acc_t bias[kBlock] = {};

  Sweep(const DwconvActShape& shape, int64_t sample_, int64_t c0_, const acc_t* all_taps, const acc_t* all_bias)
      : s(shape), sample(sample_), c0(c0_), width(std::min(kBlock, shape.channels - c0_)) {
    for (int k = 0; k < kTaps; ++k)
      for (int64_t c = 0; c < width; ++c) taps[k][c] = all_taps[k * s.channels + c0 + c];
    for (int64_t c = 0; c < width && all_bias; ++c) bias[c] = all_bias[c0 + c];
  }

  // The 9 tap weights of lanes [l0, l0 + kLanes), as vectors.
  std::array<Vec<acc_t>, kTaps> weights(int64_t l0) const {
    std::array<Vec<acc_t>, kTaps> w;
    for (int k = 0; k < kTaps; ++k) w[k] = load<Vec<acc_t>>(taps[k] + l0);
    return w;
  }
  int64_t offset(int64_t token) const { return token * s.channels + c0; }
  int64_t grid_offset(int64_t y, int64_t x) const {
    return offset(sample * s.tokens + s.prefix_tokens + y * s.width + x);
  }
  // A rolling buffer holds 3 grid rows of (W + 2) columns (a zero column each side) of kBlock values.
  std::vector<acc_t> rolling_buffer() const { return std::vector<acc_t>(3 * (s.width + 2) * kBlock, acc_t(0)); }
  // Grid row y's slot (y may be -1 or H), pointing at its column x = 0.
  acc_t* row(std::vector<acc_t>& buffer, int64_t y) const {
    return buffer.data() + ((y + 3) % 3) * (s.width + 2) * kBlock + kBlock;
  }
  void zero_row(std::vector<acc_t>& buffer, int64_t y) const {
    std::fill(row(buffer, y), row(buffer, y) + s.width * kBlock, acc_t(0));
  }
  // buffer row y = pre_act(h row y); a zero row outside the grid.
  template <Activation Pre>
  void load_row(const scalar_t* h, std::vector<acc_t>& buffer, int64_t y) const {
    if (y >= s.height) return zero_row(buffer, y);
    acc_t* dst = row(buffer, y);
    for (int64_t x = 0; x < s.width; ++x) {
      const scalar_t* src = h + grid_offset(y, x);
      for (int64_t c = 0; c < width; ++c) dst[x * kBlock + c] = activate<Pre>(static_cast<acc_t>(src[c]));
    }
  }
  // The 9 neighbours of column x, lanes [l0, l0 + kLanes), in tap order; dir = -1 mirrors the taps
  // (the transposed conv). `rows` are the buffer rows y - 1, y, y + 1.
  void neighbours(acc_t* const rows[3], int64_t x, int64_t l0, int dir, const acc_t* out[kTaps]) const {
    for (int k = 0; k < kTaps; ++k) {
      const int dy = k / 3 - 1, dx = k % 3 - 1;
      out[k] = rows[1 + dir * dy] + (x + dir * dx) * kBlock + l0;
    }
  }
};

// Calls task(sample, c0) for every (sample, channel block), in parallel.
template <typename F>
void for_each_task(const DwconvActShape& s, F&& task) {
  const int64_t blocks = (s.channels + kBlock - 1) / kBlock;
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) task(i / blocks, (i % blocks) * kBlock);
  });
}

template <Activation Pre, Activation Act, typename scalar_t>
void forward_kernel(const DwconvActShape& s, const scalar_t* h, const at::opmath_type<scalar_t>* taps,
                    const at::opmath_type<scalar_t>* bias, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<acc_t>;
  for_each_task(s, [&](int64_t sample, int64_t c0) {
    const Sweep<scalar_t> sweep(s, sample, c0, taps, bias);
    const int64_t width = sweep.width;
    for (int64_t n = 0; n < s.prefix_tokens; ++n) {  // prefix tokens: no conv
      const int64_t at = sweep.offset(sample * s.tokens + n);
      for (int64_t c = 0; c < width; ++c)
        out[at + c] = s.skip_prefix ? scalar_t(0)
                                    : static_cast<scalar_t>(activate<Act>(activate<Pre>(static_cast<acc_t>(h[at + c]))));
    }
    auto p = sweep.rolling_buffer();
    sweep.template load_row<Pre>(h, p, 0);
    for (int64_t y = 0; y < s.height; ++y) {
      sweep.template load_row<Pre>(h, p, y + 1);
      acc_t* const rows[3] = {sweep.row(p, y - 1), sweep.row(p, y), sweep.row(p, y + 1)};
      for (int64_t l0 = 0; l0 < width; l0 += kLanes) {
        const int64_t lanes = std::min(kLanes, width - l0);
        const auto w = sweep.weights(l0);
        for (int64_t x = 0; x < s.width; ++x) {
          const acc_t* nb[kTaps];
          sweep.neighbours(rows, x, l0, 1, nb);
          V z = load<V>(sweep.bias + l0);
          for (int k = 0; k < kTaps; ++k) z += w[k] * load<V>(nb[k]);
          store_lanes(out + sweep.grid_offset(y, x) + l0, activate_lanes<Act>(z), lanes);
        }
      }
    }
  });
}

// grad_z = grad * act'(z) (prefix tokens: grad * act'(pre_act(h))); grad_h = pre_act'(h) * conv^T(grad_z);
// partials[sample] = the sample's (weight grad by tap, bias grad), (10, C).
template <Activation Pre, Activation Act, typename scalar_t>
void backward_kernel(const DwconvActShape& s, const scalar_t* grad, const scalar_t* h,
                     const at::opmath_type<scalar_t>* taps, const at::opmath_type<scalar_t>* bias,
                     at::opmath_type<scalar_t>* partials, scalar_t* grad_h) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<acc_t>;
  for_each_task(s, [&](int64_t sample, int64_t c0) {
    const Sweep<scalar_t> sweep(s, sample, c0, taps, bias);
    const int64_t width = sweep.width;
    for (int64_t n = 0; n < s.prefix_tokens; ++n) {
      const int64_t at = sweep.offset(sample * s.tokens + n);
      for (int64_t c = 0; c < width; ++c) {
        const acc_t hv = static_cast<acc_t>(h[at + c]);
        const acc_t gz = s.skip_prefix ? acc_t(0) : static_cast<acc_t>(grad[at + c]) * activate_grad<Act>(activate<Pre>(hv));
        grad_h[at + c] = static_cast<scalar_t>(gz * activate_grad<Pre>(hv));
      }
    }
    acc_t sums[kTaps + 1][kBlock] = {};  // weight grad by tap, then the bias grad
    auto p = sweep.rolling_buffer();
    auto gz = sweep.rolling_buffer();

    // grad_h of grid row y from grad_z rows y - 1 .. y + 1.
    auto grad_h_row = [&](int64_t y) {
      acc_t* const rows[3] = {sweep.row(gz, y - 1), sweep.row(gz, y), sweep.row(gz, y + 1)};
      for (int64_t l0 = 0; l0 < width; l0 += kLanes) {
        const int64_t lanes = std::min(kLanes, width - l0);
        const auto w = sweep.weights(l0);
        for (int64_t x = 0; x < s.width; ++x) {
          const acc_t* nb[kTaps];
          sweep.neighbours(rows, x, l0, -1, nb);
          V g = {};
          for (int k = 0; k < kTaps; ++k) g += w[k] * load<V>(nb[k]);
          const int64_t at = sweep.grid_offset(y, x) + l0;
          if constexpr (Pre != Activation::kIdentity) g *= activate_grad_lanes<Pre>(load_lanes<acc_t>(h + at, lanes));
          store_lanes(grad_h + at, g, lanes);
        }
      }
    };
    sweep.template load_row<Pre>(h, p, 0);
    for (int64_t y = 0; y < s.height; ++y) {
      sweep.template load_row<Pre>(h, p, y + 1);
      acc_t* const rows[3] = {sweep.row(p, y - 1), sweep.row(p, y), sweep.row(p, y + 1)};
      acc_t* gz_row = sweep.row(gz, y);
      for (int64_t l0 = 0; l0 < width; l0 += kLanes) {
        const int64_t lanes = std::min(kLanes, width - l0);
        const auto w = sweep.weights(l0);
        V row_sums[kTaps + 1] = {};
        for (int64_t x = 0; x < s.width; ++x) {
          const acc_t* nb[kTaps];
          sweep.neighbours(rows, x, l0, 1, nb);
          V z = load<V>(sweep.bias + l0);
          for (int k = 0; k < kTaps; ++k) z += w[k] * load<V>(nb[k]);
          const V g = load_lanes<acc_t>(grad + sweep.grid_offset(y, x) + l0, lanes) * activate_grad_lanes<Act>(z);
          store(gz_row + x * kBlock + l0, g);
          for (int k = 0; k < kTaps; ++k) row_sums[k] += g * load<V>(nb[k]);
          row_sums[kTaps] += g;
        }
        for (int k = 0; k <= kTaps; ++k) store(sums[k] + l0, load<V>(sums[k] + l0) + row_sums[k]);
      }
      if (y >= 1) grad_h_row(y - 1);
    }
    sweep.zero_row(gz, s.height);
    grad_h_row(s.height - 1);
    acc_t* partial = partials + sample * (kTaps + 1) * s.channels + c0;
    for (int k = 0; k <= kTaps; ++k) std::copy(sums[k], sums[k] + width, partial + k * s.channels);
  });
}

}  // namespace

void dwconv_act_forward(const DwconvActShape& s, const at::Tensor& h, const at::Tensor& taps,
                        const at::Tensor& bias, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_activations(s.pre_act, s.act, [&](auto pre, auto act) {
      forward_kernel<decltype(pre)::value, decltype(act)::value>(
          s, h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
          bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr, out.mutable_data_ptr<scalar_t>());
    });
  });
}

void dwconv_act_backward(const DwconvActShape& s, const at::Tensor& grad, const at::Tensor& h,
                         const at::Tensor& taps, const at::Tensor& bias, const at::Tensor& partials,
                         const at::Tensor& grad_h) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dispatch_activations(s.pre_act, s.act, [&](auto pre, auto act) {
      backward_kernel<decltype(pre)::value, decltype(act)::value>(
          s, grad.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), taps.const_data_ptr<acc_t>(),
          bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr, partials.mutable_data_ptr<acc_t>(),
          grad_h.mutable_data_ptr<scalar_t>());
    });
  });
}

}  // namespace effkernels::EFFKERNELS_CPU_ISA
