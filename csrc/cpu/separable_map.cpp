// CPU kernel of effkernels::separable_map: per image plane, two small GEMMs and a fused epilogue.
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include "../separable_map_checks.h"

namespace effkernels {
namespace {

at::Tensor separable_map_cpu(
    const at::Tensor& x,
    const at::Tensor& rows,
    const at::Tensor& cols,
    const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift,
    std::optional<at::ScalarType> out_dtype) {
  const auto shape = check_separable_map(x, rows, cols, scale, shift, out_dtype);
  const auto acc_dtype = rows.scalar_type();
  auto out = at::empty({shape.n, shape.c, shape.oh, shape.ow},
                       x.options().dtype(out_dtype.value_or(default_out_dtype(x, rows))));
  const auto scale_acc = scale.has_value() ? scale->contiguous() : at::Tensor();
  const auto shift_acc = shift.has_value() ? shift->contiguous() : at::Tensor();
  const int64_t planes = shape.n * shape.c;
  // A grain of one plane: each plane is ~H*W*OW*K multiply-adds, plenty to amortise a task.
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    // OpenMP workers do not inherit the caller's dispatch state: keep their ATen calls below autograd.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto opts = x.options().dtype(acc_dtype);
    auto plane = at::empty({shape.h, shape.w}, opts);
    auto partial = at::empty({shape.h, shape.ow}, opts);
    auto result = at::empty({shape.oh, shape.ow}, opts);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / shape.c, c = p % shape.c;
      plane.copy_(x[n][c]);
      const auto row_ops = rows[rows.size(0) == 1 ? 0 : n];
      const auto col_ops = cols[cols.size(0) == 1 ? 0 : n];
      for (int64_t k = 0; k < shape.k; ++k) {
        at::mm_out(partial, plane, col_ops[k].t());
        if (k == 0) {
          at::mm_out(result, row_ops[k], partial);
        } else {
          result.addmm_(row_ops[k], partial);
        }
      }
      if (scale_acc.defined()) result.mul_(scale_acc[c]);
      if (shift_acc.defined()) result.add_(shift_acc[c]);
      out[n][c].copy_(result);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CPU, m) {
  m.impl("separable_map", &separable_map_cpu);
}

}  // namespace effkernels
