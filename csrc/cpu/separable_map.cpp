// CPU kernel of effkernels::separable_map: per image plane one GEMM along the width (all K terms and
// the rank-one term's weight vector at once), K GEMMs along the height, and a fused epilogue.
//
// Per plane p = (n, c), with x_p converted once to the accumulation type:
//   P = x_p @ [cols_0; ...; cols_{K-1}; col_v]^T          (H, K*OW [+1]): one GEMM
//   R = sum_k rows_k @ P[:, k*OW:(k+1)*OW]                (OH, OW): K GEMMs, written in place
//   R += (row_v . P[:, K*OW]) * row_u col_u^T             the rank-one term, O(H + OH*OW)
//   out_p = cast(R * scale[c] + shift[c])
// The rank-one term costs one extra column in the first GEMM instead of a second GEMM chain. Buffers
// are allocated once per thread chunk; when out is of the accumulation type the second GEMM writes
// straight into out, and float x with unit width stride is read in place.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "../separable_map_checks.h"

namespace effkernels {
namespace {

// x_p (any strides) converted to a contiguous (H, W) plane of the accumulation type.
template <typename in_t, typename acc_t>
void load_plane(const in_t* src, int64_t sh, int64_t sw, int64_t h, int64_t w, acc_t* dst) {
  for (int64_t i = 0; i < h; ++i) {
    const in_t* row = src + i * sh;
    acc_t* out = dst + i * w;
    if (sw == 1) {
      for (int64_t j = 0; j < w; ++j) out[j] = static_cast<acc_t>(row[j]);
    } else {
      for (int64_t j = 0; j < w; ++j) out[j] = static_cast<acc_t>(row[j * sw]);
    }
  }
}

struct RankOne {
  const void *row_u, *row_v, *col_u;  // contiguous, batch stride 0 when shared
  int64_t row_u_sn, row_v_sn, col_u_sn;
};

template <typename in_t, typename acc_t>
void run_planes(const at::Tensor& x, const std::vector<at::Tensor>& cols_t, const std::vector<at::Tensor>& row_ops,
                const RankOne* rank_one, const acc_t* scale, const acc_t* shift, at::Tensor& out,
                const SeparableMapShape& s, int64_t width_terms) {
  const bool in_place_x = std::is_same<in_t, acc_t>::value && x.stride(3) == 1 && x.stride(2) >= s.w;
  const bool in_place_out = out.scalar_type() == c10::CppTypeToScalarType<acc_t>::value;
  const auto* x_data = static_cast<const in_t*>(x.data_ptr());
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const int64_t n_cols = static_cast<int64_t>(cols_t.size()), n_rows = static_cast<int64_t>(row_ops.size()) / s.k;

  at::parallel_for(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    // OpenMP workers do not inherit the caller's dispatch state: keep their ATen calls below autograd.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    auto plane = in_place_x ? at::Tensor() : at::empty({s.h, s.w}, opts);
    auto partial = at::empty({s.h, width_terms}, opts);
    auto result = in_place_out ? at::Tensor() : at::empty({s.oh, s.ow}, opts);
    std::vector<at::Tensor> partial_k;
    for (int64_t k = 0; k < s.k; ++k) partial_k.push_back(partial.narrow(1, k * s.ow, s.ow));
    const acc_t* p_data = static_cast<acc_t*>(partial.data_ptr());

    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / s.c, c = p % s.c;
      const in_t* src = x_data + n * sn + c * sc;
      at::Tensor x_plane;
      if (in_place_x) {
        x_plane = at::from_blob(const_cast<in_t*>(src), {s.h, s.w}, {sh, 1}, opts);
      } else {
        load_plane<in_t, acc_t>(src, sh, sw, s.h, s.w, static_cast<acc_t*>(plane.data_ptr()));
        x_plane = plane;
      }
      at::mm_out(partial, x_plane, cols_t[n_cols == 1 ? 0 : n]);

      at::Tensor r = in_place_out ? out.select(0, n).select(0, c) : result;
      const at::Tensor* rows_n = &row_ops[(n_rows == 1 ? 0 : n) * s.k];
      at::mm_out(r, rows_n[0], partial_k[0]);
      for (int64_t k = 1; k < s.k; ++k) r.addmm_(rows_n[k], partial_k[k]);

      // Epilogue: rank-one term, per-channel affine, cast.
      acc_t* r_data = static_cast<acc_t*>(r.data_ptr());
      const acc_t a = scale != nullptr ? scale[c] : acc_t(1);
      const acc_t b = shift != nullptr ? shift[c] : acc_t(0);
      const acc_t* row_u = nullptr;
      const acc_t* col_u = nullptr;
      acc_t weight = 0;
      if (rank_one != nullptr) {
        const auto* row_v = static_cast<const acc_t*>(rank_one->row_v) + n * rank_one->row_v_sn;
        for (int64_t i = 0; i < s.h; ++i) weight += row_v[i] * p_data[i * width_terms + s.k * s.ow];
        row_u = static_cast<const acc_t*>(rank_one->row_u) + n * rank_one->row_u_sn;
        col_u = static_cast<const acc_t*>(rank_one->col_u) + n * rank_one->col_u_sn;
      }
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "separable_map_epilogue", [&] {
        scalar_t* dst = static_cast<scalar_t*>(out.data_ptr()) + p * s.oh * s.ow;
        for (int64_t o = 0; o < s.oh; ++o) {
          const acc_t* r_row = r_data + o * s.ow;
          scalar_t* d_row = dst + o * s.ow;
          if (row_u != nullptr) {
            const acc_t wu = weight * row_u[o];
            for (int64_t v = 0; v < s.ow; ++v) d_row[v] = static_cast<scalar_t>((r_row[v] + wu * col_u[v]) * a + b);
          } else {
            for (int64_t v = 0; v < s.ow; ++v) d_row[v] = static_cast<scalar_t>(r_row[v] * a + b);
          }
        }
      });
    }
  });
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
  const auto s = check_separable_map(x, rows, cols, scale, shift);
  const bool has_rank_one = check_rank_one(x, s, row_u, row_v, col_u, col_v);
  const auto acc_dtype = rows.scalar_type();
  auto out = at::empty({s.n, s.c, s.oh, s.ow}, x.options().dtype(out_dtype.value_or(default_out_dtype(x, rows))));
  if (out.numel() == 0) return out;
  const at::AutoDispatchBelowADInplaceOrView below_autograd;

  // The width operators of all K terms, plus col_v, stacked once per call: (n', K*OW [+1], W).
  const int64_t width_terms = s.k * s.ow + (has_rank_one ? 1 : 0);
  auto cols_stacked = cols.reshape({cols.size(0), s.k * s.ow, s.w});
  if (has_rank_one) {
    const int64_t batch = std::max(cols.size(0), col_v->size(0));
    cols_stacked = at::cat({cols_stacked.expand({batch, -1, -1}), col_v->unsqueeze(1).expand({batch, 1, -1})}, 1);
  }
  std::vector<at::Tensor> cols_t;
  for (int64_t i = 0; i < cols_stacked.size(0); ++i) cols_t.push_back(cols_stacked[i].t());
  std::vector<at::Tensor> row_ops;
  for (int64_t i = 0; i < rows.size(0); ++i) {
    for (int64_t k = 0; k < s.k; ++k) row_ops.push_back(rows[i][k]);
  }
  const auto scale_acc = scale.has_value() ? scale->contiguous() : at::Tensor();
  const auto shift_acc = shift.has_value() ? shift->contiguous() : at::Tensor();
  at::Tensor ru, rv, cu;
  RankOne rank_one{};
  if (has_rank_one) {
    ru = row_u->contiguous(), rv = row_v->contiguous(), cu = col_u->contiguous();
    rank_one = RankOne{ru.data_ptr(), rv.data_ptr(), cu.data_ptr(), ru.size(0) == 1 ? 0 : s.oh,
                       rv.size(0) == 1 ? 0 : s.h, cu.size(0) == 1 ? 0 : s.ow};
  }

  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "separable_map_cpu", [&] {
    using acc_t = scalar_t;
    const acc_t* a = scale_acc.defined() ? static_cast<acc_t*>(scale_acc.data_ptr()) : nullptr;
    const acc_t* b = shift_acc.defined() ? static_cast<acc_t*>(shift_acc.data_ptr()) : nullptr;
    const RankOne* r1 = has_rank_one ? &rank_one : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, x.scalar_type(), "separable_map_cpu_x", [&] {
      run_planes<scalar_t, acc_t>(x, cols_t, row_ops, r1, a, b, out, s, width_terms);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CPU, m) {
  m.impl("separable_map", &separable_map_cpu);
}

}  // namespace effkernels
