// The op "separable_map_cuda": effkernels::separable_map by the CUDA C++ kernel of
// separable_map_kernel.cuh (the Triton kernel is the default GPU backend; EFFKERNELS_BACKEND=cuda
// and float64 select this one).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "separable_map_kernel.cuh"

namespace effkernels {
namespace {

struct CudaLauncher {
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, dim3 grid, dim3 block, Args... args) const {
    kernel<<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor separable_map_cuda(
    const at::Tensor& x,
    const at::Tensor& rows,
    const at::Tensor& cols,
    const std::optional<at::Tensor>& scale,
    const std::optional<at::Tensor>& shift,
    std::optional<at::ScalarType> out_dtype) {
  const auto s = check_separable_map(x, rows, cols, scale, shift, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  return separable_map_cuda_kernel::run(s, x, rows, cols, scale, shift, out_dtype, CudaLauncher{});
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CUDA, m) {
  m.impl("separable_map_cuda", &separable_map_cuda);
}

}  // namespace effkernels
