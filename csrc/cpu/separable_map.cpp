// CPU entry point of effkernels::separable_map: checks, the per-call operator preparation (the
// reflection fold, the stacked width operators, centring's map of ones), and the choice of the
// per-plane loops compiled for this CPU's instruction set (csrc/cpu/separable_map_impl.h).
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../separable_map_centring.h"
#include "separable_map_kernels.h"

namespace effkernels {
namespace {

// ---------------------------------------------------------------------------------------------
// The folded path. An operator A (OL, L) that commutes with the DFT reflection, A[m, n] =
// A[-m mod OL, -n mod L] (the real part of the low-frequency crop does: A[-m, -n] = conj A[m, n]),
// maps reflection-even vectors to even ones and odd to odd. With x_e[n] = x[n] + x[-n] and
// x_o[n] = x[n] - x[-n] over the representatives n = 0..L/2 (even) and 1..(L-1)/2 (odd):
//   y_e[m] = (y[m] + y[-m]) / 2 = E x_e,  E[m, n] = A[m, n] (n = -n) or (A[m, n] + A[m, -n]) / 2
//   y_o[m] = (y[m] - y[-m]) / 2 = O x_o,  O[m, n] = (A[m, n] - A[m, -n]) / 2
// and y[m] = y_e + y_o, y[-m] = y_e - y_o. In 2-D the plane splits into four quadrants, each mapped
// by half-size operators on both sides: half the multiply-adds of the plain two GEMMs.
// ---------------------------------------------------------------------------------------------

// Whether A (contiguous) commutes with the DFT reflection to within a few ulps of its largest entry.
template <typename acc_t>
bool commutes_with_reflection(const at::Tensor& a) {
  const auto* d = static_cast<const acc_t*>(a.data_ptr());
  const int64_t rows = a.size(0), cols = a.size(1);
  acc_t largest = 0, deviation = 0;
  for (int64_t m = 0; m < rows; ++m) {
    const acc_t* row = d + m * cols;
    const acc_t* mirror = d + (m == 0 ? 0 : rows - m) * cols;
    largest = std::max(largest, std::abs(row[0]));
    deviation = std::max(deviation, std::abs(row[0] - mirror[0]));
    for (int64_t n = 1; n < cols; ++n) {
      largest = std::max(largest, std::abs(row[n]));
      deviation = std::max(deviation, std::abs(row[n] - mirror[cols - n]));
    }
  }
  const acc_t ulps = std::is_same<acc_t, double>::value ? acc_t(1e-14) : acc_t(4e-7);
  return deviation <= ulps * largest;
}

// E and O of a contiguous operator A (see above), built with plain loops: no per-call ATen graph.
template <typename acc_t>
FoldedAxis fold_axis(const at::Tensor& a) {
  const int64_t out_len = a.size(0), len = a.size(1);
  FoldedAxis f{reflection_even(out_len), reflection_odd(out_len), reflection_even(len), reflection_odd(len), {}, {}};
  f.even = at::empty({f.out_even, f.in_even}, a.options());
  f.odd = at::empty({f.out_odd, f.in_odd}, a.options());
  const auto* d = static_cast<const acc_t*>(a.data_ptr());
  auto* even = static_cast<acc_t*>(f.even.data_ptr());
  auto* odd = static_cast<acc_t*>(f.odd.data_ptr());
  for (int64_t m = 0; m < f.out_even; ++m) {
    const acc_t* row = d + m * len;
    acc_t* e = even + m * f.in_even;
    e[0] = row[0];
    for (int64_t n = 1; n <= f.in_odd; ++n) e[n] = acc_t(0.5) * (row[n] + row[len - n]);
    if (len % 2 == 0) e[len / 2] = row[len / 2];
  }
  for (int64_t i = 0; i < f.out_odd; ++i) {
    const acc_t* row = d + (i + 1) * len;
    for (int64_t q = 0; q < f.in_odd; ++q) odd[i * f.in_odd + q] = acc_t(0.5) * (row[q + 1] - row[len - q - 1]);
  }
  return f;
}

at::Tensor separable_map_cpu(
    const at::Tensor& x,
    const at::Tensor& rows,
    const at::Tensor& cols,
    const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift,
    std::optional<at::ScalarType> out_dtype,
    const std::optional<at::Tensor>& row_u,
    const std::optional<at::Tensor>& row_v,
    const std::optional<at::Tensor>& col_u,
    const std::optional<at::Tensor>& col_v) {
  const auto s = check_separable_map(x, rows, cols, scale, shift, out_dtype);
  const bool has_rank_one = check_rank_one(x, s, row_u, row_v, col_u, col_v);
  const auto acc_dtype = rows.scalar_type();
  auto out = at::empty({s.n, s.c, s.oh, s.ow}, x.options().dtype(out_dtype.value_or(default_out_dtype(x, rows))));
  if (out.numel() == 0) return out;
  const at::AutoDispatchBelowADInplaceOrView below_autograd;

  const auto scale_acc = scale.has_value() ? scale->contiguous() : at::Tensor();
  const auto shift_acc = shift.has_value() ? shift->contiguous() : at::Tensor();
  at::Tensor ru, rv, cu, cv;
  RankOne rank_one{};
  if (has_rank_one) {
    ru = row_u->contiguous(), rv = row_v->contiguous(), cu = col_u->contiguous();
    cv = col_v->contiguous();
    rank_one = RankOne{ru.data_ptr(), rv.data_ptr(), cu.data_ptr(), cv.data_ptr(), ru.size(0) == 1 ? 0 : s.oh,
                       rv.size(0) == 1 ? 0 : s.h, cu.size(0) == 1 ? 0 : s.ow, cv.size(0) == 1 ? 0 : s.w};
  }
  // Shared single-term operators that commute with the DFT reflection (lowfreq_crop without a
  // resize) take the folded path: half the multiply-adds.
  PlaneOperators ops{s.k == 1 && rows.size(0) == 1 && cols.size(0) == 1 && std::min({s.h, s.w, s.oh, s.ow}) >= 3,
                     {}, {}, {}, {}, s.k * s.ow + (has_rank_one ? 1 : 0)};
  if (ops.folded) {
    const auto row_op = rows[0][0].contiguous(), col_op = cols[0][0].contiguous();
    AT_DISPATCH_FLOATING_TYPES(acc_dtype, "separable_map_fold", [&] {
      ops.folded = commutes_with_reflection<scalar_t>(row_op) && commutes_with_reflection<scalar_t>(col_op);
      if (ops.folded) ops.fh = fold_axis<scalar_t>(row_op), ops.fw = fold_axis<scalar_t>(col_op);
    });
  }
  // Otherwise: the width operators of all K terms, plus col_v, stacked once per call: (n', K*OW [+1], W).
  if (!ops.folded) {
    auto cols_stacked = cols.reshape({cols.size(0), s.k * s.ow, s.w});
    if (has_rank_one) {
      const int64_t batch = std::max(cols.size(0), col_v->size(0));
      cols_stacked = at::cat({cols_stacked.expand({batch, -1, -1}), col_v->unsqueeze(1).expand({batch, 1, -1})}, 1);
    }
    for (int64_t i = 0; i < cols_stacked.size(0); ++i) ops.cols_t.push_back(cols_stacked[i].t());
    for (int64_t i = 0; i < rows.size(0); ++i) {
      for (int64_t k = 0; k < s.k; ++k) ops.row_ops.push_back(rows[i][k]);
    }
  }

  // Centring (see Centring): float32 accumulation, a shift, float32 output.
  const bool centred = centres_output(rows, shift, out.scalar_type());
  const auto ones = centred ? ones_map(rows, cols, has_rank_one, row_u, row_v, col_u, col_v) : at::Tensor();
  const Centring centring{centred ? ones.data_ptr<double>() : nullptr, centred && ones.size(0) > 1 ? s.oh * s.ow : 0};

  const RankOne* r1 = has_rank_one ? &rank_one : nullptr;
  const Centring* centre = centred ? &centring : nullptr;
#ifdef EFFKERNELS_CPU_AVX2
  if (use_avx2()) {
    cpu_avx2::separable_map_planes(x, ops, r1, centre, scale_acc, shift_acc, out, s);
    return out;
  }
#endif
  cpu_baseline::separable_map_planes(x, ops, r1, centre, scale_acc, shift_acc, out, s);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CPU, m) {
  m.impl("separable_map", &separable_map_cpu);
}

}  // namespace effkernels
