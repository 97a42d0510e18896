"""Triton kernel that builds lowfreq_crop_augmented's per-sample operators in one launch.

For sample n and one axis of length L (rows: the box's top and height over H; cols: its left and
width over W, mirrored when flip[n]) the composed operator is `L_axis @ C_n`: L_axis is the shared
(band_out [+ 1], L) low-frequency crop + resize operator (the extra row is the rank-one term's
input-side factor v, for even bands) and C_n = `operators.resize_operator(box, L, L, offset)` is
the crop of the box resized back to length L, antialiased bilinear.

Structure used (and why the result is exact): a box is never longer than its axis, so C_n
upsamples or is the identity: its filter scale is 1, and row i is the triangle
`max(0, 1 - |(s + 0.5) - c_i|)` over the box's source pixels s, centred at
`c_i = (box / L) * (i + 0.5)`, clipped to [0, box) and divided by its row sum. The triangle's open
support has length 2, so a row has at most two non-zero taps, s = ⌊c_i - 0.5⌋ and the next one
(one tap, weight 1, where the other falls outside the box; the identity when box == L). Column j
of C_n (box pixel s = j - offset) is therefore reached only by the rows i whose centres lie within
1 of s + 0.5, a contiguous range found with integer arithmetic, so each composed element is a
short gather over those rows: `out[o, j] = Σ_i L_axis[o, i'] C_n[i, j]` (i' = L - 1 - i when
mirrored: the flip reverses C_n's rows). No atomics, a fixed summation order: deterministic.
The weights are computed in float64 with resize_operator's own operations in its own order, so
they are bit-identical to it (the differences involved are exact, see `_tap_weight`); only the
final products are summed in the accumulation dtype, in a different order than a matmul.

The range is closed at both ends, in integers (a row whose centre lies exactly 1 away has weight 0
and may be visited for nothing, never missed): rows i with
`(2s - 1)·L <= (2i + 1)·box <= (2s + 3)·L`, i.e. about 2·L / box + 1 rows per column (a few for
RandomResizedCrop's boxes, L for a 1-pixel box, whose single column every row reaches).
"""
import os

import torch
import triton
import triton.language as tl

from .separable_map import _bf16

# No FMA contraction: the weights' float64 steps then round as resize_operator's do. Block sizes and
# warps are untuned (no GPU measurement yet).
LAUNCH_OPTIONS = dict(num_warps=4, enable_fp_fusion=False)
BOX_FIELDS = 5  # per sample, as int32 (ops._packed_boxes): top, left, height, width, flip (0 or 1)


@triton.jit
def _tap_weight(s, centre):
    """resize_operator's unnormalised weight of box pixel s (int) for an output centred at centre
    (float64): `max(0, 1 - |(s + 0.5) - centre|)`. s + 0.5 and the difference are exact (both
    operands are multiples of centre's ulp, the result is below 2 in magnitude), so 1 - |d| is too."""
    return tl.maximum(1.0 - tl.abs((s.to(tl.float64) + 0.5) - centre), 0.0)


@triton.jit
def _row_sum(centre, box):
    """The sum of row i of the crop-resize matrix: its (at most) two taps inside [0, box).
    ⌊centre - 0.5⌋ is exact (centre - 0.5 is exact wherever it is near an integer)."""
    first = tl.floor(centre - 0.5).to(tl.int32)
    second = first + 1
    total = tl.where((first >= 0) & (first < box), _tap_weight(first, centre), 0.0)
    return total + tl.where((second >= 0) & (second < box), _tap_weight(second, centre), 0.0)


@triton.jit
def _build_axis(
    lowfreq_ptr, op_ptr, v_ptr, boxes_ptr, n, tile,
    LENGTH, OUT, box_sn, lf_so, op_sn, op_so, v_sn,
    OFFSET_FIELD: tl.constexpr,
    SIZE_FIELD: tl.constexpr,
    MIRRORABLE: tl.constexpr,
    HAS_V: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """One (BLOCK_O, BLOCK_J) tile of sample n's composed operator for one axis: rows o < OUT go
    to op_ptr (the operator's dtype), row OUT (HAS_V) to v_ptr (ACC_DTYPE)."""
    rows_total = OUT
    if HAS_V:
        rows_total = OUT + 1
    tiles_j = tl.cdiv(LENGTH, BLOCK_J)
    tile_exists = tile < tl.cdiv(rows_total, BLOCK_O) * tiles_j  # the grid covers the larger axis
    offs_o = (tile // tiles_j) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_j = (tile % tiles_j) * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_o = offs_o < rows_total
    mask_j = (offs_j < LENGTH) & tile_exists

    box_ptr = boxes_ptr + n * box_sn
    offset = tl.load(box_ptr + OFFSET_FIELD)
    box = tl.load(box_ptr + SIZE_FIELD)
    s = offs_j - offset  # the box pixel that output column j reads
    inside = mask_j & (s >= 0) & (s < box)
    # Rows i with (2s - 1)·L <= (2i + 1)·box <= (2s + 3)·L; the lower numerator is clamped at 0 so
    # that integer division rounds the same way on the GPU and in the interpreter.
    first_row = (tl.maximum((2 * s - 1) * LENGTH - box, 0) + 2 * box - 1) // (2 * box)
    last_row = tl.minimum(((2 * s + 3) * LENGTH - box) // (2 * box), LENGTH - 1)
    count = tl.where(inside, last_row - first_row + 1, 0)
    steps = tl.max(count, axis=0)

    scale = box.to(tl.float64) / LENGTH  # resize_operator's in_size / out_size (an IEEE division)
    acc = tl.zeros((BLOCK_O, BLOCK_J), dtype=ACC_DTYPE)
    for k in range(0, steps):
        row = first_row + k
        reaches = k < count
        centre = scale * (row.to(tl.float64) + 0.5)
        row_sum = tl.where(reaches, _row_sum(centre, box), 1.0)  # a row past the range may have no tap
        weight = tl.where(reaches, _tap_weight(s, centre) / row_sum, 0.0).to(ACC_DTYPE)
        lowfreq_col = row
        if MIRRORABLE:  # the flip reverses C_n's rows: read L_axis mirrored
            lowfreq_col = tl.where(tl.load(box_ptr + 4) != 0, LENGTH - 1 - row, row)
        lowfreq = tl.load(
            lowfreq_ptr + offs_o[:, None] * lf_so + lowfreq_col[None, :],
            mask=mask_o[:, None] & reaches[None, :],
            other=0,
        )
        acc += lowfreq * weight[None, :]

    n64 = n.to(tl.int64)
    is_op = offs_o < OUT
    op_values = acc
    if op_ptr.dtype.element_ty == tl.bfloat16:  # via float32: the interpreter rounds only that to bf16
        op_values = _bf16(acc.to(tl.float32), INTERPRETED)
    tl.store(
        op_ptr + n64 * op_sn + offs_o[:, None] * op_so + offs_j[None, :],
        op_values.to(op_ptr.dtype.element_ty),
        mask=(is_op & mask_o)[:, None] & mask_j[None, :],
    )
    if HAS_V:
        is_v = offs_o == OUT
        tl.store(
            v_ptr + n64 * v_sn + offs_o[:, None] * 0 + offs_j[None, :],
            acc.to(v_ptr.dtype.element_ty),
            mask=is_v[:, None] & mask_j[None, :],
        )


@triton.jit
def _augmented_operators_kernel(
    boxes_ptr,
    row_lowfreq_ptr, rows_ptr, row_v_ptr,
    col_lowfreq_ptr, cols_ptr, col_v_ptr,
    H, W, OH, OW, box_sn,
    rlf_so, rows_sn, rows_so, rv_sn,
    clf_so, cols_sn, cols_so, cv_sn,
    HAS_V: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    # Grid: (tiles of the larger axis, samples, 2 axes); a program past its axis's tiles does nothing.
    tile = tl.program_id(0)
    n = tl.program_id(1)
    if tl.program_id(2) == 0:
        _build_axis(row_lowfreq_ptr, rows_ptr, row_v_ptr, boxes_ptr, n, tile, H, OH, box_sn, rlf_so, rows_sn, rows_so, rv_sn,
                    OFFSET_FIELD=0, SIZE_FIELD=2, MIRRORABLE=False, HAS_V=HAS_V, ACC_DTYPE=ACC_DTYPE,
                    INTERPRETED=INTERPRETED, BLOCK_O=BLOCK_O, BLOCK_J=BLOCK_J)
    else:
        _build_axis(col_lowfreq_ptr, cols_ptr, col_v_ptr, boxes_ptr, n, tile, W, OW, box_sn, clf_so, cols_sn, cols_so, cv_sn,
                    OFFSET_FIELD=1, SIZE_FIELD=3, MIRRORABLE=True, HAS_V=HAS_V, ACC_DTYPE=ACC_DTYPE,
                    INTERPRETED=INTERPRETED, BLOCK_O=BLOCK_O, BLOCK_J=BLOCK_J)


def _tile_count(out_rows: int, length: int, block_o: int, block_j: int) -> int:
    return triton.cdiv(out_rows, block_o) * triton.cdiv(length, block_j)


def prepare_augmented_operators(row_lowfreq, col_lowfreq, rows, cols, row_v=None, col_v=None, block_o=16, block_j=64):
    """`build(boxes)`: a launch that writes the per-sample composed operators into the given tensors.

    row_lowfreq (OH [+ 1], H) and col_lowfreq (OW [+ 1], W): the shared lowfreq axis operators in
    the accumulation dtype (float32, or float64), with the rank-one factor v as the last row when
    row_v/col_v are given. rows (N, 1, OH, H) and cols (N, 1, OW, W): outputs in the dtype the
    separable_map launch reads (the accumulation dtype, or bf16), unit stride along the last axis;
    row_v (N, H), col_v (N, W): the per-sample factors, in the accumulation dtype. boxes: (N, 5)
    contiguous int32 on the same device, (top, left, height, width, flip) per sample, boxes inside
    the image with positive sides (the caller checks them). Everything but the boxes is bound here,
    so a call only launches the kernel.
    """
    n, _, oh, h = rows.shape
    ow, w = cols.shape[2], cols.shape[3]
    has_v = row_v is not None
    acc_dtype = row_lowfreq.dtype
    grid = (max(_tile_count(oh + has_v, h, block_o, block_j), _tile_count(ow + has_v, w, block_o, block_j)), n, 2)
    v_args = (row_v, col_v) if has_v else (row_lowfreq, col_lowfreq)  # unread placeholders
    args = (
        row_lowfreq, rows, v_args[0],
        col_lowfreq, cols, v_args[1],
        h, w, oh, ow, BOX_FIELDS,
        row_lowfreq.stride(0), rows.stride(0), rows.stride(2), v_args[0].stride(0),
        col_lowfreq.stride(0), cols.stride(0), cols.stride(2), v_args[1].stride(0),
    )
    meta = dict(
        HAS_V=has_v,
        ACC_DTYPE=tl.float64 if acc_dtype == torch.float64 else tl.float32,
        INTERPRETED=os.environ.get("TRITON_INTERPRET") == "1",
        BLOCK_O=block_o,
        BLOCK_J=block_j,
        **LAUNCH_OPTIONS,
    )
    kernel = _augmented_operators_kernel[grid]

    def build(boxes):
        if n:
            kernel(boxes, *args, **meta)

    return build
