// Shared by the CPU kernels of effkernels::separable_map (separable_map_impl.h, compiled once per
// instruction set) and their entry point (separable_map.cpp): what a call hands the per-plane loops.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <vector>

#include "../separable_map_checks.h"
#include "cpu_isa.h"

namespace effkernels {

struct RankOne {
  const void *row_u, *row_v, *col_u, *col_v;  // contiguous, batch stride 0 when shared
  int64_t row_u_sn, row_v_sn, col_u_sn, col_v_sn;
};

// Centring (csrc/separable_map_centring.h): the map of a plane of ones, computed once per call; each
// plane's centre is its mean, taken by the per-plane loops.
struct Centring {
  const double* ones;  // (n', OH, OW): S per sample, n' = 1 when every sample shares it
  int64_t ones_sn;     // 0 when shared

  const double* row(int64_t n, int64_t m, int64_t ow) const { return ones + n * ones_sn + m * ow; }
};

inline int64_t reflection_even(int64_t length) { return length / 2 + 1; }
inline int64_t reflection_odd(int64_t length) { return (length - 1) / 2; }

// An axis operator folded by the DFT reflection (see separable_map.cpp: the folded path).
struct FoldedAxis {
  int64_t out_even, out_odd, in_even, in_odd;
  at::Tensor even, odd;  // (out_even, in_even), (out_odd, in_odd), contiguous
};

// The operators of one call as the per-plane loops take them: the folded pair (folded), or the
// width operators of all K terms plus col_v, transposed per sample, and the K height operators per
// sample.
struct PlaneOperators {
  bool folded;
  FoldedAxis fh, fw;
  std::vector<at::Tensor> cols_t, row_ops;
  int64_t width_terms;
};

}  // namespace effkernels

#define EFFKERNELS_DECLARE_SEPARABLE_MAP_CPU_KERNELS(isa)                                                 \
  namespace effkernels::isa {                                                                          \
  void separable_map_planes(const at::Tensor& x, const PlaneOperators& ops, const RankOne* rank_one,   \
                            const Centring* centring, const at::Tensor& scale, const at::Tensor& shift, \
                            at::Tensor& out, const SeparableMapShape& s);                               \
  }

EFFKERNELS_DECLARE_SEPARABLE_MAP_CPU_KERNELS(cpu_baseline)
#ifdef EFFKERNELS_CPU_AVX2
EFFKERNELS_DECLARE_SEPARABLE_MAP_CPU_KERNELS(cpu_avx2)
#endif
