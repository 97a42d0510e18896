// The CUDA C++ kernel of effkernels::separable_map, with the host code that prepares and launches it
// through a launcher it is given: csrc/cuda/separable_map.cu launches it on a GPU, and
// python_tests/cuda_emulation runs the same source thread by thread on a CPU, so CI tests it.
// Same chain of two GEMMs per plane as the Triton kernel, on CUDA cores with shared-memory tiles:
// each block owns a 32x32 output tile, streams x in 32x32 blocks, and keeps the intermediate band in
// shared memory. Float32 output with a shift is centred as on the CPU (csrc/separable_map_centring.h).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../separable_map_centring.h"
#include "../separable_map_checks.h"

namespace effkernels::separable_map_cuda_kernel {

constexpr int kTile = 32;              // output tile edge and x block edge
constexpr int kRowsPerThread = 4;      // a 32x8 thread block covers 32 rows with 4 rows each
constexpr int kThreadRows = kTile / kRowsPerThread;

struct Strides4 {
  int64_t n, c, h, w;
};

// Centring's inputs (see csrc/separable_map_centring.h), or null pointers for a plain map.
struct CentringArgs {
  const double* centres;  // (N, C): each plane's centre
  const double* ones;     // (n', OH, OW): the map of a plane of ones
  int64_t ones_sn;        // 0 when every sample shares it
};

// acc[r] += (a @ b)[ty + r * kThreadRows][tx] for the thread's rows r: one shared-memory tile product
// of a GEMM stage (x block times column operators, then row operators times the band).
template <typename acc_t>
__device__ __forceinline__ void accumulate_tile_product(acc_t (&acc)[kRowsPerThread], const acc_t (&a)[kTile][kTile + 1],
                                                        const acc_t (&b)[kTile][kTile + 1], int tx, int ty) {
#pragma unroll 8
  for (int j = 0; j < kTile; ++j) {
    const acc_t b_value = b[j][tx];
    for (int r = 0; r < kRowsPerThread; ++r) acc[r] += a[ty + r * kThreadRows][j] * b_value;
  }
}

template <typename in_t, typename acc_t, typename out_t>
__global__ void __launch_bounds__(kTile * kThreadRows) separable_map_kernel(
    const in_t* __restrict__ x, const acc_t* __restrict__ rows, const acc_t* __restrict__ cols,
    const acc_t* __restrict__ scale, const acc_t* __restrict__ shift, out_t* __restrict__ out,
    int64_t channels, int64_t height, int64_t width, int64_t out_h, int64_t out_w, int64_t terms,
    Strides4 xs, Strides4 rs, Strides4 cs, int64_t tiles_m, int64_t tiles_n, CentringArgs centring) {
  __shared__ acc_t x_block[kTile][kTile + 1];    // (h, w)
  __shared__ acc_t col_block[kTile][kTile + 1];  // (w, output column)
  __shared__ acc_t band[kTile][kTile + 1];       // (h, output column)
  __shared__ acc_t row_block[kTile][kTile + 1];  // (output row, h)

  const int64_t tiles = tiles_m * tiles_n;
  const int64_t plane = blockIdx.x / tiles;
  const int64_t tile = blockIdx.x % tiles;
  const int64_t n = plane / channels, c = plane % channels;
  const int64_t m0 = (tile / tiles_n) * kTile, n0 = (tile % tiles_n) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const in_t* x_plane = x + n * xs.n + c * xs.c;
  const double centre = centring.centres != nullptr ? centring.centres[plane] : 0.0;
  const acc_t x_centre = static_cast<acc_t>(centre);  // exact for integer x: an integer centre

  acc_t acc[kRowsPerThread] = {};
  for (int64_t k = 0; k < terms; ++k) {
    const acc_t* row_ops = rows + n * rs.n + k * rs.c;
    const acc_t* col_ops = cols + n * cs.n + k * cs.c;
    for (int64_t h0 = 0; h0 < height; h0 += kTile) {
      acc_t partial[kRowsPerThread] = {};
      for (int64_t w0 = 0; w0 < width; w0 += kTile) {
        for (int r = 0; r < kRowsPerThread; ++r) {
          const int i = ty + r * kThreadRows;
          const int64_t h = h0 + i, w = w0 + tx, o = n0 + i;
          x_block[i][tx] = (h < height && w < width)
              ? static_cast<acc_t>(x_plane[h * xs.h + w * xs.w]) - x_centre : acc_t(0);
          col_block[tx][i] = (o < out_w && w < width) ? col_ops[o * cs.h + w * cs.w] : acc_t(0);
        }
        __syncthreads();
        accumulate_tile_product(partial, x_block, col_block, tx, ty);
        __syncthreads();
      }
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int i = ty + r * kThreadRows;
        const int64_t m = m0 + i, h = h0 + tx;
        band[i][tx] = partial[r];
        row_block[i][tx] = (m < out_h && h < height) ? row_ops[m * rs.h + h * rs.w] : acc_t(0);
      }
      __syncthreads();
      accumulate_tile_product(acc, row_block, band, tx, ty);
      __syncthreads();
    }
  }

  const int64_t col = n0 + tx;
  if (col >= out_w) return;
  const acc_t channel_scale = scale ? scale[c] : acc_t(1);
  const acc_t channel_shift = shift ? shift[c] : acc_t(0);
  out_t* out_plane = out + plane * out_h * out_w;
  const double* ones = centring.ones != nullptr ? centring.ones + n * centring.ones_sn : nullptr;
  const double gain = static_cast<double>(channel_scale) * centre;
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t m = m0 + ty + r * kThreadRows;
    if (m >= out_h) continue;
    if (ones != nullptr) {  // + the centre plane's image, scale * c * S + shift, in double, rounded once
      const double offset = static_cast<double>(channel_shift) + gain * ones[m * out_w + col];
      out_plane[m * out_w + col] = static_cast<out_t>(static_cast<double>(acc[r] * channel_scale) + offset);
    } else {
      out_plane[m * out_w + col] = static_cast<out_t>(acc[r] * channel_scale + channel_shift);
    }
  }
}

inline Strides4 strides_of(const at::Tensor& t, bool shared_batch) {
  return {shared_batch ? 0 : t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The op's body on checked arguments (s); Launcher: `void operator()(kernel, dim3 grid, dim3 block, args...)`.
template <typename Launcher>
at::Tensor run(const SeparableMapShape& s, const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
               const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
               std::optional<at::ScalarType> out_dtype, Launcher&& launch) {
  auto out = at::empty({s.n, s.c, s.oh, s.ow}, x.options().dtype(out_dtype.value_or(default_out_dtype(x, rows))));
  if (out.numel() == 0) return out;
  const auto scale_c = scale.has_value() ? scale->contiguous() : at::Tensor();
  const auto shift_c = shift.has_value() ? shift->contiguous() : at::Tensor();
  const int64_t tiles_m = (s.oh + kTile - 1) / kTile, tiles_n = (s.ow + kTile - 1) / kTile;
  const dim3 block(kTile, kThreadRows);
  const int64_t blocks = s.n * s.c * tiles_m * tiles_n;
  EFFKERNELS_CHECK(blocks < (int64_t(1) << 31), "separable_map_cuda: too many output tiles (", blocks, ")");
  const auto xs = strides_of(x, false), rs = strides_of(rows, rows.size(0) == 1), cs = strides_of(cols, cols.size(0) == 1);
  const bool centred = centres_output(rows, shift, out.scalar_type());
  const auto centres = centred ? plane_centres(x) : at::Tensor();
  const auto ones = centred ? ones_map(rows, cols, false, {}, {}, {}, {}) : at::Tensor();
  const CentringArgs centring{centred ? centres.data_ptr<double>() : nullptr, centred ? ones.data_ptr<double>() : nullptr,
                              centred && ones.size(0) > 1 ? s.oh * s.ow : 0};

  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "separable_map_cuda", [&] {
    using in_t = scalar_t;
    using acc_t = std::conditional_t<std::is_same_v<in_t, double>, double, float>;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "separable_map_cuda_out", [&] {
      launch(&separable_map_kernel<in_t, acc_t, scalar_t>, dim3(static_cast<unsigned>(blocks)), block,
          x.data_ptr<in_t>(), rows.data_ptr<acc_t>(), cols.data_ptr<acc_t>(),
          scale_c.defined() ? scale_c.data_ptr<acc_t>() : nullptr,
          shift_c.defined() ? shift_c.data_ptr<acc_t>() : nullptr, out.data_ptr<scalar_t>(),
          s.c, s.h, s.w, s.oh, s.ow, s.k, xs, rs, cs, tiles_m, tiles_n, centring);
    });
  });
  return out;
}


}  // namespace effkernels::separable_map_cuda_kernel
