// Argument checks shared by the C++ kernels of effkernels::separable_map. They guard memory safety
// for direct torch.ops calls; effkernels/ops.py raises the same errors with the same wording first.
#pragma once
#include "check_message.h"

namespace effkernels {

struct SeparableMapShape {
  int64_t n, c, h, w, k, oh, ow;
};

inline at::ScalarType default_out_dtype(const at::Tensor& x, const at::Tensor& rows) {
  return at::isFloatingType(x.scalar_type()) ? x.scalar_type() : rows.scalar_type();
}

inline SeparableMapShape check_separable_map(
    const at::Tensor& x,
    const at::Tensor& rows,
    const at::Tensor& cols,
    const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift,
    std::optional<at::ScalarType> out_dtype) {
  const auto od = out_dtype.value_or(at::kFloat);
  EFFKERNELS_CHECK_TYPE(od == at::kHalf || od == at::kBFloat16 || od == at::kFloat || od == at::kDouble,
                   "out_dtype must be a floating dtype (float16, bfloat16, float32 or float64), got ", od);
  EFFKERNELS_CHECK_VALUE(x.dim() == 4, "x must have shape (N, C, H, W), got ", x.sizes());
  const auto xt = x.scalar_type();
  EFFKERNELS_CHECK_TYPE(xt == at::kByte || xt == at::kHalf || xt == at::kBFloat16 || xt == at::kFloat ||
                       xt == at::kDouble,
                   "x must be uint8, float16, bfloat16, float32 or float64, got ", xt);
  const auto acc = xt == at::kDouble ? at::kDouble : at::kFloat;
  EFFKERNELS_CHECK_VALUE(rows.dim() == 4, "rows must have shape (1 or N, K, OH, H), got ", rows.sizes());
  EFFKERNELS_CHECK_VALUE(cols.dim() == 4, "cols must have shape (1 or N, K, OW, W), got ", cols.sizes());
  EFFKERNELS_CHECK_TYPE(rows.scalar_type() == acc && cols.scalar_type() == acc,
                   "rows and cols must be ", acc, " for x of dtype ", xt, ", got ",
                   rows.scalar_type(), " and ", cols.scalar_type());
  SeparableMapShape s{x.size(0), x.size(1), x.size(2), x.size(3), rows.size(1), rows.size(2),
                      cols.size(2)};
  EFFKERNELS_CHECK_VALUE(rows.size(0) == 1 || rows.size(0) == s.n,
                    "rows must hold 1 or N=", s.n, " operators, got ", rows.size(0));
  EFFKERNELS_CHECK_VALUE(cols.size(0) == 1 || cols.size(0) == s.n,
                    "cols must hold 1 or N=", s.n, " operators, got ", cols.size(0));
  EFFKERNELS_CHECK_VALUE(s.k >= 1 && cols.size(1) == s.k, "rows and cols must have the same K >= 1, got ",
                    rows.size(1), " and ", cols.size(1));
  EFFKERNELS_CHECK_VALUE(rows.size(3) == s.h, "rows must have H=", s.h, " columns, got ", rows.size(3));
  EFFKERNELS_CHECK_VALUE(cols.size(3) == s.w, "cols must have W=", s.w, " columns, got ", cols.size(3));
  for (const auto* affine : {&scale, &shift}) {
    if (!affine->has_value()) continue;
    const char* name = affine == &scale ? "scale" : "shift";
    EFFKERNELS_CHECK_VALUE((*affine)->dim() == 1 && (*affine)->size(0) == s.c, name,
                      " must have shape (C,) = (", s.c, ",), got ", (*affine)->sizes());
    EFFKERNELS_CHECK_TYPE((*affine)->scalar_type() == acc, name, " must be ", acc, ", got ",
                     (*affine)->scalar_type());
    EFFKERNELS_CHECK_VALUE((*affine)->device() == x.device(), name, " must be on ", x.device(),
                      " like x, got ", (*affine)->device());
  }
  EFFKERNELS_CHECK_VALUE(rows.device() == x.device() && cols.device() == x.device(),
                    "rows and cols must be on ", x.device(), " like x, got ", rows.device(),
                    " and ", cols.device());
  return s;
}

// The optional rank-one term (row_u row_v^T) x (col_u col_v^T)^T: all four factors or none, each
// (1 or N, length) of the accumulation dtype on x's device. Returns whether the term is present.
inline bool check_rank_one(
    const at::Tensor& x,
    const SeparableMapShape& s,
    const std::optional<at::Tensor>& row_u,
    const std::optional<at::Tensor>& row_v,
    const std::optional<at::Tensor>& col_u,
    const std::optional<at::Tensor>& col_v) {
  const int present = row_u.has_value() + row_v.has_value() + col_u.has_value() + col_v.has_value();
  EFFKERNELS_CHECK_VALUE(present == 0 || present == 4,
                    "row_u, row_v, col_u and col_v must be given all together or not at all");
  if (present == 0) return false;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const char* names[] = {"row_u", "row_v", "col_u", "col_v"};
  const std::optional<at::Tensor>* factors[] = {&row_u, &row_v, &col_u, &col_v};
  const int64_t lengths[] = {s.oh, s.h, s.ow, s.w};
  for (int i = 0; i < 4; ++i) {
    const auto& f = **factors[i];
    EFFKERNELS_CHECK_VALUE(f.dim() == 2 && (f.size(0) == 1 || f.size(0) == s.n) && f.size(1) == lengths[i], names[i],
                      " must have shape (1 or N, ", lengths[i], "), got ", f.sizes());
    EFFKERNELS_CHECK_TYPE(f.scalar_type() == acc, names[i], " must be ", acc, ", got ", f.scalar_type());
    EFFKERNELS_CHECK_VALUE(f.device() == x.device(), names[i], " must be on ", x.device(), " like x, got ", f.device());
  }
  return true;
}

}  // namespace effkernels
