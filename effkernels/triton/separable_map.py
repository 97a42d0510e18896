"""Triton kernel of effkernels::separable_map: a chain of two tensor-core GEMMs per image plane.

Each program owns one (BLOCK_M, BLOCK_N) tile of one output plane. It streams x's plane in
(BLOCK_H, BLOCK_W) blocks: the first GEMM maps a band of BLOCK_H rows along the width
(x_band @ colsᵀ, fp32 accumulator), the second folds that band into the tile (rows @ band), so the
intermediate never leaves registers and x is read straight from its own strides (any layout, uint8
included). The rank-one term, the per-channel affine and the output cast are the epilogue.

Precision (chosen per call by `precision_parts`, documented there): the dots take bf16 operands
(2-D tl.dot, fp32 accumulation: Hopper wgmma / Ampere mma). uint8 values 0..255 and bf16 x are exact
in bf16. Operators and the intermediate are split into 1, 2 or 3 bf16 parts (bf16 output from uint8
x: 1, one pass per GEMM; float32 output: 3, float32 accuracy), and float64 (x or output) runs the
same structure with IEEE dots (input_precision="ieee"). The splits happen in registers after the
loads, so operators stay float32 in memory and any operator tensor works as is.
Normalised float32 output centres x first (`centres_input`), so that the tensor cores' truncated
sums do not carry the part of the plane that the shift cancels.

The rank-one term `(row_vᵀ x col_v) row_u col_uᵀ` (lowfreq_crop's imaginary part) is a weighted sum
of the plane, computed from the x blocks the program loads anyway (no extra memory traffic): x·col_v
per band row, then row_v over the band, one scalar, added as an outer product in the epilogue (not a
BLOCK_H × BLOCK_W float32 tile summed once at the end: 32 more registers per thread). With one bf16
part (the training path) x·col_v is a narrow tensor-core dot of the x block with [col_v, 0, ..., 0]
(RANK_ONE_N columns): summed on the CUDA cores it took 131-142 of the width loop's 303-320 sm_90
instructions per warp at bands 160 and 96, now 43-54 (Triton 3.8; 54-66 under 3.6; 2026-12-08),
for 25 % more tensor-core work in that loop; with more parts the dots cost several passes, so the
sum stays on the CUDA cores, in float32 as the rest of those paths.

Tiles: fixed by shape and precision, no autotuning (nothing to look up per call): the table in
`default_tiles`, chosen by perf/tune_separable_map.py on an H100 (one part) and by its sm_90 compile
report (several parts, their GPU sweep pending). Triton's blocks are powers of two,
so an output height between two of them (bands 160, 192) pads the second GEMM: a tile may take its
rows as BLOCK_M plus TAIL_M in a second accumulator that shares the band. With bf16 operators (the
training path) the kernel reads them as prepared once per plan, at half the bytes of float32.

Pipelining: Triton (3.6 of the GPU image, 3.8 here) does not software-pipeline a loop nested in
another by default, so with bf16 out the x and operator blocks of the inner (width) loop were
loaded synchronously before each wgmma (no cp.async in the sm_90 PTX). At 255 registers × 256
threads one program fills an SM's register file, so no other program hid that latency. The inner
loop now asks for `num_stages` stages itself (STAGES): at the training bands its loads are cp.async,
issued ahead of the dots (perf/tune_separable_map.py --sm90 counts them). Compiled as the JIT
specialises the training launch (unit strides constant, multiples of 16 marked), the bf16-out kernel
fits in 244-250 registers without spills, pipelined or not (Triton 3.8 / 3.6, band 160);
num_stages=1 gives back the unpipelined loop, and the tuner times both (GPU time not yet measured,
2026-11-23).
"""
import os

import torch
import triton
import triton.language as tl

RANK_ONE_N = tl.constexpr(16)  # columns of the rank-one term's dot: col_v and zeros (tl.dot's narrowest operand)


def precision_parts(x_dtype: torch.dtype, out_dtype: torch.dtype, centred: bool = False) -> tuple[int, int]:
    """The automatic precision rule of the Triton kernel: (operator parts, x parts).

    Operators, the intermediate band and (when not exact) x go into the tensor cores as sums of
    `parts` bf16 numbers (v ≈ v0 + v1 + v2, each part the bf16 rounding of what the previous ones
    left), and the partial products v_i·w_j with i + j < parts are accumulated in float32.
    Residual per operand: ~2^-9 (1 part), ~2^-17 (2), ~2^-25 (3, float32's own precision).
    - float64 x or float64 output: 0, IEEE dots in the operators' dtype, no tensor cores.
    - float32 output: 3 parts (6 tensor-core passes per GEMM, 3 for the first one from uint8/bf16
      x), float32 accuracy even where the output cancels (normalisation, random-sign operators):
      2 parts measured 1.3e-5..5e-5 relative error on such cases, over the 1e-5 float32 bound.
    - bf16 output from uint8 x, the training path: 1 part, one pass per GEMM; error ~3e-3..9e-3
      relative, as the plain bf16 cuBLAS formulation, within bf16 tolerance (1e-2).
    - other half-precision outputs (bf16 from floating x, float16): 2 parts (3 passes), so the
      output's own rounding dominates.
    x parts: 1 for uint8 and bf16 x (exact in bf16), else as many as the operators, at most 2 for
    float16 x (11 significant bits fit in two bf16 parts). centred (see `centres_input`): floating
    x - centre is no longer exact in bf16, so floating x takes as many parts as the operators; uint8
    x is centred on an integer and stays exact.
    """
    if x_dtype == torch.float64 or out_dtype == torch.float64:
        return 0, 0
    if out_dtype == torch.float32:
        parts = 3
    elif out_dtype == torch.bfloat16 and x_dtype == torch.uint8:
        parts = 1
    else:
        parts = 2
    if x_dtype == torch.uint8 or (x_dtype == torch.bfloat16 and not centred):
        return parts, 1
    return parts, min(parts, 2) if x_dtype == torch.float16 and not centred else parts


def centres_input(parts: int, has_shift: bool) -> bool:
    """Whether the kernel subtracts a centre from x before its GEMMs (float32 output, shift given).

    Normalisation cancels: a plane near the channel mean maps to values much smaller than the
    GEMMs' sums (uint8 x ~128 against outputs ~0.1). Tensor cores truncate float32 sums to their
    largest term, so their error scales with those sums, not with the output: on an H100 a float32
    output was 1.02e-5 off where the bound is 1e-5 (9×33 -> 3×2, 2026-11-23). So each program maps
    x - centre, with centre the constant plane its output tile comes closest to 0 for (least
    squares: -shift·ΣS / (scale·ΣS²), S the tile's map of a plane of ones; -shift / scale for the
    maps that keep constants: crops, resizes, flips, low-pass filters), rounded to an integer in
    0..255 for uint8 x so that x - centre stays exact in bf16. The epilogue adds the centre's image
    back, `scale·centre·S + shift`, in float64, rounded once: the result is the same map whatever
    the centre, and the sums the tensor cores see shrink to the plane's deviation from it. bf16
    output (one bf16 part, error ~2^-9) gains nothing from it.
    """
    return parts == 3 and has_shift


@triton.jit
def _bf16(v, INTERPRETED: tl.constexpr):
    """float32 v rounded to bf16, to nearest even (the GPU's cvt.rn). triton 3.8's interpreter
    truncates instead, with or without fp_downcast_rounding="rtne", so there the rounding is done
    on the bits (finite values only) and the final conversion is exact."""
    if v.dtype == tl.bfloat16:
        return v
    if INTERPRETED:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    return v.to(tl.bfloat16)


@triton.jit
def _split_bf16(v, PARTS: tl.constexpr, INTERPRETED: tl.constexpr):
    """float32 v as up to three bf16 parts v0 + v1 + v2 (unused parts repeat v0)."""
    p0 = _bf16(v, INTERPRETED)
    p1 = p0
    p2 = p0
    if PARTS >= 2:
        rest = v - p0.to(tl.float32)
        p1 = _bf16(rest, INTERPRETED)
        if PARTS == 3:
            p2 = _bf16(rest - p1.to(tl.float32), INTERPRETED)
    return p0, p1, p2


@triton.jit
def _mma(a, b, acc, INTERPRETED: tl.constexpr):
    """acc + a @ b for bf16 a, b with float32 accumulation (a tensor-core dot on the GPU).

    triton 3.8's interpreter multiplies bf16 operands as their raw uint16 bits, so there the
    operands go up to float32 first: products of bf16 values are exact in float32, so the result
    is the tensor-core result up to the order of the float32 additions.
    """
    if INTERPRETED:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def _dot_parts(a, b, acc, A_PARTS: tl.constexpr, PARTS: tl.constexpr, INTERPRETED: tl.constexpr):
    """acc + a @ b: a in A_PARTS and b in PARTS bf16 parts, products a_i·b_j with i + j < PARTS
    (A_PARTS <= PARTS); PARTS = 0: one IEEE dot in the operands' own dtype.

    With several parts, the correction products (2^-8 and 2^-16 of the leading one) are summed
    first, smallest first, into a fresh accumulator, then the leading product a_0·b_0 onto them,
    and the sum joins acc in one register add. Tensor cores truncate their float32 sums to the
    largest term's exponent: summed into acc, each correction dot would be truncated against the
    whole running total (H/16 chunks × 6 passes of one-sided error); this way truncation acts on
    one block's own sum, and the running total is rounded to nearest."""
    if PARTS == 0:
        acc = tl.dot(a, b, acc, input_precision="ieee", out_dtype=acc.dtype)
    elif PARTS == 1:
        acc = _mma(_bf16(a, INTERPRETED), _bf16(b, INTERPRETED), acc, INTERPRETED)
    else:
        a0, a1, a2 = _split_bf16(a, A_PARTS, INTERPRETED)
        b0, b1, b2 = _split_bf16(b, PARTS, INTERPRETED)
        block = tl.zeros_like(acc)
        if PARTS == 3:
            if A_PARTS == 3:
                block = _mma(a2, b0, block, INTERPRETED)
            if A_PARTS >= 2:
                block = _mma(a1, b1, block, INTERPRETED)
            block = _mma(a0, b2, block, INTERPRETED)
        if A_PARTS >= 2:
            block = _mma(a1, b0, block, INTERPRETED)
        block = _mma(a0, b1, block, INTERPRETED)
        acc += _mma(a0, b0, block, INTERPRETED)
    return acc


@triton.jit
def _row_sums(ptr, offs, mask, stride_out, stride_in, size, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Σ over `size` inputs of the operator rows at offs, in DTYPE from each element on."""
    total = tl.zeros(offs.shape, dtype=DTYPE)
    for i0 in range(0, size, BLOCK):
        offs_i = i0 + tl.arange(0, BLOCK)
        block = tl.load(ptr + offs[:, None] * stride_out + offs_i[None, :] * stride_in,
                        mask=mask[:, None] & (offs_i < size)[None, :], other=0)
        total += tl.sum(block.to(DTYPE), axis=1)
    return total


@triton.jit
def _vector_sum(ptr, size, BLOCK: tl.constexpr, DTYPE: tl.constexpr):
    """Σ of a contiguous float vector of `size`, in DTYPE."""
    total = tl.zeros((BLOCK,), dtype=DTYPE)
    for i0 in range(0, size, BLOCK):
        offs = i0 + tl.arange(0, BLOCK)
        total += tl.load(ptr + offs, mask=offs < size, other=0).to(DTYPE)
    return tl.sum(total, axis=0)


@triton.jit
def _ones_map(rows_ptr, cols_ptr, ru_ptr, rv_ptr, cu_ptr, cv_ptr, H, W, r_so, r_sh, c_so, c_sw,
              offs_m, mask_m, offs_n, mask_n, K: tl.constexpr, r_sk, c_sk, HAS_RANK_ONE: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
              DTYPE: tl.constexpr):
    """The (BLOCK_M, BLOCK_N) tile of the map of a plane of ones, before the affine, computed in DTYPE
    from each operator element on: Σ_k (rows_k·1) ⊗ (cols_k·1), plus (row_v·1)(col_v·1) row_u ⊗ col_u.
    Pointers at plane n's operators; masked rows and columns give 0. The centre's image added back
    takes float64: it is of x's size and cancels against the shift, so float32 sums' rounding (2^-24
    of it) would show in outputs hundreds of times smaller (8 in 300 random draws over the 1e-5 bound
    of test_float32_output_where_the_shift_cancels, 2026-12-08). The centre itself may be any value,
    so float32 serves there."""
    ones = tl.zeros((BLOCK_M, BLOCK_N), dtype=DTYPE)
    for k in tl.static_range(K):
        row_sums = _row_sums(rows_ptr + k * r_sk, offs_m, mask_m, r_so, r_sh, H, BLOCK_H, DTYPE)
        col_sums = _row_sums(cols_ptr + k * c_sk, offs_n, mask_n, c_so, c_sw, W, BLOCK_W, DTYPE)
        ones += row_sums[:, None] * col_sums[None, :]
    if HAS_RANK_ONE:
        weight = _vector_sum(rv_ptr, H, BLOCK_H, DTYPE) * _vector_sum(cv_ptr, W, BLOCK_W, DTYPE)
        row_u = tl.load(ru_ptr + offs_m, mask=mask_m, other=0).to(DTYPE)
        col_u = tl.load(cu_ptr + offs_n, mask=mask_n, other=0).to(DTYPE)
        ones += weight * (row_u[:, None] * col_u[None, :])
    return ones


@triton.jit
def _finish_tile(acc, offs_m, mask_m, offs_n, mask_n, weight, centre, c, plane, rows_n, cols_n, ru_n, rv_n, cu_n,
                 cv_n, scale_ptr, shift_ptr, out_ptr, H, W, OH, OW, r_so, r_sh, c_so, c_sw, K: tl.constexpr, r_sk, c_sk,
                 HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_RANK_ONE: tl.constexpr, CENTRE: tl.constexpr,
                 INTERPRETED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_W: tl.constexpr):
    """The epilogue of one (BLOCK_M, BLOCK_N) accumulator: the rank-one term, the per-channel affine
    (with the centre's image where x was centred), the cast and the store."""
    acc_dtype = acc.dtype
    if HAS_RANK_ONE:
        row_u = tl.load(ru_n + offs_m, mask=mask_m, other=0)
        col_u = tl.load(cu_n + offs_n, mask=mask_n, other=0)
        acc += weight * (row_u[:, None] * col_u[None, :])
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + c)
    if CENTRE:  # + the centre plane's image: scale·centre·ones + shift, in float64, rounded once
        ones = _ones_map(rows_n, cols_n, ru_n, rv_n, cu_n, cv_n, H, W, r_so, r_sh, c_so, c_sw, offs_m, mask_m,
                         offs_n, mask_n, K, r_sk, c_sk, HAS_RANK_ONE, BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_W, tl.float64)
        offset = centre.to(tl.float64) * ones
        if HAS_SCALE:
            offset *= tl.load(scale_ptr + c).to(tl.float64)
        acc += (offset + tl.load(shift_ptr + c).to(tl.float64)).to(acc_dtype)
    elif HAS_SHIFT:
        acc = acc + tl.load(shift_ptr + c)
    if out_ptr.dtype.element_ty == tl.bfloat16:  # via float32: the interpreter casts only that to bf16
        acc = _bf16(acc.to(tl.float32), INTERPRETED)
    out_plane = out_ptr + plane.to(tl.int64) * OH * OW
    tl.store(
        out_plane + offs_m[:, None] * OW + offs_n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


@triton.jit
def _separable_map_kernel(
    x_ptr, rows_ptr, cols_ptr, scale_ptr, shift_ptr, ru_ptr, rv_ptr, cu_ptr, cv_ptr, support_ptr, out_ptr,
    C, H, W, OH, OW,
    x_sn, x_sc, x_sh, x_sw,
    r_sn, r_sk, r_so, r_sh,
    c_sn, c_sk, c_so, c_sw,
    ru_sn, rv_sn, cu_sn, cv_sn,
    K: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr,
    HAS_RANK_ONE: tl.constexpr,
    HAS_SUPPORT: tl.constexpr,
    CENTRE: tl.constexpr,
    PARTS: tl.constexpr,
    X_PARTS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    TAIL_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    STAGES: tl.constexpr,
):
    # One 1-D grid: the tiles of a plane are neighbours, so a plane stays hot in L2. A tile's rows are
    # BLOCK_M rows plus, when TAIL_M > 0, TAIL_M more in a second accumulator (see default_tiles).
    tiles_m = tl.cdiv(OH, BLOCK_M + TAIL_M)
    tiles_n = tl.cdiv(OW, BLOCK_N)
    pid = tl.program_id(0)
    plane = pid // (tiles_m * tiles_n)
    tile = pid % (tiles_m * tiles_n)
    n = (plane // C).to(tl.int64)
    c = plane % C
    offs_m = (tile // tiles_n) * (BLOCK_M + TAIL_M) + tl.arange(0, BLOCK_M)
    offs_n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < OH
    mask_n = offs_n < OW
    if TAIL_M > 0:
        offs_t = (tile // tiles_n) * (BLOCK_M + TAIL_M) + BLOCK_M + tl.arange(0, TAIL_M)
        mask_t = offs_t < OH

    acc_dtype = ACC_DTYPE
    x_plane = x_ptr + n * x_sn + c.to(tl.int64) * x_sc
    # Sample n's operators and rank-one factors (a shared one has batch stride 0).
    rows_n, cols_n = rows_ptr + n * r_sn, cols_ptr + n * c_sn
    ru_n, rv_n, cu_n, cv_n = ru_ptr + n * ru_sn, rv_ptr + n * rv_sn, cu_ptr + n * cu_sn, cv_ptr + n * cv_sn
    centre = tl.zeros((), dtype=tl.float32)
    if CENTRE:  # the constant plane the tile maps closest to output 0: see centres_input
        ones = _ones_map(rows_n, cols_n, ru_n, rv_n, cu_n, cv_n, H, W, r_so, r_sh, c_so, c_sw, offs_m, mask_m,
                         offs_n, mask_n, K, r_sk, c_sk, HAS_RANK_ONE, BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_W, tl.float32)
        gain = tl.sum(tl.sum(ones * ones, axis=1), axis=0)
        total = tl.sum(tl.sum(ones, axis=1), axis=0)
        if TAIL_M > 0:
            ones = _ones_map(rows_n, cols_n, ru_n, rv_n, cu_n, cv_n, H, W, r_so, r_sh, c_so, c_sw, offs_t, mask_t,
                             offs_n, mask_n, K, r_sk, c_sk, HAS_RANK_ONE, TAIL_M, BLOCK_N, BLOCK_H, BLOCK_W, tl.float32)
            gain += tl.sum(tl.sum(ones * ones, axis=1), axis=0)
            total += tl.sum(tl.sum(ones, axis=1), axis=0)
        centre = -tl.load(shift_ptr + c) * total
        if HAS_SCALE:
            gain *= tl.load(scale_ptr + c)
        centre = tl.where(gain != 0, centre / tl.where(gain != 0, gain, 1.0), 0.0)
        if x_ptr.dtype.element_ty == tl.uint8:  # an integer, so that x - centre stays exact in bf16
            centre = tl.minimum(tl.maximum(tl.floor(centre + 0.5), 0.0), 255.0)
    # The blocks of x the operators can reach: all of it, or sample n's support (see prepare_separable_map).
    h_first, h_end, w_first, w_end = 0, H, 0, W
    if HAS_SUPPORT:
        h_first = tl.load(support_ptr + n * 4) // BLOCK_H * BLOCK_H
        h_end = tl.load(support_ptr + n * 4 + 1)
        w_first = tl.load(support_ptr + n * 4 + 2) // BLOCK_W * BLOCK_W
        w_end = tl.load(support_ptr + n * 4 + 3)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    if TAIL_M > 0:
        acc_tail = tl.zeros((TAIL_M, BLOCK_N), dtype=acc_dtype)
    weight = tl.zeros((), dtype=acc_dtype)  # the rank-one term's Σ x ∘ (row_v ⊗ col_v)
    for k in tl.static_range(K):
        row_ops = rows_n + k * r_sk
        col_ops = cols_n + k * c_sk
        for h0 in range(h_first, h_end, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            if HAS_RANK_ONE and k == 0:
                row_v = tl.load(rv_n + offs_h, mask=mask_h, other=0)
            band = tl.zeros((BLOCK_H, BLOCK_N), dtype=acc_dtype)
            # x·col_v over the band's rows, in column 0 (see the module docstring)
            x_col_v = tl.zeros((BLOCK_H, RANK_ONE_N if PARTS == 1 else 1), dtype=acc_dtype)
            for w0 in tl.range(w_first, w_end, BLOCK_W, num_stages=STAGES):  # pipelined: see the module docstring
                offs_w = w0 + tl.arange(0, BLOCK_W)
                mask_w = offs_w < W
                x_block = tl.load(
                    x_plane + offs_h[:, None] * x_sh + offs_w[None, :] * x_sw,
                    mask=mask_h[:, None] & mask_w[None, :],
                    other=0,
                ).to(acc_dtype)
                if CENTRE:  # masked-out x becomes -centre, but meets only masked (zero) operator entries
                    x_block -= centre
                col_block = tl.load(
                    col_ops + offs_w[:, None] * c_sw + offs_n[None, :] * c_so,
                    mask=mask_w[:, None] & mask_n[None, :],
                    other=0,
                )
                band = _dot_parts(x_block, col_block, band, X_PARTS, PARTS, INTERPRETED)
                if HAS_RANK_ONE and k == 0:
                    col_v = tl.load(cv_n + offs_w, mask=mask_w, other=0)
                    if PARTS == 1:  # a tensor-core dot with [col_v, 0, ..., 0]
                        col_v = tl.where(tl.arange(0, RANK_ONE_N)[None, :] == 0, col_v[:, None], 0)
                        x_col_v = _dot_parts(x_block, col_v, x_col_v, X_PARTS, PARTS, INTERPRETED)
                    else:
                        x_col_v += tl.sum(x_block * col_v[None, :], axis=1, keep_dims=True)
            if HAS_RANK_ONE and k == 0:
                weight += tl.sum(tl.sum(x_col_v, axis=1) * row_v, axis=0)
            row_block = tl.load(
                row_ops + offs_m[:, None] * r_so + offs_h[None, :] * r_sh,
                mask=mask_m[:, None] & mask_h[None, :],
                other=0,
            )
            acc = _dot_parts(row_block, band, acc, PARTS, PARTS, INTERPRETED)
            if TAIL_M > 0:
                row_block = tl.load(
                    row_ops + offs_t[:, None] * r_so + offs_h[None, :] * r_sh,
                    mask=mask_t[:, None] & mask_h[None, :],
                    other=0,
                )
                acc_tail = _dot_parts(row_block, band, acc_tail, PARTS, PARTS, INTERPRETED)

    _finish_tile(acc, offs_m, mask_m, offs_n, mask_n, weight, centre, c, plane, rows_n, cols_n, ru_n, rv_n, cu_n,
                 cv_n, scale_ptr, shift_ptr, out_ptr, H, W, OH, OW, r_so, r_sh, c_so, c_sw, K, r_sk, c_sk,
                 HAS_SCALE, HAS_SHIFT, HAS_RANK_ONE, CENTRE, INTERPRETED, BLOCK_M, BLOCK_N, BLOCK_H, BLOCK_W)
    if TAIL_M > 0:
        _finish_tile(acc_tail, offs_t, mask_t, offs_n, mask_n, weight, centre, c, plane, rows_n, cols_n, ru_n, rv_n,
                     cu_n, cv_n, scale_ptr, shift_ptr, out_ptr, H, W, OH, OW, r_so, r_sh, c_so, c_sw, K, r_sk, c_sk,
                     HAS_SCALE, HAS_SHIFT, HAS_RANK_ONE, CENTRE, INTERPRETED, TAIL_M, BLOCK_N, BLOCK_H, BLOCK_W)


def _block(size: int, cap: int) -> int:
    return min(cap, max(16, triton.next_power_of_2(size)))


def default_tiles(oh, ow, h, w, parts) -> dict:
    """The launch shape for an (h, w) -> (oh, ow) map with `parts` bf16 operator parts: block sizes,
    warps and pipeline stages.

    One part (bf16 out, the training path), as perf/tune_separable_map.py measured it fastest on an
    H100 (2026-11-23, uint8 224² -> 96/160/192, batch 256): a plane's whole output height in one tile
    (BLOCK_M up to 256), so the first GEMM runs once per column tile.
    Two and three parts (half-precision out from floating x, the input pipeline's crop; float32 out)
    hold two and three bf16 copies of each dot operand, and the corrections' own accumulator: the
    shape measured best for float32 out on 2026-11-23 (128 × 64 tiles, 64-wide blocks, one
    warpgroup) spills 21-239 instructions per loop iteration in today's kernel (sm_90, Triton 3.6
    and 3.8, 2026-12-08; split-precision dots that sum their corrections apart, pipelined loads,
    centring: all came after that sweep). So these take two warpgroups and 32-wide width blocks
    (three parts also 32-wide column blocks): the largest tiles whose sm_90 compile keeps every
    register in its loops and every dot on wgmma (perf/tune_separable_map.py --sm90; a test guards
    it). GPU time pending: the tuner times them against the rest of its float32 sweep.
    float64's IEEE dots keep the smallest tiles. TAIL_M: rows of a second accumulator below the
    first BLOCK_M, so that a tile can cover a height between two powers of two (128 + 64 rows for
    bands 129..192) instead of padding the second GEMM to the next one (256)."""
    if parts == 1:
        block_m = _block(oh, 256)
        return dict(BLOCK_M=block_m, TAIL_M=0, BLOCK_N=_block(ow, 128 if block_m <= 128 else 64),
                    BLOCK_H=_block(h, 128), BLOCK_W=_block(w, 64), num_warps=8, num_stages=3)
    block_m = _block(oh, 128)
    if parts == 0:
        return dict(BLOCK_M=block_m, TAIL_M=0, BLOCK_N=_block(ow, 64), BLOCK_H=_block(h, 64), BLOCK_W=_block(w, 64),
                    num_warps=8 if block_m > 64 else 4, num_stages=3)
    return dict(BLOCK_M=block_m, TAIL_M=0, BLOCK_N=_block(ow, 64 if parts == 2 else 32), BLOCK_H=_block(h, 64),
                BLOCK_W=_block(w, 32), num_warps=8, num_stages=3)


def prepare_separable_map(x_shape, x_dtype, rows, cols, scale=None, shift=None, out_dtype=None, rank_one=None,
                          tiles=None, support=None):
    """Everything about a launch that does not depend on x's data: returns `launch(x) -> out`.

    Arguments as effkernels.ops.separable_map, already checked; x is only described by its shape
    and dtype. The returned closure allocates the output and launches the raw kernel: no checks,
    no autotuning, no wrap_triton (a registered kernel of a custom op is opaque to torch.compile
    and always runs on real tensors). lowfreq_crop caches these closures per configuration.
    With one bf16 part (the training path) the operators are rounded to bf16 here, once, so the
    kernel reads half the bytes and converts nothing. tiles: overrides of `default_tiles`
    (benchmarks compare launch shapes with it). support: None, or an (N, 4) int32 tensor on the
    operators' device of per-sample input bounds (row start, row end, column start, column end)
    outside which every operator and rank-one factor of that sample is zero (a crop box): the
    GEMMs then skip the blocks of x outside them. The kernel reads it at each launch.
    """
    n, c, h, w = x_shape
    k, oh, ow = rows.shape[1], rows.shape[2], cols.shape[2]
    if out_dtype is None:
        out_dtype = x_dtype if x_dtype.is_floating_point else rows.dtype
    device = rows.device
    parts = precision_parts(x_dtype, out_dtype)[0]
    centre = centres_input(parts, shift is not None)
    x_parts = precision_parts(x_dtype, out_dtype, centre)[1]
    launch_shape = {**default_tiles(oh, ow, h, w, parts), **(tiles or {})}
    tile_rows = launch_shape["BLOCK_M"] + launch_shape["TAIL_M"]
    grid = (n * c * triton.cdiv(oh, tile_rows) * triton.cdiv(ow, launch_shape["BLOCK_N"]),)
    acc_dtype = rows.dtype if parts == 0 else torch.float32
    if parts == 1:
        rows, cols = rows.to(torch.bfloat16), cols.to(torch.bfloat16)
    has_rank_one = rank_one is not None
    if has_rank_one:
        rank_one = [f.contiguous() for f in rank_one]
        factor_strides = [f.stride(0) if f.shape[0] > 1 else 0 for f in rank_one]
    else:
        rank_one, factor_strides = [rows] * 4, [0] * 4
    # A single shared operator is read with a zero batch stride.
    operands = (
        rows, cols,
        scale if scale is not None else rows,
        shift if shift is not None else rows,
        *rank_one,
        support if support is not None else rows,
    )
    shape_args = (c, h, w, oh, ow)
    operator_strides = (
        rows.stride(0) if rows.shape[0] > 1 else 0, *rows.stride()[1:],
        cols.stride(0) if cols.shape[0] > 1 else 0, *cols.stride()[1:],
        *factor_strides,
    )
    meta = dict(
        K=k,
        HAS_SCALE=scale is not None,
        HAS_SHIFT=shift is not None,
        HAS_RANK_ONE=has_rank_one,
        HAS_SUPPORT=support is not None,
        CENTRE=centre,
        PARTS=parts,
        X_PARTS=x_parts,
        ACC_DTYPE=tl.float64 if acc_dtype == torch.float64 else tl.float32,
        INTERPRETED=os.environ.get("TRITON_INTERPRET") == "1",
        STAGES=launch_shape["num_stages"],
        **launch_shape,
    )
    kernel = _separable_map_kernel[grid]
    empty_args = ((n, c, oh, ow),)
    empty_kwargs = dict(dtype=out_dtype, device=device)

    def launch(x):
        out = torch.empty(*empty_args, **empty_kwargs)
        if grid[0]:
            kernel(x, *operands, out, *shape_args, *x.stride(), *operator_strides, **meta)
        return out

    return launch


def separable_map_triton(x, rows, cols, scale=None, shift=None, out_dtype=None, row_u=None, row_v=None, col_u=None,
                         col_v=None):
    """The op's kernel: arguments as torch.ops.effkernels.separable_map, already checked."""
    rank_one = None if row_u is None else (row_u, row_v, col_u, col_v)
    return prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one)(x)
