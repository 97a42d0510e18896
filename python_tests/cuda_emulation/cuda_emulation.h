// Runs CUDA C++ kernel source on the CPU: one std::thread per CUDA thread, one CTA at a time, a real
// barrier for __syncthreads and function-static arrays for __shared__ memory. Tests on machines without
// a GPU thereby run the kernels' own indexing, tiling, barriers and shared-memory rings against the
// reference. Not emulated: speed, warp-level primitives and memory-model subtleties (the kernels run
// here use none of the former; a missing barrier shows only as a race the OS schedule may or may not hit).
// Include before any kernel source.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

namespace cuda_emulation {

// All threads of the CTA wait until each has arrived; reusable (a generation count).
class Barrier {
 public:
  explicit Barrier(unsigned count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      woken_.notify_all();
    } else {
      woken_.wait(lock, [&] { return generation != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable woken_;
  unsigned count_, arrived_ = 0, generation_ = 0;
};

inline thread_local Barrier* cta_barrier = nullptr;

// kernel<<<grid, block>>>(args...), CTA after CTA.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, Args... args) {
  gridDim = grid;
  blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Barrier barrier(threads);
        std::vector<std::thread> cta;
        cta.reserve(threads);
        for (unsigned tz = 0; tz < block.z; ++tz) {
          for (unsigned ty = 0; ty < block.y; ++ty) {
            for (unsigned tx = 0; tx < block.x; ++tx) {
              cta.emplace_back([&, tx, ty, tz] {
                threadIdx = dim3(tx, ty, tz);
                blockIdx = dim3(bx, by, bz);
                cta_barrier = &barrier;
                kernel(args...);
              });
            }
          }
        }
        for (auto& thread : cta) thread.join();
      }
    }
  }
}

}  // namespace cuda_emulation

inline void __syncthreads() { cuda_emulation::cta_barrier->arrive_and_wait(); }
