// The CUDA C++ kernels of effkernels::dwconv_act and its backward, with the host code that tiles and
// launches them through a launcher it is given: csrc/cuda/dwconv_act.cu launches them on a GPU, and
// python_tests/cuda_emulation runs the same source thread by thread on a CPU, so CI tests them.
//
// Design (a memory-bound stencil on the token-major (B, P + H*W, C) buffer; ../shared/DESIGN.md, Op 2):
// - A CTA is a slab of 32 lanes x V channels by a tile of grid columns (threadIdx.y is the column) and
//   walks down the grid rows of its samples. A lane owns V consecutive channels, so a warp reads and
//   writes 32 * V contiguous channels of one token per instruction: coalesced vector accesses.
// - Every h value is read from memory once: its column's thread applies pre_act and puts it in a shared
//   row, where the neighbour columns read it. Forward: as input row r enters, it is added into rolling
//   partial sums of output rows r - 1, r and r + 1; row r - 1 is then complete (one barrier a row, the
//   shared rows double-buffered).
// - Backward, one pass over (grad, h): z of row q = r - 1 completes as pre_act row r enters; grad_z =
//   grad * act'(z) goes to a shared row; the nine tap sums and the bias sum grow in registers across all
//   rows and samples of the CTA; grad_z row q is scattered through the transposed taps into rolling
//   grad_pre rows, and row q - 1 is written times pre_act'(h). At the end the CTA adds its columns' sums
//   in a fixed order into its own row of a partial-sum buffer, which a second kernel adds up in group
//   order into the weight and bias grads: deterministic, no atomics. Each CTA takes several samples,
//   so that the launch fills the GPU about once.
// - Grids wider than kMaxColumns are cut into column tiles that overlap by a halo: one column forward,
//   two backward (its owned columns need grad_z one column out, hence z and pre_act two columns out).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../dwconv_act_checks.h"

namespace effkernels::stencil {

constexpr int kLanes = 32;
constexpr int kMaxColumns = 16;  // grid columns per CTA (threads along y): at most 512 threads
// Bytes a lane moves per access: the forward keeps 9 * V taps in registers, the backward another
// 10 * V sums, so wider accesses would cost occupancy (at 512 threads a thread may use 128 registers).
constexpr int kForwardLaneBytes = 8;
constexpr int kBackwardLaneBytes = 4;
// Rows each thread has loading ahead of its math, across sample boundaries. One 448-thread CTA fits
// an SM at these register counts (DeiT-S, 14 columns): 448 x 8 bytes x 4 rows = 14 KB in flight per SM
// in the forward, about what DRAM latency asks for at full bandwidth (~25 GB/s per SM x ~0.6 us on an
// H100). Six rows would cover more latency, but with the row loops unrolled by the ring's length (what
// makes its rotation free of register moves) they spilled; four do not (sm_90 ptxas, bf16, 2026-12-07).
constexpr int kRowsAhead = 4;

// How a launch is cut: channel slabs (grid.x), column tiles (grid.y), sample groups (grid.z).
struct Tiling {
  int vec;                // channels per lane
  int tile_w;             // grid columns a CTA owns (writes)
  int halo;               // columns it computes on each side beyond them: 0 where one tile spans the grid
  int columns;            // threads along y: tile_w + 2 * halo
  int64_t slabs, tiles, sample_groups;
};

inline Tiling tiling(const DwconvActShape& s, int vec, int halo_when_cut, int64_t ctas_per_wave) {
  Tiling t{};
  t.vec = vec;
  t.halo = s.width <= kMaxColumns ? 0 : halo_when_cut;
  t.tile_w = s.width <= kMaxColumns ? static_cast<int>(s.width) : kMaxColumns - 2 * halo_when_cut;
  t.columns = t.tile_w + 2 * t.halo;
  t.slabs = (s.channels + kLanes * vec - 1) / (kLanes * vec);
  t.tiles = (s.width + t.tile_w - 1) / t.tile_w;
  const int64_t per_wave = std::max<int64_t>(1, ctas_per_wave / (t.slabs * t.tiles));
  t.sample_groups = std::min<int64_t>({s.batch, per_wave, 65535});
  return t;
}

inline dim3 grid_of(const Tiling& t) {
  return dim3(static_cast<unsigned>(t.slabs), static_cast<unsigned>(t.tiles), static_cast<unsigned>(t.sample_groups));
}

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Where a lane's i-th value sits in a shared row: a lane's 16-byte groups are interleaved across the
// lanes, so that each vector access of a warp covers one contiguous run (no bank conflicts).
template <typename acc_t, int V>
__device__ __forceinline__ int shared_index(int lane, int i) {
  constexpr int group = static_cast<int>(16 / sizeof(acc_t)) < V ? static_cast<int>(16 / sizeof(acc_t)) : V;
  return ((i / group) * kLanes + lane) * group + i % group;
}

// What a thread owns: channels [c0, c0 + V) of column x of its tile, and what it may touch.
struct Lane {
  int lane, col;
  int64_t c0, x;
  bool channels_in, in_grid, owned;
};

__device__ __forceinline__ Lane lane_of(const DwconvActShape& s, const Tiling& t) {
  Lane l;
  l.lane = threadIdx.x;
  l.col = threadIdx.y;
  l.c0 = (static_cast<int64_t>(blockIdx.x) * kLanes + l.lane) * t.vec;
  l.x = static_cast<int64_t>(blockIdx.y) * t.tile_w - t.halo + l.col;
  l.channels_in = l.c0 < s.channels;  // t.vec divides the channels
  l.in_grid = l.channels_in && l.x >= 0 && l.x < s.width;
  l.owned = l.in_grid && l.col >= t.halo && l.col < t.halo + t.tile_w;
  return l;
}

template <typename scalar_t, int V>
__device__ __forceinline__ Pack<scalar_t, V> load(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t, V>*>(p);
}

template <typename scalar_t, int V, typename acc_t>
__device__ __forceinline__ void store(scalar_t* p, const acc_t (&values)[V]) {
  Pack<scalar_t, V> pack;
#pragma unroll
  for (int i = 0; i < V; ++i) pack.v[i] = static_cast<scalar_t>(values[i]);
  *reinterpret_cast<Pack<scalar_t, V>*>(p) = pack;
}

template <typename scalar_t, int V>
__device__ __forceinline__ Pack<scalar_t, V> zero_pack() {
  Pack<scalar_t, V> pack;
#pragma unroll
  for (int i = 0; i < V; ++i) pack.v[i] = scalar_t(0);
  return pack;
}

// Where a thread's grid rows are: element offset of (row r, its column) in sample n = n * sample_stride
// + first + r * row_stride.
struct Rows {
  int64_t sample_stride, row_stride, first;
  int height, steps;  // grid rows; steps per sample (the rows, then padding steps)
  __device__ __forceinline__ int64_t origin(int64_t n) const { return n * sample_stride + first; }
};

__device__ __forceinline__ Rows rows_of(const DwconvActShape& s, const Lane& l, int padding_steps) {
  const int height = static_cast<int>(s.height);
  return {s.tokens * s.channels, s.width * s.channels, (s.prefix_tokens + l.x) * s.channels + l.c0, height,
          height + padding_steps};
}

// The loads' position in a CTA's rows, taken in the order its math takes them: `steps` per sample,
// samples strided by the sample groups. It runs kRowsAhead steps ahead of the math; the offset moves
// by one add a step (32-bit counters, no division).
struct Cursor {
  int r;
  int64_t n, at;  // sample; element offset of (row r, column)
  __device__ __forceinline__ Cursor(const Rows& g) : r(0), n(blockIdx.z), at(g.origin(blockIdx.z)) {}
  __device__ __forceinline__ void advance(const Rows& g) {
    if (++r == g.steps) {
      r = 0;
      n += gridDim.z;
      at = g.origin(n);
    } else {
      at += g.row_stride;
    }
  }
};

// Loaded rows waiting for the math, oldest first. Held as whole words (a pack of 16-bit values as
// bf16 structs was shifted 16 bits at a time: 20 PRMT a step in the bf16 forward).
template <typename scalar_t, int V>
struct Ring {
  static constexpr int kBytes = static_cast<int>(sizeof(Pack<scalar_t, V>));
  static_assert(kBytes == 2 || kBytes == 4 || kBytes == 8, "a pack is one 16-, 32- or 64-bit word");
  using Word = std::conditional_t<kBytes == 2, uint16_t, std::conditional_t<kBytes == 4, uint32_t, uint64_t>>;
  Word rows[kRowsAhead];

  __device__ __forceinline__ void set(int d, const Pack<scalar_t, V>& pack) { memcpy(&rows[d], &pack, kBytes); }
  __device__ __forceinline__ Pack<scalar_t, V> pop_push(const Pack<scalar_t, V>& incoming) {
    Pack<scalar_t, V> oldest;
    memcpy(&oldest, &rows[0], kBytes);
#pragma unroll
    for (int d = 0; d + 1 < kRowsAhead; ++d) rows[d] = rows[d + 1];
    set(kRowsAhead - 1, incoming);
    return oldest;
  }
};

// The lane's taps (tap k = 3 * (dy + 1) + (dx + 1) reads the neighbour (y + dy, x + dx)) and bias, from
// the (C, 1, 3, 3) weight and (C,) bias as they are (once per CTA: no per-call conversion on the host).
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_taps(const DwconvActShape& s, const Lane& l, const scalar_t* __restrict__ weight,
                                          const scalar_t* __restrict__ bias, acc_t (&w)[9][V], acc_t (&b)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const bool in = l.channels_in;
#pragma unroll
    for (int k = 0; k < 9; ++k) w[k][i] = in ? static_cast<acc_t>(weight[(l.c0 + i) * 9 + k]) : acc_t(0);
    b[i] = in && bias != nullptr ? static_cast<acc_t>(bias[l.c0 + i]) : acc_t(0);
  }
}

// Zeroes shared column 0 and columns + 1 of `rows` shared rows (the grid's zero padding where one tile
// spans it; elsewhere halo columns whose results nobody uses).
template <int V, typename acc_t>
__device__ __forceinline__ void zero_edges(acc_t (*rows)[kMaxColumns + 2][kLanes * V], int count, const Tiling& t,
                                           const Lane& l) {
  if (l.col != 0 && l.col != t.columns - 1) return;
  for (int r = 0; r < count; ++r) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int j = shared_index<acc_t, V>(l.lane, i);
      if (l.col == 0) rows[r][0][j] = acc_t(0);
      if (l.col == t.columns - 1) rows[r][t.columns + 1][j] = acc_t(0);
    }
  }
}

template <typename T>
__device__ __forceinline__ T saturate(T v) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) return __saturatef(v);
#endif
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}

// An activation as these kernels evaluate it: h-swish as z * sat(z / 6 + 1 / 2), one FFMA.SAT and one
// FMUL in float (relu6(z + 3) / 6 as activations.h spells it takes five); the others as activations.h.
template <Activation A, typename T>
__device__ __forceinline__ T act(T z) {
  if constexpr (A == Activation::kHardswish) {
    return z * saturate(z * T(1.0 / 6.0) + T(0.5));
  } else {
    return activate<A>(z);
  }
}

// Puts pre_act(values) (zeros where !valid) in the thread's column of a shared row.
template <Activation Pre, typename scalar_t, typename acc_t, int V>
__device__ __forceinline__ void put_pre_act(acc_t* column, int lane, const Pack<scalar_t, V>& values, bool valid) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    column[shared_index<acc_t, V>(lane, i)] = valid ? act<Pre>(static_cast<acc_t>(values.v[i])) : acc_t(0);
  }
}

template <Activation Pre, Activation Act, typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kLanes * kMaxColumns) forward_kernel(
    DwconvActShape s, Tiling t, const scalar_t* __restrict__ h, const scalar_t* __restrict__ weight,
    const scalar_t* __restrict__ bias, scalar_t* __restrict__ out) {
  __shared__ acc_t rows[2][kMaxColumns + 2][kLanes * V];
  const Lane l = lane_of(s, t);
  acc_t w[9][V], b[V];
  load_taps<V>(s, l, weight, bias, w, b);
  zero_edges<V>(rows, 2, t, l);
  const Rows g = rows_of(s, l, 1);  // one padding step finishes the last row
  auto fetch = [&](const Cursor& c) {
    return l.in_grid && c.n < s.batch && c.r < g.height ? load<scalar_t, V>(h + c.at) : zero_pack<scalar_t, V>();
  };
  Cursor ahead(g);
  Ring<scalar_t, V> ring;
#pragma unroll
  for (int d = 0; d < kRowsAhead; ++d) ring.set(d, fetch(ahead)), ahead.advance(g);
  int parity = 0;  // the shared row buffer in use: it alternates across samples too
  for (int64_t n = blockIdx.z; n < s.batch; n += gridDim.z) {
    if (blockIdx.y == 0 && l.channels_in) {
      for (int64_t p = l.col; p < s.prefix_tokens; p += t.columns) {
        const int64_t at = (n * s.tokens + p) * s.channels + l.c0;
        const auto in = load<scalar_t, V>(h + at);
        acc_t a[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
          a[i] = s.skip_prefix ? acc_t(0) : act<Act>(act<Pre>(static_cast<acc_t>(in.v[i])));
        }
        store<scalar_t, V>(out + at, a);
      }
    }
    acc_t upper[V], middle[V];  // partial sums of output rows r - 1 and r
#pragma unroll
    for (int i = 0; i < V; ++i) upper[i] = acc_t(0), middle[i] = b[i];
    int64_t written = g.origin(n) - g.row_stride;  // (row r - 1, column)
    // Unrolled by the ring's length, the period of its rotation, the ring shifts cost no register moves.
#pragma unroll kRowsAhead
    for (int r = 0; r < g.steps; ++r, parity ^= 1, written += g.row_stride) {
      const auto here = ring.pop_push(fetch(ahead));  // row r (zeros past the grid)
      ahead.advance(g);
      auto row = rows[parity];
      put_pre_act<Pre>(row[l.col + 1], l.lane, here, l.in_grid);
      __syncthreads();
      acc_t a[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int j = shared_index<acc_t, V>(l.lane, i);
        const acc_t left = row[l.col][j], centre = row[l.col + 1][j], right = row[l.col + 2][j];
        a[i] = act<Act>(upper[i] + w[6][i] * left + w[7][i] * centre + w[8][i] * right);
        upper[i] = middle[i] + w[3][i] * left + w[4][i] * centre + w[5][i] * right;
        middle[i] = b[i] + w[0][i] * left + w[1][i] * centre + w[2][i] * right;
      }
      if (r >= 1 && l.owned) store<scalar_t, V>(out + written, a);
    }
  }
}

template <Activation Pre, Activation Act, typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kLanes * kMaxColumns) backward_kernel(
    DwconvActShape s, Tiling t, const scalar_t* __restrict__ grad, const scalar_t* __restrict__ h,
    const scalar_t* __restrict__ weight, const scalar_t* __restrict__ bias, scalar_t* __restrict__ grad_h,
    acc_t* __restrict__ partials) {
  __shared__ acc_t pre_rows[3][kMaxColumns + 2][kLanes * V];  // pre_act(h) rows r - 2, r - 1, r (a ring)
  __shared__ acc_t grad_z_row[1][kMaxColumns + 2][kLanes * V];
  const Lane l = lane_of(s, t);
  acc_t w[9][V], b[V], sums[10][V];  // sums: the nine taps' weight grads, then the bias grad
  load_taps<V>(s, l, weight, bias, w, b);
#pragma unroll
  for (int k = 0; k < 10; ++k) {
#pragma unroll
    for (int i = 0; i < V; ++i) sums[k][i] = acc_t(0);
  }
  zero_edges<V>(pre_rows, 3, t, l);
  zero_edges<V>(grad_z_row, 1, t, l);
  // Step r takes h row r and grad row r - 1; two padding steps finish the last rows.
  const Rows g = rows_of(s, l, 2);
  auto fetch_h = [&](const Cursor& c) {
    return l.in_grid && c.n < s.batch && c.r < g.height ? load<scalar_t, V>(h + c.at) : zero_pack<scalar_t, V>();
  };
  auto fetch_grad = [&](const Cursor& c) {
    return l.in_grid && c.n < s.batch && c.r >= 1 && c.r <= g.height ? load<scalar_t, V>(grad + c.at - g.row_stride)
                                                                      : zero_pack<scalar_t, V>();
  };
  Cursor ahead(g);
  Ring<scalar_t, V> h_ring, grad_ring;
#pragma unroll
  for (int d = 0; d < kRowsAhead; ++d) {
    h_ring.set(d, fetch_h(ahead)), grad_ring.set(d, fetch_grad(ahead));
    ahead.advance(g);
  }
  int newest_slot = 0;  // the ring of shared rows turns across samples too
  for (int64_t n = blockIdx.z; n < s.batch; n += gridDim.z) {
    if (blockIdx.y == 0 && l.channels_in) {
      for (int64_t p = l.col; p < s.prefix_tokens; p += t.columns) {
        const int64_t at = (n * s.tokens + p) * s.channels + l.c0;
        const auto gv = load<scalar_t, V>(grad + at);
        const auto hv = load<scalar_t, V>(h + at);
        acc_t gh[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const acc_t x = static_cast<acc_t>(hv.v[i]);
          const acc_t gz = s.skip_prefix ? acc_t(0) : static_cast<acc_t>(gv.v[i]) * activate_grad<Act>(act<Pre>(x));
          gh[i] = gz * activate_grad<Pre>(x);
        }
        store<scalar_t, V>(grad_h + at, gh);
      }
    }
    auto h_here = zero_pack<scalar_t, V>(), h_back1 = h_here, h_back2 = h_here;  // h rows r, r - 1, r - 2
    acc_t z_upper[V], z_middle[V], g_upper[V], g_middle[V];  // z rows q, q + 1; grad_pre rows q - 1, q
#pragma unroll
    for (int i = 0; i < V; ++i) z_upper[i] = acc_t(0), z_middle[i] = b[i], g_upper[i] = acc_t(0), g_middle[i] = acc_t(0);
    int64_t written = g.origin(n) - 2 * g.row_stride;  // (row q - 1, column)
#pragma unroll kRowsAhead
    for (int r = 0; r < g.steps; ++r, newest_slot = newest_slot == 2 ? 0 : newest_slot + 1, written += g.row_stride) {
      const int q = r - 1;  // the row whose z completes in this step
      h_back2 = h_back1;
      h_back1 = h_here;
      h_here = h_ring.pop_push(fetch_h(ahead));
      const auto g_here = grad_ring.pop_push(fetch_grad(ahead));  // grad row q
      ahead.advance(g);
      const int middle_slot = newest_slot == 0 ? 2 : newest_slot - 1, oldest_slot = middle_slot == 0 ? 2 : middle_slot - 1;
      auto newest = pre_rows[newest_slot], middle_row = pre_rows[middle_slot], oldest = pre_rows[oldest_slot];
      put_pre_act<Pre>(newest[l.col + 1], l.lane, h_here, l.in_grid && r < g.height);
      __syncthreads();
      const bool q_in_grid = l.in_grid && q >= 0 && q < g.height;
      acc_t gz[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int j = shared_index<acc_t, V>(l.lane, i);
        const acc_t left = newest[l.col][j], centre = newest[l.col + 1][j], right = newest[l.col + 2][j];
        const acc_t z = z_upper[i] + w[6][i] * left + w[7][i] * centre + w[8][i] * right;
        gz[i] = q_in_grid ? static_cast<acc_t>(g_here.v[i]) * activate_grad<Act>(z) : acc_t(0);
        z_upper[i] = z_middle[i] + w[3][i] * left + w[4][i] * centre + w[5][i] * right;
        z_middle[i] = b[i] + w[0][i] * left + w[1][i] * centre + w[2][i] * right;
        grad_z_row[0][l.col + 1][j] = gz[i];
      }
      if (q_in_grid && l.owned) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int j = shared_index<acc_t, V>(l.lane, i);
#pragma unroll
          for (int dx = 0; dx < 3; ++dx) {
            if (q >= 1) sums[dx][i] += gz[i] * oldest[l.col + dx][j];  // row q - 1 (row -1 is padding)
            sums[3 + dx][i] += gz[i] * middle_row[l.col + dx][j];
            sums[6 + dx][i] += gz[i] * newest[l.col + dx][j];
          }
          sums[9][i] += gz[i];
        }
      }
      __syncthreads();
      // Row q's grad_z reaches grad_pre row q - dy through tap (dy, dx) from column x - dx.
      acc_t gh[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int j = shared_index<acc_t, V>(l.lane, i);
        const acc_t left = grad_z_row[0][l.col][j], centre = grad_z_row[0][l.col + 1][j],
                    right = grad_z_row[0][l.col + 2][j];
        const acc_t above = g_upper[i] + w[0][i] * right + w[1][i] * centre + w[2][i] * left;  // row q - 1
        g_upper[i] = g_middle[i] + w[3][i] * right + w[4][i] * centre + w[5][i] * left;
        g_middle[i] = w[6][i] * right + w[7][i] * centre + w[8][i] * left;
        gh[i] = above * activate_grad<Pre>(static_cast<acc_t>(h_back2.v[i]));
      }
      if (q >= 1 && l.owned) store<scalar_t, V>(grad_h + written, gh);
    }
  }
  // The CTA's sums over its columns, in column order, into its row of partials (groups, 10, C).
  acc_t* scratch = &pre_rows[0][0][0];
  const int64_t group = static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y;
  for (int k = 0; k < 10; ++k) {
    __syncthreads();
#pragma unroll
    for (int i = 0; i < V; ++i) scratch[l.col * kLanes * V + shared_index<acc_t, V>(l.lane, i)] = sums[k][i];
    __syncthreads();
    if (l.col == 0 && l.channels_in) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc_t total = acc_t(0);
        for (int c = 0; c < t.columns; ++c) total += scratch[c * kLanes * V + shared_index<acc_t, V>(l.lane, i)];
        partials[(group * 10 + k) * s.channels + l.c0 + i] = total;
      }
    }
  }
}

// grad_weight (C, 1, 3, 3) and grad_bias (C,) in the weights' dtype: the backward CTAs' partial sums
// (groups, 10, C) added over the groups in their order, one thread per output (deterministic).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(256) sum_partials_kernel(const acc_t* __restrict__ partials, int64_t groups,
                                                            int64_t channels, scalar_t* __restrict__ grad_weight,
                                                            scalar_t* __restrict__ grad_bias) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // k * C + c
  if (o >= 10 * channels) return;
  const int64_t k = o / channels, c = o % channels;
  acc_t total = acc_t(0);
  for (int64_t g = 0; g < groups; ++g) total += partials[g * 10 * channels + o];
  if (k < 9) {
    grad_weight[c * 9 + k] = static_cast<scalar_t>(total);
  } else {
    grad_bias[c] = static_cast<scalar_t>(total);
  }
}

// V for `lane_bytes` per access, where the channels and every tensor's address allow it; else 1.
template <typename scalar_t, int lane_bytes>
constexpr int vector_of() {
  return lane_bytes / static_cast<int>(sizeof(scalar_t)) > 1 ? lane_bytes / static_cast<int>(sizeof(scalar_t)) : 1;
}

inline bool packs_fit(int64_t channels, int vec, int64_t item_bytes, std::initializer_list<const at::Tensor*> tensors) {
  if (channels % vec != 0) return false;
  for (const auto* tensor : tensors) {
    if (reinterpret_cast<uintptr_t>(tensor->const_data_ptr()) % (vec * item_bytes) != 0) return false;
  }
  return true;
}

// Calls f(std::integral_constant<int, vec>) with the dtype's vector for lane_bytes where it fits, else 1.
template <typename scalar_t, int lane_bytes, typename F>
void with_vector(bool fits, F&& f) {
  constexpr int vec = vector_of<scalar_t, lane_bytes>();
  if (vec > 1 && fits) {
    f(std::integral_constant<int, vec>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

template <typename Launcher>
void launch_forward(const DwconvActShape& s, const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias,
                    at::Tensor& out, Launcher&& launch) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int lane_bytes = kForwardLaneBytes;
    const bool fits = packs_fit(s.channels, vector_of<scalar_t, lane_bytes>(), sizeof(scalar_t), {&h, &out});
    with_vector<scalar_t, lane_bytes>(fits, [&](auto vec) {
      dispatch_activations(s.pre_act, s.act, [&](auto pre, auto act) {
        const auto kernel = &forward_kernel<decltype(pre)::value, decltype(act)::value, scalar_t, acc_t, vec()>;
        const int columns = static_cast<int>(std::min<int64_t>(s.width, kMaxColumns));
        const auto t = tiling(s, vec(), 1, launch.ctas_per_wave(kernel, kLanes * columns));
        launch(kernel, grid_of(t), dim3(kLanes, t.columns), s, t, h.const_data_ptr<scalar_t>(),
               weight.const_data_ptr<scalar_t>(), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
               out.mutable_data_ptr<scalar_t>());
      });
    });
  });
}

template <typename Launcher>
void launch_backward(const DwconvActShape& s, const at::Tensor& grad, const at::Tensor& h, const at::Tensor& weight,
                     const at::Tensor& bias, at::Tensor& grad_h, at::Tensor& grad_weight, at::Tensor& grad_bias,
                     Launcher&& launch) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "dwconv_act_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int lane_bytes = kBackwardLaneBytes;
    const bool fits = packs_fit(s.channels, vector_of<scalar_t, lane_bytes>(), sizeof(scalar_t), {&grad, &h, &grad_h});
    with_vector<scalar_t, lane_bytes>(fits, [&](auto vec) {
      dispatch_activations(s.pre_act, s.act, [&](auto pre, auto act) {
        const auto kernel = &backward_kernel<decltype(pre)::value, decltype(act)::value, scalar_t, acc_t, vec()>;
        const int columns = static_cast<int>(std::min<int64_t>(s.width, kMaxColumns));
        const auto t = tiling(s, vec(), 2, launch.ctas_per_wave(kernel, kLanes * columns));
        const int64_t groups = t.sample_groups * t.tiles;  // named first: nvcc 13 misparses the product in braces
        auto partials = at::empty({groups, 10, s.channels}, h.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
        launch(kernel, grid_of(t), dim3(kLanes, t.columns), s, t, grad.const_data_ptr<scalar_t>(),
               h.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
               bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, grad_h.mutable_data_ptr<scalar_t>(),
               partials.mutable_data_ptr<acc_t>());
        const int64_t blocks = (10 * s.channels + 255) / 256;
        launch(&sum_partials_kernel<scalar_t, acc_t>, dim3(static_cast<unsigned>(blocks)), dim3(256),
               partials.const_data_ptr<acc_t>(), groups, s.channels, grad_weight.mutable_data_ptr<scalar_t>(),
               grad_bias.mutable_data_ptr<scalar_t>());
      });
    });
  });
}

// The ops' bodies, on checked arguments. Launcher: `int64_t ctas_per_wave(kernel, threads)` (how many
// CTAs of `kernel` the device runs at once) and `void operator()(kernel, dim3 grid, dim3 block, args...)`.
// On the host: the outputs' allocation and two launches (three backward), no conversion of the weights.
template <typename Launcher>
at::Tensor dwconv_act(const DwconvActShape& s, const at::Tensor& h_in, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, Launcher&& launch) {
  const auto h = h_in.contiguous();
  auto out = at::empty_like(h, at::MemoryFormat::Contiguous);
  if (out.numel() > 0) {
    launch_forward(s, h, weight.contiguous(), bias ? bias->contiguous() : at::Tensor(), out, launch);
  }
  return out;
}

template <typename Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_act_backward(
    const DwconvActShape& s, const at::Tensor& grad_in, const at::Tensor& h_in, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, Launcher&& launch) {
  const auto h = h_in.contiguous();
  auto grad_h = at::empty_like(h, at::MemoryFormat::Contiguous);
  auto grad_weight = at::empty_like(weight, at::MemoryFormat::Contiguous);
  auto grad_bias = at::empty({s.channels}, weight.options());
  if (h.numel() == 0) {
    grad_weight.zero_();
    grad_bias.zero_();
  } else {
    launch_backward(s, grad_in.contiguous(), h, weight.contiguous(), bias ? bias->contiguous() : at::Tensor(), grad_h,
                    grad_weight, grad_bias, launch);
  }
  return {grad_h, grad_weight, grad_bias};
}

}  // namespace effkernels::stencil
