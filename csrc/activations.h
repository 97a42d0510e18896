// The elementwise activations of the LocalFFN kernels and their derivatives, for CPU and CUDA code.
// Formulas and boundary conventions follow torch's own (hardswish_backward, gelu_backward, ...), so
// the fused kernels and the eager reference agree to rounding.
#pragma once
#include <c10/macros/Macros.h>
#include "check_message.h"
#include <cmath>
#include <type_traits>

namespace effkernels {

enum class Activation { kIdentity, kReLU, kHardswish, kGELU, kGELUTanh };

namespace detail {
template <typename T>
C10_HOST_DEVICE inline T erf_(T x) {
#ifdef __CUDA_ARCH__
  return ::erf(x);
#else
  return std::erf(x);
#endif
}
template <typename T>
C10_HOST_DEVICE inline T exp_(T x) {
#ifdef __CUDA_ARCH__
  return ::exp(x);
#else
  return std::exp(x);
#endif
}
template <typename T>
C10_HOST_DEVICE inline T tanh_(T x) {
#ifdef __CUDA_ARCH__
  return ::tanh(x);
#else
  return std::tanh(x);
#endif
}
constexpr double kSqrtHalf = 0.70710678118654752440;       // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;     // 1 / sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;    // sqrt(2 / pi)
constexpr double kGeluTanhCubic = 0.044715;
}  // namespace detail

template <Activation A, typename T>
C10_HOST_DEVICE inline T activate(T z) {
  if constexpr (A == Activation::kIdentity) {
    return z;
  } else if constexpr (A == Activation::kReLU) {
    return z > T(0) ? z : T(0);
  } else if constexpr (A == Activation::kHardswish) {
    const T gate = z + T(3) < T(0) ? T(0) : (z + T(3) > T(6) ? T(6) : z + T(3));
    return z * gate / T(6);
  } else if constexpr (A == Activation::kGELU) {
    return T(0.5) * z * (T(1) + detail::erf_(z * T(detail::kSqrtHalf)));
  } else {
    const T inner = T(detail::kSqrt2OverPi) * (z + T(detail::kGeluTanhCubic) * z * z * z);
    return T(0.5) * z * (T(1) + detail::tanh_(inner));
  }
}

// d activate(z) / dz.
template <Activation A, typename T>
C10_HOST_DEVICE inline T activate_grad(T z) {
  if constexpr (A == Activation::kIdentity) {
    return T(1);
  } else if constexpr (A == Activation::kReLU) {
    return z > T(0) ? T(1) : T(0);
  } else if constexpr (A == Activation::kHardswish) {
    return z < T(-3) ? T(0) : (z <= T(3) ? z / T(3) + T(0.5) : T(1));
  } else if constexpr (A == Activation::kGELU) {
    const T cdf = T(0.5) * (T(1) + detail::erf_(z * T(detail::kSqrtHalf)));
    const T pdf = T(detail::kInvSqrt2Pi) * detail::exp_(T(-0.5) * z * z);
    return cdf + z * pdf;
  } else {
    const T inner = T(detail::kSqrt2OverPi) * (z + T(detail::kGeluTanhCubic) * z * z * z);
    const T t = detail::tanh_(inner);
    const T d_inner = T(detail::kSqrt2OverPi) * (T(1) + T(3 * detail::kGeluTanhCubic) * z * z);
    return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * d_inner;
  }
}

// Calls f(pre, act) with std::integral_constant tags for the runtime (pre_act, act) pair, so kernels
// are templated on both activations and keep their inner loops branch-free. pre_act is one of
// identity, ReLU and h-swish; act is any activation but identity.
template <typename F>
void dispatch_activations(Activation pre_act, Activation act, F&& f) {
  using A = Activation;
  auto with_act = [&](auto pre) {
    switch (act) {
      case A::kReLU: return f(pre, std::integral_constant<A, A::kReLU>{});
      case A::kHardswish: return f(pre, std::integral_constant<A, A::kHardswish>{});
      case A::kGELU: return f(pre, std::integral_constant<A, A::kGELU>{});
      case A::kGELUTanh: return f(pre, std::integral_constant<A, A::kGELUTanh>{});
      default: EFFKERNELS_CHECK(false, "unsupported act");
    }
  };
  switch (pre_act) {
    case A::kIdentity: return with_act(std::integral_constant<A, A::kIdentity>{});
    case A::kReLU: return with_act(std::integral_constant<A, A::kReLU>{});
    case A::kHardswish: return with_act(std::integral_constant<A, A::kHardswish>{});
    default: EFFKERNELS_CHECK(false, "unsupported pre_act");
  }
}

}  // namespace effkernels
