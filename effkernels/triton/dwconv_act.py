"""Triton kernels of effkernels::dwconv_act and its backward: LocalFFN's 3×3 depthwise conv + bias +
activations, read and written token-major (B, P + H·W, hidden), Seq2Im/Im2Seq folded into the indexing.

Each program owns a (BLOCK_T tokens, BLOCK_C channels) tile; channels are contiguous, so every load is
coalesced, and a token's 3×3 neighbours (±1, ±W tokens) are re-read from cache. The backward runs in
two passes: grad_z = grad · act'(z) with z recomputed (plus per-program partial weight and bias grads,
summed in a fixed order: deterministic), then grad_h = pre_act'(h) · convᵀ(grad_z).
"""
import torch
import triton
import triton.language as tl

BLOCK_T = 32  # tokens per program
MAX_BLOCK_C = 128  # channels per program


@triton.jit
def _activate(z, KIND: tl.constexpr):
    if KIND == "relu":
        out = tl.where(z > 0, z, 0.0)
    elif KIND == "hardswish":
        out = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    elif KIND == "gelu":
        out = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif KIND == "gelu_tanh":
        out = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    else:
        out = z
    return out


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
def _tanh(u):
    # tanh through exp (every Triton release and the interpreter have it), on -|u| so it cannot overflow.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def _tile(TOTAL, N, P, W, C, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tokens and channels, their element offsets and masks, and each token's grid
    row/column."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_tile = tokens < TOTAL
    mask_c = chans < C
    cell = tokens % N - P
    is_grid = in_tile & (cell >= 0)
    tokens = tokens.to(tl.int64)
    offsets = tokens[:, None] * C + chans[None, :]
    mask = in_tile[:, None] & mask_c[None, :]
    return tokens, chans, offsets, mask, mask_c, is_grid, cell // W, cell % W


@triton.jit
def _neighbour(ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C, DY: tl.constexpr, DX: tl.constexpr):
    """The (BLOCK_T, BLOCK_C) tile of the token at (y + DY, x + DX), zero outside the grid."""
    valid = is_grid & (y + DY >= 0) & (y + DY < H) & (x + DX >= 0) & (x + DX < W)
    offsets = (tokens + DY * W + DX)[:, None] * C + chans[None, :]
    return tl.load(ptr + offsets, mask=valid[:, None] & mask_c[None, :], other=0)


@triton.jit
def _conv(h_ptr, taps_ptr, bias_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C,
          HAS_BIAS: tl.constexpr, PRE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """z = bias + Σ_k taps[k] · pre_act(h at neighbour k), for the grid tokens of the tile."""
    acc_dtype = taps_ptr.dtype.element_ty
    z = tl.zeros((BLOCK_T, BLOCK_C), dtype=acc_dtype)
    if HAS_BIAS:
        z += tl.load(bias_ptr + chans, mask=mask_c, other=0)[None, :]
    for k in tl.static_range(9):
        v = _neighbour(h_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C, k // 3 - 1, k % 3 - 1)
        w = tl.load(taps_ptr + k * C + chans, mask=mask_c, other=0)
        z += w[None, :] * _activate(v.to(acc_dtype), PRE)
    return z


@triton.jit
def _dwconv_act_kernel(
    h_ptr, taps_ptr, bias_ptr, out_ptr, TOTAL, N, P, H, W, C,
    HAS_BIAS: tl.constexpr, SKIP_PREFIX: tl.constexpr, PRE: tl.constexpr, ACT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tokens, chans, offsets, mask, mask_c, is_grid, y, x = _tile(TOTAL, N, P, W, C, BLOCK_T, BLOCK_C)
    acc_dtype = taps_ptr.dtype.element_ty
    z = _conv(h_ptr, taps_ptr, bias_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C,
              HAS_BIAS, PRE, BLOCK_T, BLOCK_C)
    if SKIP_PREFIX:
        prefix_out = tl.zeros((BLOCK_T, BLOCK_C), dtype=acc_dtype)
    else:
        h_self = tl.load(h_ptr + offsets, mask=mask & ~is_grid[:, None], other=0).to(acc_dtype)
        prefix_out = _activate(_activate(h_self, PRE), ACT)
    out = tl.where(is_grid[:, None], _activate(z, ACT), prefix_out)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dwconv_act_grad_z_kernel(
    grad_ptr, h_ptr, taps_ptr, bias_ptr, grad_z_ptr, partials_ptr, TOTAL, N, P, H, W, C,
    HAS_BIAS: tl.constexpr, SKIP_PREFIX: tl.constexpr, PRE: tl.constexpr, ACT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tokens, chans, offsets, mask, mask_c, is_grid, y, x = _tile(TOTAL, N, P, W, C, BLOCK_T, BLOCK_C)
    acc_dtype = taps_ptr.dtype.element_ty
    g = tl.load(grad_ptr + offsets, mask=mask, other=0).to(acc_dtype)
    z = _conv(h_ptr, taps_ptr, bias_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C,
              HAS_BIAS, PRE, BLOCK_T, BLOCK_C)
    grid_mask = is_grid[:, None] & mask_c[None, :]
    grad_z = tl.where(grid_mask, g * _activate_grad(z, ACT), 0.0)
    if SKIP_PREFIX:
        prefix_grad = tl.zeros((BLOCK_T, BLOCK_C), dtype=acc_dtype)
    else:
        h_self = tl.load(h_ptr + offsets, mask=mask & ~is_grid[:, None], other=0).to(acc_dtype)
        prefix_grad = g * _activate_grad(_activate(h_self, PRE), ACT)
    tl.store(grad_z_ptr + offsets, tl.where(is_grid[:, None], grad_z, prefix_grad), mask=mask)

    # This program's share of the weight grad (Σ grad_z · pre_act(neighbour k)) and the bias grad.
    partials = partials_ptr + tl.program_id(0).to(tl.int64) * 10 * C + chans
    for k in tl.static_range(9):
        v = _neighbour(h_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C, k // 3 - 1, k % 3 - 1)
        tl.store(partials + k * C, tl.sum(grad_z * _activate(v.to(acc_dtype), PRE), axis=0), mask=mask_c)
    tl.store(partials + 9 * C, tl.sum(grad_z, axis=0), mask=mask_c)


@triton.jit
def _dwconv_act_grad_h_kernel(
    h_ptr, taps_ptr, grad_z_ptr, grad_h_ptr, TOTAL, N, P, H, W, C,
    PRE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tokens, chans, offsets, mask, mask_c, is_grid, y, x = _tile(TOTAL, N, P, W, C, BLOCK_T, BLOCK_C)
    acc_dtype = taps_ptr.dtype.element_ty
    # Token (y, x) receives tap k from the token it fed, (y - dy, x - dx).
    grad_p = tl.zeros((BLOCK_T, BLOCK_C), dtype=acc_dtype)
    for k in tl.static_range(9):
        gz = _neighbour(grad_z_ptr, tokens, chans, is_grid, mask_c, y, x, H, W, C, 1 - k // 3, 1 - k % 3)
        grad_p += tl.load(taps_ptr + k * C + chans, mask=mask_c, other=0)[None, :] * gz
    own = tl.load(grad_z_ptr + offsets, mask=mask & ~is_grid[:, None], other=0)
    grad_p = tl.where(is_grid[:, None], grad_p, own)
    if PRE != "none":
        grad_p *= _activate_grad(tl.load(h_ptr + offsets, mask=mask, other=0).to(acc_dtype), PRE)
    tl.store(grad_h_ptr + offsets, grad_p.to(grad_h_ptr.dtype.element_ty), mask=mask)


def _launch_shape(h):
    """(grid, block sizes) for a (B, N, C) token tensor."""
    total, channels = h.shape[0] * h.shape[1], h.shape[2]
    block_c = min(MAX_BLOCK_C, triton.next_power_of_2(channels))
    return (triton.cdiv(total, BLOCK_T), triton.cdiv(channels, block_c)), block_c


def _taps(weight, acc_dtype):
    """(9, hidden) tap-major weights: each tap's weights contiguous over channels."""
    return weight.reshape(weight.shape[0], 9).t().to(acc_dtype).contiguous()


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def dwconv_act_triton(h, grid_size, weight, bias=None, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    """Forward launch; arguments as effkernels.local_ffn_ops.dwconv_act, already checked."""
    h = h.contiguous()
    out = torch.empty_like(h)
    if h.numel() == 0:
        return out
    acc = _acc_dtype(h.dtype)
    taps = _taps(weight, acc)
    grid, block_c = _launch_shape(h)
    torch.library.wrap_triton(_dwconv_act_kernel)[grid](
        h, taps, bias.to(acc) if bias is not None else taps, out,
        h.shape[0] * h.shape[1], h.shape[1], num_prefix_tokens, grid_size[0], grid_size[1], h.shape[2],
        HAS_BIAS=bias is not None, SKIP_PREFIX=prefix == "skip", PRE=pre_act or "none", ACT=act,
        BLOCK_T=BLOCK_T, BLOCK_C=block_c,
    )
    return out


def dwconv_act_backward_triton(grad, h, grid_size, weight, bias=None, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    """Backward launches: (grad_h, grad_weight, grad_bias); arguments already checked."""
    h, grad = h.contiguous(), grad.contiguous()
    acc = _acc_dtype(h.dtype)
    taps = _taps(weight, acc)
    grid, block_c = _launch_shape(h)
    grad_h = torch.empty_like(h)
    grad_z = torch.empty(h.shape, dtype=acc, device=h.device)
    partials = torch.empty((grid[0], 10, h.shape[2]), dtype=acc, device=h.device)
    sizes = (h.shape[0] * h.shape[1], h.shape[1], num_prefix_tokens, grid_size[0], grid_size[1], h.shape[2])
    if h.numel() > 0:
        torch.library.wrap_triton(_dwconv_act_grad_z_kernel)[grid](
            grad, h, taps, bias.to(acc) if bias is not None else taps, grad_z, partials, *sizes,
            HAS_BIAS=bias is not None, SKIP_PREFIX=prefix == "skip", PRE=pre_act or "none", ACT=act,
            BLOCK_T=BLOCK_T, BLOCK_C=block_c,
        )
        torch.library.wrap_triton(_dwconv_act_grad_h_kernel)[grid](
            h, taps, grad_z, grad_h, *sizes, PRE=pre_act or "none", BLOCK_T=BLOCK_T, BLOCK_C=block_c,
        )
    sums = partials.sum(0)  # a fixed-order reduction: deterministic
    grad_weight = sums[:9].t().contiguous().reshape(weight.shape).to(weight.dtype)
    grad_bias = sums[9].to(weight.dtype, copy=True)
    return grad_h, grad_weight, grad_bias
