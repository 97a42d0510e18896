// Entry points of the dwconv_act CPU kernels, one set per instruction set (dwconv_act_impl.h).
// taps: (9, C) and bias: (C,) or undefined, in the accumulation dtype; partials: (B, 10, C) per-sample
// weight (taps 0..8) and bias grads.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../dwconv_act_checks.h"
#include "cpu_isa.h"

#define EFFKERNELS_DECLARE_DWCONV_ACT_CPU_KERNELS(isa)                                                  \
  namespace effkernels::isa {                                                                          \
  void dwconv_act_forward(const DwconvActShape& s, const at::Tensor& h, const at::Tensor& taps,       \
                          const at::Tensor& bias, const at::Tensor& out);                              \
  void dwconv_act_backward(const DwconvActShape& s, const at::Tensor& grad, const at::Tensor& h,      \
                           const at::Tensor& taps, const at::Tensor& bias, const at::Tensor& partials, \
                           const at::Tensor& grad_h);                                                  \
  }

EFFKERNELS_DECLARE_DWCONV_ACT_CPU_KERNELS(cpu_baseline)
#ifdef EFFKERNELS_CPU_AVX2
EFFKERNELS_DECLARE_DWCONV_ACT_CPU_KERNELS(cpu_avx2)
#endif
