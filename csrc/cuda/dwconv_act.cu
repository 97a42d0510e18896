// The ops "dwconv_act_cuda" and "dwconv_act_backward_cuda": effkernels::dwconv_act and its backward by
// the CUDA C++ stencil kernels of dwconv_act_stencil.cuh (Triton is the default GPU backend,
// EFFKERNELS_BACKEND=cuda selects these).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <utility>

#include "dwconv_act_stencil.cuh"

namespace effkernels {
namespace {

// Launches on the current stream; sizes launches by the occupancy the CUDA runtime reports.
struct CudaLauncher {
  template <typename Kernel>
  int64_t ctas_per_wave(Kernel kernel, int threads) const {
    static std::mutex mutex;
    static std::map<std::pair<const void*, int>, int> resident;  // CTAs per SM by (kernel, threads)
    const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), threads};
    int per_sm;
    {
      const std::lock_guard<std::mutex> lock(mutex);
      auto found = resident.find(key);
      if (found == resident.end()) {
        int count = 0;
        C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&count, kernel, threads, 0));
        found = resident.emplace(key, std::max(count, 1)).first;
      }
      per_sm = found->second;
    }
    return static_cast<int64_t>(per_sm) * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  }

  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, dim3 grid, dim3 block, Args... args) const {
    kernel<<<grid, block, 0, at::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor dwconv_act_cuda(const at::Tensor& h, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
                           std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  const c10::cuda::CUDAGuard guard(h.device());
  return stencil::dwconv_act(s, h, weight, bias, CudaLauncher{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_act_backward_cuda(
    const at::Tensor& grad, const at::Tensor& h, c10::SymIntArrayRef grid_size, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, int64_t num_prefix_tokens, c10::string_view prefix,
    std::optional<c10::string_view> pre_act, c10::string_view act) {
  const auto s = check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act);
  check_dwconv_act_grad(grad, h);
  const c10::cuda::CUDAGuard guard(h.device());
  return stencil::dwconv_act_backward(s, grad, h, weight, bias, CudaLauncher{});
}

}  // namespace

TORCH_LIBRARY_IMPL(effkernels, CUDA, m) {
  m.impl("dwconv_act_cuda", &dwconv_act_cuda);
  m.impl("dwconv_act_backward_cuda", &dwconv_act_backward_cuda);
}

}  // namespace effkernels
