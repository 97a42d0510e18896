"""Triton kernels of effkernels::dwconv_act and its backward: LocalFFN's 3×3 depthwise conv + bias +
activations on the token-major (B, P + H·W, hidden) buffer, Seq2Im/Im2Seq folded into the indexing.

Design (a memory-bound stencil; see ../shared/DESIGN.md, Op 2):
- A program owns a fixed set of samples (strided by the number of sample groups), one strip of BLOCK_W
  grid columns and BLOCK_C channels, and walks down the grid rows. Each grid row is loaded once per column
  shift (-1, 0, +1), contiguous along channels (a token's BLOCK_C channels are one run of memory: vector
  loads, coalesced across the warp), in its own dtype, a few rows ahead of the math (3 rows forward,
  2 backward) so enough bytes are in flight to cover DRAM latency. A row is read from DRAM once; its
  shifted copies come from L1/L2, and once in registers it serves every output row that needs it:
  nothing is re-read per tap. Any grid width works (strips of up to MAX_BLOCK_W columns).
- Forward: each entering row adds its three kernel rows to the rolling partial sums of the output
  rows above, at and below it; the row above is then complete: a = act(bias + Σ taps · pre_act(h)),
  written token-major. fp32 accumulation (fp64 for fp64 inputs). The samples of a program form one
  stream of rows, fetched ahead across sample boundaries. Prefix tokens are handled by each sample's
  column-strip-0 program in the same launch.
- Backward, one pass over (grad, h): for grid row r the program computes z on its strip from the
  pre_act rows r-1..r+1 it holds at three column shifts, forms grad_z = grad · act'(z) (on chip, never
  stored), adds grad_z · pre_act(h[neighbour k]) into nine per-tap and one bias accumulator tiles that
  stay in registers across all the program's rows and samples, and scatters grad_z through the
  transposed taps into two rolling grad_h row accumulators; row r-1 is then complete and is written
  times pre_act'(h). The scatter needs grad_z one column left and right: the strip's grad_z is rolled
  across threads on chip (a gather), where recomputing z at those shifts cost 27 more FMAs per value.
  So a strip either holds the whole grid width and a zero column past it (HALO = 0: the roll wraps
  onto zeros) or overlaps each neighbour strip by one column whose grad_z it computes but whose
  results it leaves to that strip (HALO = 1). At the end each program sums its accumulators over the
  columns it owns once and writes them as its own row of a (rows, 10, hidden) partial-sum buffer; a
  second small kernel adds those rows in a fixed order into grad_weight and grad_bias: deterministic,
  no atomics. Sample groups fill the SMs once (one wave).
- Tiles: 4 values per thread forward, 2 backward (4 warps), chosen by registers: compiled for sm_90
  with ptxas -v, bf16, the forward uses 96-118 registers and the backward 144-168, neither spills in
  its loops.
  perf/tune_dwconv_act.py times the other launch shapes (launch_shape's `tiles`) on a GPU, and
  reports every shape's registers and load widths anywhere, so the defaults can follow measurement.
- Instructions: these kernels are likely bound by instruction issue, not by DRAM. The tuner's --sm90
  report counts the SASS of each hot loop per value and row step. An H100 issues about 1.05e12
  warp-instructions/s (132 SMs × 4 × 1.98 GHz); at 3.35 TB/s the forward moves 4 bytes per value and
  the backward 6. Before the changes below the forward took 54 instructions per value (1.35× the
  issue rate at full bandwidth) and the backward 162 (2.7×: at most ~37 % of the roofline; the H100
  measured 19 %, each call's host time included). So the math is written for the instruction count.
  h-swish is z · sat(z/6 + 1/2): one FFMA.SAT and one FMUL instead of five instructions. Both row
  loops are unrolled three times, the period of their rolling rows, so rotating them costs no
  register moves (row_unroll). At the default bf16 shapes, ViT-24h layout: forward 34 instructions
  per value (96 registers instead of 112), backward 78-85 (148 when it recomputed z at three column
  shifts), 167-168 registers (sm_90 SASS, Triton 3.6 and 3.8, 2026-11-23; GPU time not yet
  measured): the roll, and h of the row it writes kept from the rows it holds instead of re-read for
  pre_act'(h). At full issue rate that is ~0.19 ms at DeiT-S 14×14, batch 256, against the 0.35 ms
  target. The GPU image's Triton 3.6 (its own ptxas; CI compiles with it) gives the forward 115
  registers (4 programs per SM still fit) and spills a few registers of the 6×6 backward around its
  loops, none inside them (2026-12-07).
- Host path: launch metadata (block sizes, grid, sample groups) cached per shape; the raw kernel is
  launched in eager mode, through torch.library.wrap_triton only while torch.compile traces.
"""
import functools

import torch
import triton
import triton.language as tl

MAX_BLOCK_W = 32  # grid columns per program: wider grids are split into strips (with halo)
BACKWARD_BLOCK_WS = (4, 8, 16, 32)  # the backward's strip widths (powers of two: its column roll wraps around)
FWD_TILE = 512  # elements (columns × channels) per forward program: 4 per thread with 4 warps
BWD_TILE = 256  # elements per backward program: 2 per thread (~35 live tiles)
MAX_BLOCK_C = 128
MIN_BLOCK_C = 16
NUM_WARPS = 4


def row_unroll(kind, act, dtype):
    """The default unrolling of a kernel's row loop ("forward"/"backward", the activation after the
    conv, the dtype). Both kernels' rows rotate with period 3 (rolling rows, rows fetched ahead), so
    unrolling by 3 removes the register moves: the backward's instructions per value drop 14 % (bf16,
    h-swish: 97 → 83) within the 168 registers that let 3 programs share an SM. Not where the unrolled
    kernel would not fit PROGRAMS_PER_SM programs in an SM's registers (sm_90, ptxas, with a bias,
    specialised as a real launch is: one prefix token, batch and channels multiples of 16):
    erf-GELU's derivative (erf and exp) takes the backward to 223 registers, and the float32 forward
    with either GELU to 130-160 (4 programs need ≤ 128). There: 1."""
    if kind == "backward":
        return 1 if act == "gelu" else 3
    return 1 if act in ("gelu", "gelu_tanh") and dtype.itemsize >= 4 else 3


# (forward, backward) programs per SM by dtype: as many as fit at once (65,536 registers / (registers
# rounded up to 8 × 128 threads)), so the launch is one wave and each program owns B / groups samples
# (weights loaded and weight-grad sums reduced once per program). Registers by ptxas -v for sm_90 over
# the activation variants (row_unroll's defaults): bf16/fp16 forward 96-120, backward 144-168; fp32 up to
# 128 and 168; fp64 ~220 and 255 (fp64 is for exactness, not speed).
PROGRAMS_PER_SM = {torch.bfloat16: (4, 3), torch.float16: (4, 3), torch.float32: (4, 3), torch.float64: (2, 2)}


@triton.jit
def _tanh(u):
    # tanh through exp (every Triton release and the interpreter have it), on -|u| so it cannot overflow.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def _activate(z, KIND: tl.constexpr):
    if KIND == "relu":
        out = tl.where(z > 0, z, 0.0)
    elif KIND == "hardswish":
        out = z * tl.minimum(tl.maximum(z / 6.0 + 0.5, 0.0), 1.0)  # = z · relu6(z + 3) / 6, as FFMA.SAT + FMUL
    elif KIND == "gelu":
        out = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif KIND == "gelu_tanh":
        out = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    else:
        out = z
    return out.to(z.dtype)


@triton.jit
def _activate_grad(z, KIND: tl.constexpr):
    """d activation / dz, with torch's boundary conventions."""
    if KIND == "relu":
        out = tl.where(z > 0, 1.0, 0.0)
    elif KIND == "hardswish":
        out = tl.where(z < -3.0, 0.0, tl.where(z <= 3.0, z / 3.0 + 0.5, 1.0))
    elif KIND == "gelu":
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        out = cdf + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
    elif KIND == "gelu_tanh":
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        out = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z * z)
    else:
        out = tl.full(z.shape, 1.0, z.dtype)
    return out.to(z.dtype)


@triton.jit
def _row(ptr, row_base, row_ok, cols, chans, mask_c, W, C, S: tl.constexpr):
    """The strip of one grid row at column shift S, (BLOCK_W, BLOCK_C) in the tensor's dtype; 0 outside
    the grid. row_base is the element offset of the row's first token (int64); row_ok: the row exists."""
    shifted = cols + S
    valid = (shifted >= 0) & (shifted < W) & row_ok
    offsets = row_base + shifted[:, None] * C + chans[None, :]
    return tl.load(ptr + offsets, mask=valid[:, None] & mask_c[None, :], other=0)


@triton.jit
def _pre(raw, PRE: tl.constexpr, ACC: tl.constexpr):
    """pre_act of loaded h values, in the accumulation dtype (pre_act(0) = 0 keeps the zero padding)."""
    return _activate(raw.to(ACC), PRE)


@triton.jit
def _row3(ptr, row_base, row_ok, cols, chans, mask_c, W, C):
    """A grid row's strip at column shifts -1, 0, +1 (raw dtype), 0 outside the grid or if not row_ok."""
    return (_row(ptr, row_base, row_ok, cols, chans, mask_c, W, C, -1),
            _row(ptr, row_base, row_ok, cols, chans, mask_c, W, C, 0),
            _row(ptr, row_base, row_ok, cols, chans, mask_c, W, C, 1))


@triton.jit
def _advance(e, row, H, row_stride, sample_stride):
    """One step of a forward program's row stream: (row index e, its element offset) of the next step,
    the next grid row, or after the padding row H the next sample's row 0 (no division per step)."""
    wrap = e == H
    return tl.where(wrap, 0, e + 1), tl.where(wrap, row + sample_stride - H * row_stride, row + row_stride)


@triton.jit
def _taps3(acc, left, mid, right, w_left, w_mid, w_right):
    """acc + one kernel row's contribution, w_left·left + w_mid·mid + w_right·right (taps per channel),
    added in that order so that each term compiles to one fused multiply-add."""
    acc = acc + w_left[None, :] * left
    acc = acc + w_mid[None, :] * mid
    return acc + w_right[None, :] * right


@triton.jit
def _tap(w_ptr, chans, mask_c, K: tl.constexpr, ACC: tl.constexpr):
    """Tap K (= 3·(dy+1) + (dx+1)) of each channel, read from the (hidden, 1, 3, 3) weight."""
    return tl.load(w_ptr + chans * 9 + K, mask=mask_c, other=0).to(ACC)


@triton.jit
def _taps_and_bias(w_ptr, bias_ptr, chans, mask_c, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """The nine taps and the bias of a channel block, in the accumulation dtype (zero bias if none)."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chans, mask=mask_c, other=0).to(ACC)
    else:
        bias = tl.zeros((BLOCK_C,), dtype=ACC)
    return (_tap(w_ptr, chans, mask_c, 0, ACC), _tap(w_ptr, chans, mask_c, 1, ACC), _tap(w_ptr, chans, mask_c, 2, ACC),
            _tap(w_ptr, chans, mask_c, 3, ACC), _tap(w_ptr, chans, mask_c, 4, ACC), _tap(w_ptr, chans, mask_c, 5, ACC),
            _tap(w_ptr, chans, mask_c, 6, ACC), _tap(w_ptr, chans, mask_c, 7, ACC), _tap(w_ptr, chans, mask_c, 8, ACC),
            bias)


@triton.jit
def _program_tile(W, C, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, HALO: tl.constexpr):
    """This program's channel block and column strip (program ids 0 and 1), the strips overlapping by
    HALO columns each side: (chans, mask_c, cols, owned, out_mask); owned: the strip's columns that
    are in the grid and not another strip's; out_mask: its (column, channel) elements it writes."""
    chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = chans < C
    lanes = tl.arange(0, BLOCK_W)
    cols = tl.program_id(1) * (BLOCK_W - 2 * HALO) - HALO + lanes
    owned = (lanes >= HALO) & (lanes < BLOCK_W - HALO) & (cols < W)
    return chans, mask_c, cols, owned, owned[:, None] & mask_c[None, :]


@triton.jit
def _dwconv_act_fwd_kernel(
    h_ptr, w_ptr, bias_ptr, out_ptr, B, N, P, H, W, C,
    HAS_BIAS: tl.constexpr, HAS_PREFIX: tl.constexpr, SKIP_PREFIX: tl.constexpr, PRE: tl.constexpr,
    ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    UNROLL: tl.constexpr,
):
    pid_x, group = tl.program_id(1), tl.program_id(2)
    chans, mask_c, cols, _, out_mask = _program_tile(W, C, BLOCK_W, BLOCK_C, 0)
    row_stride = W * C
    w0, w1, w2, w3, w4, w5, w6, w7, w8, bias = _taps_and_bias(w_ptr, bias_ptr, chans, mask_c, HAS_BIAS, ACC, BLOCK_C)

    # The program's samples (group, group + groups, ...) as one stream of H + 1 steps each: step e of a
    # sample brings in its grid row e (row H is the zero padding below the grid), adds its kernel rows
    # to the partial sums of the outputs it touches, and completes z of row e-1. After the padding row
    # the partial sum of row 0 is bias alone, as the next sample needs it, so the stream never drains:
    # rows are fetched three steps ahead across sample boundaries, enough bytes in flight per SM to
    # cover DRAM latency. Only two partial-sum tiles and the fetched rows (raw dtype) stay live.
    groups = tl.num_programs(2)
    steps = tl.cdiv(B - group, groups) * (H + 1)
    sample_stride = tl.cast(groups, tl.int64) * N * C
    z_above = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)  # z of row e-1 so far
    z_row = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC) + bias[None, :]  # z of row e so far
    # (e, row): this step's grid row and its element offset; (e3, row3): the step fetched, 3 ahead.
    e = group * 0
    row = tl.cast(group, tl.int64) * N * C + P * C
    e1, row1 = _advance(e, row, H, row_stride, sample_stride)
    e2, row2 = _advance(e1, row1, H, row_stride, sample_stride)
    e3, row3 = _advance(e2, row2, H, row_stride, sample_stride)
    a_l, a_m, a_r = _row3(h_ptr, row, True, cols, chans, mask_c, W, C)
    b_l, b_m, b_r = _row3(h_ptr, row1, (1 < steps) & (e1 < H), cols, chans, mask_c, W, C)
    c_l, c_m, c_r = _row3(h_ptr, row2, (2 < steps) & (e2 < H), cols, chans, mask_c, W, C)
    for t in tl.range(0, steps, loop_unroll_factor=UNROLL):
        if HAS_PREFIX:
            if (e == 0) & (pid_x == 0):  # the sample's prefix tokens: act(pre_act(h)), or 0 ("skip")
                tokens = tl.arange(0, BLOCK_P)
                offsets = row - P * C + tokens[:, None] * C + chans[None, :]
                mask = (tokens < P)[:, None] & mask_c[None, :]
                if SKIP_PREFIX:
                    prefix_out = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
                else:
                    prefix_out = _activate(_pre(tl.load(h_ptr + offsets, mask=mask, other=0), PRE, ACC), ACT)
                tl.store(out_ptr + offsets, prefix_out.to(out_ptr.dtype.element_ty), mask=mask)
        p_l = _pre(a_l, PRE, ACC)
        p_m = _pre(a_m, PRE, ACC)
        p_r = _pre(a_r, PRE, ACC)
        a_l, a_m, a_r = b_l, b_m, b_r
        b_l, b_m, b_r = c_l, c_m, c_r
        c_l, c_m, c_r = _row3(h_ptr, row3, (t + 3 < steps) & (e3 < H), cols, chans, mask_c, W, C)
        e3, row3 = _advance(e3, row3, H, row_stride, sample_stride)
        z_done = _taps3(z_above, p_l, p_m, p_r, w6, w7, w8)  # row e-1: its row below came in
        z_above = _taps3(z_row, p_l, p_m, p_r, w3, w4, w5)
        z_row = _taps3(bias[None, :], p_l, p_m, p_r, w0, w1, w2)
        offsets = row - row_stride + cols[:, None] * C + chans[None, :]
        a = _activate(z_done, ACT).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offsets, a, mask=out_mask & (e >= 1))
        e, row = _advance(e, row, H, row_stride, sample_stride)


@triton.jit
def _roll_columns(x, SHIFT: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """x moved SHIFT columns along the strip, wrapping around: out[j] = x[(j - SHIFT) mod BLOCK_W]. The
    values cross threads on chip (a gather through shared memory), none is recomputed."""
    source = (tl.arange(0, BLOCK_W) - SHIFT) & (BLOCK_W - 1)
    return tl.gather(x, tl.broadcast_to(source[:, None], (BLOCK_W, BLOCK_C)), axis=0)


@triton.jit
def _owned_sum(acc, owned):
    """Σ over the strip's own columns of a (BLOCK_W, BLOCK_C) accumulator (halo columns are another
    program's)."""
    return tl.sum(tl.where(owned[:, None], acc, 0), axis=0)


@triton.jit
def _dwconv_act_bwd_kernel(
    grad_ptr, h_ptr, w_ptr, bias_ptr, grad_h_ptr, partials_ptr, B, N, P, H, W, C,
    HAS_BIAS: tl.constexpr, HAS_PREFIX: tl.constexpr, SKIP_PREFIX: tl.constexpr, PRE: tl.constexpr,
    ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    UNROLL: tl.constexpr, HALO: tl.constexpr,
):
    pid_x, group = tl.program_id(1), tl.program_id(2)
    groups = tl.num_programs(2)
    # HALO columns each side of the strip belong to the neighbouring strips (grad_z is computed there and
    # moved on chip; nothing is stored). With HALO = 0 one strip holds the whole grid and at least one
    # column past it, where grad_z is 0: the wrapped-around roll reads zeros there.
    chans, mask_c, cols, owned, out_mask = _program_tile(W, C, BLOCK_W, BLOCK_C, HALO)
    row_stride = W * C
    w0, w1, w2, w3, w4, w5, w6, w7, w8, bias = _taps_and_bias(w_ptr, bias_ptr, chans, mask_c, HAS_BIAS, ACC, BLOCK_C)

    # Σ grad_z · pre_act(h at neighbour k) per tap, and Σ grad_z: over every token this program sees.
    acc0 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc1 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc2 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc3 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc4 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc5 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc6 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc7 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc8 = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
    acc_bias = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)

    for sample in range(group, B, groups):
        base = tl.cast(sample, tl.int64) * N * C
        grid_base = base + P * C
        if HAS_PREFIX:
            if pid_x == 0:  # prefix tokens: grad_h = pre_act'(h) · act'(pre_act(h)) · grad, or 0 ("skip")
                tokens = tl.arange(0, BLOCK_P)
                offsets = base + tokens[:, None] * C + chans[None, :]
                mask = (tokens < P)[:, None] & mask_c[None, :]
                if SKIP_PREFIX:
                    prefix_grad = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
                else:
                    h_prefix = tl.load(h_ptr + offsets, mask=mask, other=0).to(ACC)
                    g_prefix = tl.load(grad_ptr + offsets, mask=mask, other=0).to(ACC)
                    prefix_grad = g_prefix * _activate_grad(_activate(h_prefix, PRE), ACT)
                    prefix_grad *= _activate_grad(h_prefix, PRE)
                tl.store(grad_h_ptr + offsets, prefix_grad.to(grad_h_ptr.dtype.element_ty), mask=mask)

        # pre_act(h) of rows r-1 (u), r (c) and r+1 (d) at column shifts -1, 0, +1 (l, m, r).
        u_l = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
        u_m = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
        u_r = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
        c_l, c_raw, c_r = _row3(h_ptr, grid_base, True, cols, chans, mask_c, W, C)
        c_l = _pre(c_l, PRE, ACC)
        c_m = _pre(c_raw, PRE, ACC)
        c_r = _pre(c_r, PRE, ACC)
        u_raw = c_raw  # h of row r-1 as loaded, for pre_act'(h) when row r-1 is written (unused at r = 0)
        # h of rows r+1, r+2 and grad of rows r, r+1 as loaded (raw dtype), fetched two rows ahead so
        # that their latency overlaps the math.
        below = grid_base + row_stride
        hn_l, hn_m, hn_r = _row3(h_ptr, below, 1 < H, cols, chans, mask_c, W, C)
        hnn_l, hnn_m, hnn_r = _row3(h_ptr, below + row_stride, 2 < H, cols, chans, mask_c, W, C)
        gn = _row(grad_ptr, grid_base, True, cols, chans, mask_c, W, C, 0)
        gnn = _row(grad_ptr, below, 1 < H, cols, chans, mask_c, W, C, 0)
        # grad_h of rows r-1 and r, partly summed: a row is complete once grad_z of the row below it is in.
        gh_up = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
        gh_mid = tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC)
        for r in tl.range(0, H, loop_unroll_factor=UNROLL):
            row = grid_base + r * row_stride
            d_l = _pre(hn_l, PRE, ACC)
            d_m = _pre(hn_m, PRE, ACC)
            d_r = _pre(hn_r, PRE, ACC)
            d_raw = hn_m
            g = gn.to(ACC)
            hn_l, hn_m, hn_r = hnn_l, hnn_m, hnn_r
            gn = gnn
            hnn_l, hnn_m, hnn_r = _row3(h_ptr, row + 3 * row_stride, r + 3 < H, cols, chans, mask_c, W, C)
            gnn = _row(grad_ptr, row + 2 * row_stride, r + 2 < H, cols, chans, mask_c, W, C, 0)
            # z and grad_z of row r on the strip (0 outside the grid, where grad loads as 0).
            z = _taps3(bias[None, :], u_l, u_m, u_r, w0, w1, w2)
            z = _taps3(z, c_l, c_m, c_r, w3, w4, w5)
            z = _taps3(z, d_l, d_m, d_r, w6, w7, w8)
            gz = g * _activate_grad(z, ACT)

            acc0 += gz * u_l
            acc1 += gz * u_m
            acc2 += gz * u_r
            acc3 += gz * c_l
            acc4 += gz * c_m
            acc5 += gz * c_r
            acc6 += gz * d_l
            acc7 += gz * d_m
            acc8 += gz * d_r
            acc_bias += gz

            # Token (y, x) receives w[dy, dx] · grad_z(y - dy, x - dx): grad_z of row r feeds rows
            # r + dy, the taps of kernel row dy in reverse column order.
            gz_l = _roll_columns(gz, 1, BLOCK_W, BLOCK_C)  # grad_z one column left
            gz_r = _roll_columns(gz, -1, BLOCK_W, BLOCK_C)  # one column right
            gh_up = _taps3(gh_up, gz_r, gz, gz_l, w0, w1, w2)
            gh_mid = _taps3(gh_mid, gz_r, gz, gz_l, w3, w4, w5)
            gh_down = _taps3(tl.zeros((BLOCK_W, BLOCK_C), dtype=ACC), gz_r, gz, gz_l, w6, w7, w8)
            if r > 0:  # row r-1 has all its terms now
                above = row - row_stride
                offsets = above + cols[:, None] * C + chans[None, :]
                if PRE != "none":
                    gh_up = gh_up * _activate_grad(u_raw.to(ACC), PRE)
                tl.store(grad_h_ptr + offsets, gh_up.to(grad_h_ptr.dtype.element_ty), mask=out_mask)
            gh_up, gh_mid = gh_mid, gh_down
            u_l, u_m, u_r = c_l, c_m, c_r
            c_l, c_m, c_r = d_l, d_m, d_r
            u_raw, c_raw = c_raw, d_raw
        # The last row (nothing below it feeds it).
        offsets = grid_base + (H - 1) * row_stride + cols[:, None] * C + chans[None, :]
        if PRE != "none":
            gh_up = gh_up * _activate_grad(u_raw.to(ACC), PRE)
        tl.store(grad_h_ptr + offsets, gh_up.to(grad_h_ptr.dtype.element_ty), mask=out_mask)

    # One partial-sum row per program, reduced once over the columns it owns.
    partials = partials_ptr + (group * tl.num_programs(1) + pid_x).to(tl.int64) * 10 * C + chans
    tl.store(partials + 0 * C, _owned_sum(acc0, owned), mask=mask_c)
    tl.store(partials + 1 * C, _owned_sum(acc1, owned), mask=mask_c)
    tl.store(partials + 2 * C, _owned_sum(acc2, owned), mask=mask_c)
    tl.store(partials + 3 * C, _owned_sum(acc3, owned), mask=mask_c)
    tl.store(partials + 4 * C, _owned_sum(acc4, owned), mask=mask_c)
    tl.store(partials + 5 * C, _owned_sum(acc5, owned), mask=mask_c)
    tl.store(partials + 6 * C, _owned_sum(acc6, owned), mask=mask_c)
    tl.store(partials + 7 * C, _owned_sum(acc7, owned), mask=mask_c)
    tl.store(partials + 8 * C, _owned_sum(acc8, owned), mask=mask_c)
    tl.store(partials + 9 * C, _owned_sum(acc_bias, owned), mask=mask_c)


@triton.jit
def _dwconv_act_reduce_kernel(partials_ptr, grad_weight_ptr, grad_bias_ptr, ROWS, C, BLOCK_C: tl.constexpr):
    """Sum the (ROWS, 10, C) partial rows in row order (deterministic) into grad_weight (C, 1, 3, 3)
    and grad_bias (C,), in their dtypes. Program (channel block, k) owns tap k (k = 9: the bias)."""
    chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(1)
    mask_c = chans < C
    column = partials_ptr + k * C + chans
    total = tl.load(column, mask=mask_c, other=0)
    for i in range(1, ROWS):
        total += tl.load(column + tl.cast(i, tl.int64) * 10 * C, mask=mask_c, other=0)
    if k < 9:
        tl.store(grad_weight_ptr + chans * 9 + k, total.to(grad_weight_ptr.dtype.element_ty), mask=mask_c)
    else:
        tl.store(grad_bias_ptr + chans, total.to(grad_bias_ptr.dtype.element_ty), mask=mask_c)


_ACC = {torch.float64: tl.float64}
TILE = {"forward": FWD_TILE, "backward": BWD_TILE}
TILE_KEYS = ("BLOCK_W", "BLOCK_C", "num_warps", "UNROLL", "programs_per_sm")


@functools.lru_cache(maxsize=256)
def launch_shape(kind, batch, channels, prefix_tokens, width, dtype, device, act, tiles=()):
    """(grid, launch options) of the forward or backward kernel ("forward"/"backward") for a shape and
    activation, cached so that an eager call does no more than allocate and launch. tiles: (key, value) pairs
    overriding the defaults, for perf/tune_dwconv_act.py: BLOCK_W (grid columns per strip), BLOCK_C,
    num_warps, UNROLL (of the row loop), programs_per_sm (sample groups: that many programs per SM, at
    most one per sample)."""
    tiles = dict(tiles)
    if unknown := set(tiles) - set(TILE_KEYS):
        raise ValueError(f"tiles: unknown keys {sorted(unknown)}; expected some of {TILE_KEYS}")
    if kind == "backward":
        block_w = tiles.get("BLOCK_W") or min(BACKWARD_BLOCK_WS, key=lambda w: (_backward_strips(width, w) * w, -w))
        if block_w not in BACKWARD_BLOCK_WS:
            raise ValueError(f"tiles: the backward's BLOCK_W must be one of {BACKWARD_BLOCK_WS}, got {block_w}")
        strips = _backward_strips(width, block_w)
    else:
        block_w = tiles.get("BLOCK_W", min(MAX_BLOCK_W, triton.next_power_of_2(width)))
        strips = triton.cdiv(width, block_w)
    widest_c = max(MIN_BLOCK_C, triton.next_power_of_2(channels))
    block_c = tiles.get("BLOCK_C", min(MAX_BLOCK_C, widest_c, max(MIN_BLOCK_C, TILE[kind] // block_w)))
    blocks = (triton.cdiv(channels, block_c), strips)
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        per_sm = tiles.get("programs_per_sm", PROGRAMS_PER_SM[dtype][kind == "backward"])
        groups = per_sm * sms // (blocks[0] * blocks[1])
    else:  # the interpreter: two groups, so that tests see programs owning several samples
        groups = 2
    options = dict(BLOCK_W=block_w, BLOCK_C=block_c, BLOCK_P=triton.next_power_of_2(max(prefix_tokens, 1)),
                   num_warps=tiles.get("num_warps", NUM_WARPS),
                   UNROLL=tiles.get("UNROLL", row_unroll(kind, act, dtype)))
    if kind == "backward":
        options["HALO"] = backward_halo(width, block_w)
    return (*blocks, max(1, min(batch, groups))), options


def backward_halo(width, block_w):
    """The backward kernel's HALO for a grid `width` columns wide and `block_w`-column strips: 0 where
    one strip holds the whole width and a column more, else 1 (strips overlap by a column each side)."""
    return int(block_w <= width)


def _backward_strips(width, block_w):
    """Backward programs across a grid `width` columns wide with `block_w`-column strips."""
    return triton.cdiv(width, block_w - 2) if backward_halo(width, block_w) else 1


def _launcher(kernel):
    """The raw kernel in eager mode (least host time); wrap_triton while torch.compile traces."""
    return torch.library.wrap_triton(kernel) if torch.compiler.is_compiling() else kernel


def _tile_items(tiles):
    """tiles as launch_shape's (hashable) cache key."""
    return tuple(sorted(tiles.items())) if tiles else ()


def dwconv_act_triton(h, grid_size, weight, bias=None, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish",
                      tiles=None):
    """Forward launch; arguments as effkernels.local_ffn_ops.dwconv_act, already checked. tiles: launch
    shape overrides (see launch_shape)."""
    h = h.contiguous()
    out = torch.empty_like(h)
    if h.numel() == 0:
        return out
    batch, tokens, channels = h.shape
    grid, options = launch_shape("forward", batch, channels, num_prefix_tokens, grid_size[1], h.dtype, h.device,
                                 act, _tile_items(tiles))
    weight = weight.contiguous()
    _launcher(_dwconv_act_fwd_kernel)[grid](
        h, weight, bias if bias is not None else weight, out, batch, tokens, num_prefix_tokens, grid_size[0],
        grid_size[1], channels, HAS_BIAS=bias is not None, HAS_PREFIX=num_prefix_tokens > 0,
        SKIP_PREFIX=prefix == "skip", PRE=pre_act or "none", ACT=act, ACC=_ACC.get(h.dtype, tl.float32), **options,
    )
    return out


def dwconv_act_backward_triton(grad, h, grid_size, weight, bias=None, num_prefix_tokens=0, prefix="mlp", pre_act=None,
                               act="hardswish", tiles=None):
    """Backward launches (the one-pass kernel, then the fixed-order reduction of its partial sums):
    (grad_h, grad_weight, grad_bias); arguments already checked. tiles: as dwconv_act_triton's."""
    h, grad, weight = h.contiguous(), grad.contiguous(), weight.contiguous()
    batch, tokens, channels = h.shape
    grad_h = torch.empty_like(h)
    grad_weight = torch.empty_like(weight)
    grad_bias = torch.empty(channels, dtype=weight.dtype, device=weight.device)
    if h.numel() == 0:
        return grad_h, grad_weight.zero_(), grad_bias.zero_()
    grid, options = launch_shape("backward", batch, channels, num_prefix_tokens, grid_size[1], h.dtype, h.device,
                                 act, _tile_items(tiles))
    acc = _ACC.get(h.dtype, tl.float32)
    rows = grid[1] * grid[2]
    partials = torch.empty((rows, 10, channels), dtype=torch.float64 if acc == tl.float64 else torch.float32,
                           device=h.device)
    _launcher(_dwconv_act_bwd_kernel)[grid](
        grad, h, weight, bias if bias is not None else weight, grad_h, partials, batch, tokens, num_prefix_tokens,
        grid_size[0], grid_size[1], channels, HAS_BIAS=bias is not None, HAS_PREFIX=num_prefix_tokens > 0,
        SKIP_PREFIX=prefix == "skip", PRE=pre_act or "none", ACT=act, ACC=acc, **options,
    )
    reduce_c = min(MAX_BLOCK_C, max(MIN_BLOCK_C, triton.next_power_of_2(channels)))
    _launcher(_dwconv_act_reduce_kernel)[(triton.cdiv(channels, reduce_c), 10)](
        partials, grad_weight, grad_bias, rows, channels, BLOCK_C=reduce_c, num_warps=NUM_WARPS,
    )
    return grad_h, grad_weight, grad_bias
