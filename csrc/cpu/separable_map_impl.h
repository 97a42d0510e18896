// The per-plane loops of separable_map's CPU kernel, compiled once per instruction set: each
// including file defines EFFKERNELS_CPU_ISA (the namespace the entry point lands in) and the target
// options before it. The GEMMs are ATen's; what is compiled here are the passes around them (the
// input's conversion, centring, the reflection fold and unfold, the epilogue), about half of the
// kernel's time at the training bands with the baseline instruction set.
//
// Per image plane p = (n, c), with x_p converted once to the accumulation type:
//   P = x_p @ [cols_0; ...; cols_{K-1}; col_v]^T          (H, K*OW [+1]): one GEMM
//   R = sum_k rows_k @ P[:, k*OW:(k+1)*OW]                (OH, OW): K GEMMs, written in place
//   R += (row_v . P[:, K*OW]) * row_u col_u^T             the rank-one term, O(H + OH*OW)
//   out_p = cast(R * scale[c] + shift[c])
// The rank-one term costs one extra column in the first GEMM instead of a second GEMM chain. Buffers
// are allocated once per thread chunk; when out is of the accumulation type the second GEMM writes
// straight into out, and float x with unit width stride is read in place. The folded path (shared
// single-term operators that commute with the DFT reflection) maps the plane's four reflection
// quadrants with half-size operators instead.
#include "separable_map_kernels.h"

namespace effkernels::EFFKERNELS_CPU_ISA {
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

// Subtract the plane's centre (its mean; rounded for integral inputs) in place; returns it. Any
// centre near the values keeps the sums small, so the mean is summed in 16 float lanes (vectorised).
template <typename acc_t>
double centre_plane(acc_t* plane, int64_t count, bool integral) {
  constexpr int64_t kLanes = 16;
  acc_t lanes[kLanes] = {};
  const int64_t body = count / kLanes * kLanes;
  for (int64_t i = 0; i < body; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] += plane[i + j];
  }
  double sum = 0;
  for (int64_t j = 0; j < kLanes; ++j) sum += lanes[j];
  for (int64_t i = body; i < count; ++i) sum += plane[i];
  double centre = sum / static_cast<double>(count);
  if (integral) centre = std::nearbyint(centre);
  const acc_t c = static_cast<acc_t>(centre);
  for (int64_t i = 0; i < count; ++i) plane[i] -= c;
  return static_cast<double>(c);
}

// Output index m of an axis as (even row, odd row or -1, sign of the odd part).
struct Unfold {
  int64_t even, odd, sign;
};

std::vector<Unfold> unfold_table(int64_t length) {
  std::vector<Unfold> table(length);
  for (int64_t m = 0; m < length; ++m) {
    const int64_t rep = m <= length / 2 ? m : length - m;
    const bool fixed = rep == 0 || 2 * rep == length;
    table[m] = Unfold{rep, fixed ? -1 : rep - 1, fixed ? 0 : (m == rep ? 1 : -1)};
  }
  return table;
}

// Rows of full width from their even and odd column parts: y[v] = e[v] + o[v - 1] and
// y[-v] = e[v] - o[v - 1] for the pair columns v = 1..odd, y[v] = e[v] at the fixed columns 0, OW/2.
template <typename acc_t>
void unfold_columns(const acc_t* even, const acc_t* odd, int64_t rows, int64_t width, int64_t odd_width, acc_t* dst) {
  const int64_t even_width = reflection_even(width);
  for (int64_t r = 0; r < rows; ++r) {
    const acc_t* e = even + r * even_width;
    const acc_t* o = odd + r * odd_width;
    acc_t* d = dst + r * width;
    d[0] = e[0];
    for (int64_t v = 1; v <= odd_width; ++v) d[v] = e[v] + o[v - 1];
    if (width % 2 == 0) d[width / 2] = e[width / 2];
    for (int64_t v = 1; v <= odd_width; ++v) d[width - v] = e[v] - o[v - 1];
  }
}

template <typename in_t, typename acc_t>
void run_planes_folded(const at::Tensor& x, const FoldedAxis& fh, const FoldedAxis& fw, const RankOne* rank_one,
                       const Centring* centring, const acc_t* scale, const acc_t* shift, at::Tensor& out,
                       const SeparableMapShape& s) {
  const auto* x_data = static_cast<const in_t*>(x.data_ptr());
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const auto rows_out = unfold_table(s.oh);
  const auto even_w_t = fw.even.t(), odd_w_t = fw.odd.t();

  at::parallel_for(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    auto plane = at::empty({s.h, s.w}, opts);
    // Quadrants stacked by input row parity: [x_ee; x_oe] (H, W_even), [x_eo; x_oo] (H, W_odd).
    auto fold_e = at::empty({s.h, fw.in_even}, opts), fold_o = at::empty({s.h, fw.in_odd}, opts);
    auto t_e = at::empty({s.h, fw.out_even}, opts), t_o = at::empty({s.h, fw.out_odd}, opts);
    auto y_ee = at::empty({fh.out_even, fw.out_even}, opts), y_eo = at::empty({fh.out_even, fw.out_odd}, opts);
    auto y_oe = at::empty({fh.out_odd, fw.out_even}, opts), y_oo = at::empty({fh.out_odd, fw.out_odd}, opts);
    const auto t_e_even = t_e.narrow(0, 0, fh.in_even), t_e_odd = t_e.narrow(0, fh.in_even, fh.in_odd);
    const auto t_o_even = t_o.narrow(0, 0, fh.in_even), t_o_odd = t_o.narrow(0, fh.in_even, fh.in_odd);
    acc_t* p = static_cast<acc_t*>(plane.data_ptr());
    acc_t* fe = static_cast<acc_t*>(fold_e.data_ptr());
    acc_t* fo = static_cast<acc_t*>(fold_o.data_ptr());
    std::vector<acc_t> row(s.w);
    std::vector<acc_t> wide(s.oh * s.ow);  // rows 0..OH_even-1: even rows, then odd rows, full width
    acc_t* wide_e = wide.data();
    acc_t* wide_o = wide.data() + fh.out_even * s.ow;

    for (int64_t pl = begin; pl < end; ++pl) {
      const int64_t n = pl / s.c, c = pl % s.c;
      load_plane<in_t, acc_t>(x_data + n * sn + pl % s.c * sc, sh, sw, s.h, s.w, p);
      const double centre = centring != nullptr ? centre_plane(p, s.h * s.w, !at::isFloatingType(x.scalar_type())) : 0;
      acc_t weight = 0;
      if (rank_one != nullptr) {  // row_v . x col_v as (row_v^T x) . col_v: vectorisable row updates
        const auto* rv = static_cast<const acc_t*>(rank_one->row_v) + n * rank_one->row_v_sn;
        const auto* cv = static_cast<const acc_t*>(rank_one->col_v) + n * rank_one->col_v_sn;
        std::fill(row.begin(), row.end(), acc_t(0));
        for (int64_t i = 0; i < s.h; ++i) {
          const acc_t r = rv[i];
          const acc_t* src = p + i * s.w;
          for (int64_t j = 0; j < s.w; ++j) row[j] += r * src[j];
        }
        for (int64_t j = 0; j < s.w; ++j) weight += row[j] * cv[j];
      }
      // Fold rows (x[i] +- x[-i]), then columns, into the two stacked buffers.
      for (int64_t r = 0; r < s.h; ++r) {
        const bool odd = r >= fh.in_even;
        const int64_t i = odd ? r - fh.in_even + 1 : r;
        const int64_t mirror = i == 0 ? 0 : s.h - i;
        const acc_t* a = p + i * s.w;
        const acc_t* b = p + mirror * s.w;
        if (odd) {
          for (int64_t j = 0; j < s.w; ++j) row[j] = a[j] - b[j];
        } else if (mirror == i) {
          for (int64_t j = 0; j < s.w; ++j) row[j] = a[j];
        } else {
          for (int64_t j = 0; j < s.w; ++j) row[j] = a[j] + b[j];
        }
        acc_t* e = fe + r * fw.in_even;
        acc_t* o = fo + r * fw.in_odd;
        e[0] = row[0];
        for (int64_t j = 1; j <= fw.in_odd; ++j) e[j] = row[j] + row[s.w - j];
        if (s.w % 2 == 0) e[s.w / 2] = row[s.w / 2];
        for (int64_t j = 0; j < fw.in_odd; ++j) o[j] = row[j + 1] - row[s.w - j - 1];
      }
      at::mm_out(t_e, fold_e, even_w_t);
      at::mm_out(t_o, fold_o, odd_w_t);
      at::mm_out(y_ee, fh.even, t_e_even);
      at::mm_out(y_eo, fh.even, t_o_even);
      at::mm_out(y_oe, fh.odd, t_e_odd);
      at::mm_out(y_oo, fh.odd, t_o_odd);

      // Unfold columns into full-width even and odd rows, then rows, with the rank-one term,
      // per-channel affine and cast.
      unfold_columns<acc_t>(static_cast<const acc_t*>(y_ee.data_ptr()), static_cast<const acc_t*>(y_eo.data_ptr()),
                            fh.out_even, s.ow, fw.out_odd, wide_e);
      unfold_columns<acc_t>(static_cast<const acc_t*>(y_oe.data_ptr()), static_cast<const acc_t*>(y_oo.data_ptr()),
                            fh.out_odd, s.ow, fw.out_odd, wide_o);
      const acc_t sa = scale != nullptr ? scale[c] : acc_t(1);
      const acc_t sb = shift != nullptr ? shift[c] : acc_t(0);
      const acc_t* row_u = rank_one != nullptr ? static_cast<const acc_t*>(rank_one->row_u) + n * rank_one->row_u_sn : nullptr;
      const acc_t* col_u = rank_one != nullptr ? static_cast<const acc_t*>(rank_one->col_u) + n * rank_one->col_u_sn : nullptr;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "separable_map_unfold", [&] {
        scalar_t* dst = static_cast<scalar_t*>(out.data_ptr()) + pl * s.oh * s.ow;
        for (int64_t m = 0; m < s.oh; ++m) {
          const Unfold rm = rows_out[m];
          const acc_t* e = wide_e + rm.even * s.ow;
          // A fixed row has no odd part: it reads the even row twice, with sign 0.
          const acc_t* o = rm.sign != 0 ? wide_o + rm.odd * s.ow : e;
          const acc_t sign = static_cast<acc_t>(rm.sign);
          const acc_t wu = row_u != nullptr ? weight * row_u[m] : acc_t(0);
          scalar_t* d = dst + m * s.ow;
          if (centring != nullptr) {
            const double* ones = centring->row(n, m, s.ow);
            const double gain = static_cast<double>(sa) * centre, base = sb;
            for (int64_t v = 0; v < s.ow; ++v) {
              const acc_t mapped = e[v] + sign * o[v] + (col_u != nullptr ? wu * col_u[v] : acc_t(0));
              d[v] = static_cast<scalar_t>(static_cast<double>(mapped * sa) + (base + gain * ones[v]));
            }
          } else if (col_u != nullptr) {
            for (int64_t v = 0; v < s.ow; ++v) d[v] = static_cast<scalar_t>((e[v] + sign * o[v] + wu * col_u[v]) * sa + sb);
          } else {
            for (int64_t v = 0; v < s.ow; ++v) d[v] = static_cast<scalar_t>((e[v] + sign * o[v]) * sa + sb);
          }
        }
      });
    }
  });
}

template <typename in_t, typename acc_t>
void run_planes(const at::Tensor& x, const std::vector<at::Tensor>& cols_t, const std::vector<at::Tensor>& row_ops,
                const RankOne* rank_one, const Centring* centring, const acc_t* scale, const acc_t* shift,
                at::Tensor& out, const SeparableMapShape& s, int64_t width_terms) {
  const bool in_place_x =
      std::is_same<in_t, acc_t>::value && x.stride(3) == 1 && x.stride(2) >= s.w && centring == nullptr;
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
      double centre = 0;
      if (in_place_x) {
        x_plane = at::from_blob(const_cast<in_t*>(src), {s.h, s.w}, {sh, 1}, opts);
      } else {
        load_plane<in_t, acc_t>(src, sh, sw, s.h, s.w, static_cast<acc_t*>(plane.data_ptr()));
        if (centring != nullptr) {
          centre = centre_plane(static_cast<acc_t*>(plane.data_ptr()), s.h * s.w, !at::isFloatingType(x.scalar_type()));
        }
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
          if (centring != nullptr) {
            const acc_t wu = row_u != nullptr ? weight * row_u[o] : acc_t(0);
            const double* ones = centring->row(n, o, s.ow);
            const double gain = static_cast<double>(a) * centre, base = b;
            for (int64_t v = 0; v < s.ow; ++v) {
              const acc_t mapped = r_row[v] + (col_u != nullptr ? wu * col_u[v] : acc_t(0));
              d_row[v] = static_cast<scalar_t>(static_cast<double>(mapped * a) + (base + gain * ones[v]));
            }
          } else if (row_u != nullptr) {
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

}  // namespace

void separable_map_planes(const at::Tensor& x, const PlaneOperators& ops, const RankOne* rank_one,
                          const Centring* centring, const at::Tensor& scale, const at::Tensor& shift, at::Tensor& out,
                          const SeparableMapShape& s) {
  AT_DISPATCH_FLOATING_TYPES(ops.folded ? ops.fh.even.scalar_type() : ops.row_ops[0].scalar_type(), "separable_map_cpu", [&] {
    using acc_t = scalar_t;
    const acc_t* a = scale.defined() ? static_cast<const acc_t*>(scale.data_ptr()) : nullptr;
    const acc_t* b = shift.defined() ? static_cast<const acc_t*>(shift.data_ptr()) : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, x.scalar_type(), "separable_map_cpu_x", [&] {
      if (ops.folded) {
        run_planes_folded<scalar_t, acc_t>(x, ops.fh, ops.fw, rank_one, centring, a, b, out, s);
      } else {
        run_planes<scalar_t, acc_t>(x, ops.cols_t, ops.row_ops, rank_one, centring, a, b, out, s, ops.width_terms);
      }
    });
  });
}

}  // namespace effkernels::EFFKERNELS_CPU_ISA
