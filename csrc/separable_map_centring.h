// Centring of separable_map's float32 output with a shift (normalisation), shared by the CPU and
// CUDA C++ kernels: the output is then much smaller than the GEMMs' float32 sums (a plane near its
// channel mean), and their rounding error, relative to the sums, reached 3e-5 of the output. Each
// plane is mapped as x - c (c its mean, an integer for uint8 x so that x - c stays exact), and the
// epilogue adds back scale * c * S + shift in double, S = the map of a plane of ones: the same map,
// with sums the size of the plane's deviation.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace effkernels {

// Whether a call centres: float32 accumulation (operators), a shift, float32 output.
inline bool centres_output(const at::Tensor& rows, const std::optional<at::Tensor>& shift, at::ScalarType out) {
  return rows.scalar_type() == at::kFloat && shift.has_value() && out == at::kFloat;
}

// S per sample (n', OH, OW) in double, n' = 1 when every operator and factor is shared:
// sum_k rowsums_k (x) colsums_k, plus (sum row_v)(sum col_v) row_u (x) col_u with the rank-one term.
inline at::Tensor ones_map(const at::Tensor& rows, const at::Tensor& cols, bool has_rank_one,
                           const std::optional<at::Tensor>& row_u, const std::optional<at::Tensor>& row_v,
                           const std::optional<at::Tensor>& col_u, const std::optional<at::Tensor>& col_v) {
  const auto row_sums = rows.to(at::kDouble).sum(-1), col_sums = cols.to(at::kDouble).sum(-1);  // (n', K, OH/OW)
  auto ones = (row_sums.unsqueeze(-1) * col_sums.unsqueeze(-2)).sum(1);
  if (has_rank_one) {
    const auto weight = row_v->to(at::kDouble).sum(-1) * col_v->to(at::kDouble).sum(-1);  // (n',)
    ones = ones + weight.view({-1, 1, 1}) * row_u->to(at::kDouble).unsqueeze(-1) * col_u->to(at::kDouble).unsqueeze(-2);
  }
  return ones.contiguous();
}

// Each (n, c) plane's centre, (N, C) double: its mean, rounded for integer x.
inline at::Tensor plane_centres(const at::Tensor& x) {
  const auto means = x.mean({2, 3}, false, at::kDouble);
  return (at::isFloatingType(x.scalar_type()) ? means : means.round()).contiguous();
}

}  // namespace effkernels
