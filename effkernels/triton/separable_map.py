"""Triton kernel of effkernels::separable_map: a chain of two GEMMs per image plane, one launch.

Each program owns one (BLOCK_M, BLOCK_N) tile of one output plane. It streams x's plane in
(BLOCK_H, BLOCK_W) blocks: the first GEMM maps a band of BLOCK_H rows along the width
(x_band @ colsᵀ), the second folds that band into the tile (rows @ band), so the intermediate
never leaves registers and x is read straight from its own strides (any layout, uint8 included).
The per-channel affine and the output cast are the epilogue.
"""
import os

import torch
import triton
import triton.language as tl


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _configs():
    if _interpreted():  # the interpreter runs every config: keep one small one
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_H": 16, "BLOCK_W": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_H": bh, "BLOCK_W": bw}, num_warps=warps, num_stages=stages)
        for bm, bn, bh, bw, warps, stages in [
            (64, 64, 32, 32, 4, 3),
            (64, 64, 64, 32, 4, 3),
            (128, 64, 32, 32, 8, 3),
            (64, 128, 32, 32, 8, 3),
            (128, 128, 32, 32, 8, 2),
            (32, 32, 32, 32, 2, 3),
            (32, 64, 32, 64, 4, 3),
        ]
    ]


@triton.autotune(configs=_configs(), key=["H", "W", "OH", "OW", "K", "PRECISION"])
@triton.jit
def _separable_map_kernel(
    x_ptr, rows_ptr, cols_ptr, scale_ptr, shift_ptr, out_ptr,
    C, H, W, OH, OW,
    x_sn, x_sc, x_sh, x_sw,
    r_sn, r_sk, r_so, r_sh,
    c_sn, c_sk, c_so, c_sw,
    K: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # One 1-D grid: the tiles of a plane are neighbours, so a plane stays hot in L2.
    tiles_m = tl.cdiv(OH, BLOCK_M)
    tiles_n = tl.cdiv(OW, BLOCK_N)
    pid = tl.program_id(0)
    plane = pid // (tiles_m * tiles_n)
    tile = pid % (tiles_m * tiles_n)
    n = (plane // C).to(tl.int64)
    c = plane % C
    offs_m = (tile // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < OH
    mask_n = offs_n < OW

    acc_dtype = rows_ptr.dtype.element_ty
    x_plane = x_ptr + n * x_sn + c.to(tl.int64) * x_sc
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    for k in tl.static_range(K):
        row_ops = rows_ptr + n * r_sn + k * r_sk
        col_ops = cols_ptr + n * c_sn + k * c_sk
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            band = tl.zeros((BLOCK_H, BLOCK_N), dtype=acc_dtype)
            for w0 in range(0, W, BLOCK_W):
                offs_w = w0 + tl.arange(0, BLOCK_W)
                mask_w = offs_w < W
                x_block = tl.load(
                    x_plane + offs_h[:, None] * x_sh + offs_w[None, :] * x_sw,
                    mask=mask_h[:, None] & mask_w[None, :],
                    other=0,
                ).to(acc_dtype)
                col_block = tl.load(
                    col_ops + offs_w[:, None] * c_sw + offs_n[None, :] * c_so,
                    mask=mask_w[:, None] & mask_n[None, :],
                    other=0,
                )
                band = tl.dot(x_block, col_block, band, input_precision=PRECISION)
            row_block = tl.load(
                row_ops + offs_m[:, None] * r_so + offs_h[None, :] * r_sh,
                mask=mask_m[:, None] & mask_h[None, :],
                other=0,
            )
            acc = tl.dot(row_block, band, acc, input_precision=PRECISION)

    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + c)
    if HAS_SHIFT:
        acc = acc + tl.load(shift_ptr + c)
    out_plane = out_ptr + plane.to(tl.int64) * OH * OW
    tl.store(
        out_plane + offs_m[:, None] * OW + offs_n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


def _precision(acc_dtype: torch.dtype) -> str:
    """Full float32 accuracy by default (3 TF32 passes on tensor cores); 1 pass when torch allows TF32."""
    if acc_dtype == torch.float64:
        return "ieee"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def separable_map_triton(x, rows, cols, scale=None, shift=None, out_dtype=None):
    """Launch the kernel; arguments as effkernels.ops.separable_map, already checked."""
    n, c, h, w = x.shape
    k, oh, ow = rows.shape[1], rows.shape[2], cols.shape[2]
    if out_dtype is None:
        out_dtype = x.dtype if x.dtype.is_floating_point else rows.dtype
    out = torch.empty((n, c, oh, ow), dtype=out_dtype, device=x.device)
    if out.numel() == 0:
        return out
    # A single shared operator is read with a zero batch stride.
    r_sn = rows.stride(0) if rows.shape[0] > 1 else 0
    c_sn = cols.stride(0) if cols.shape[0] > 1 else 0

    def grid(meta):
        return (n * c * triton.cdiv(oh, meta["BLOCK_M"]) * triton.cdiv(ow, meta["BLOCK_N"]),)

    torch.library.wrap_triton(_separable_map_kernel)[grid](
        x, rows, cols,
        scale if scale is not None else rows,
        shift if shift is not None else rows,
        out,
        c, h, w, oh, ow,
        *x.stride(),
        r_sn, *rows.stride()[1:],
        c_sn, *cols.stride()[1:],
        K=k,
        HAS_SCALE=scale is not None,
        HAS_SHIFT=shift is not None,
        PRECISION=_precision(rows.dtype),
    )
    return out
