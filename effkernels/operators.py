"""Operator matrices that turn image-plane transforms into `separable_map` calls.

Every transform here acts on each image axis independently and linearly, so it is a matrix per
axis: the low-frequency crop (EfficientTrain), antialiased bilinear resizing (exactly what
`F.interpolate(mode="bilinear", antialias=True)` computes), crop boxes and flips. Composing them is
a matrix product, which is how a whole GPU augmentation pipeline becomes one kernel launch.
Matrices are built in float64 and cached per shape and device, since a curriculum reuses a few.
"""
import functools
import math

import torch

_CACHE_SIZE = 64


@functools.lru_cache(maxsize=_CACHE_SIZE)
def lowfreq_axis_operator(in_size: int, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the (band, in_size) matrix of one axis of the low-frequency crop.

    The crop keeps the frequencies [-(band // 2), (band + 1) // 2 - 1] of the length-in_size DFT and
    inverts them with a length-band DFT, scaled by band / in_size, so that the 2-D operator is
    `Re(A_h x A_w^T) = Re(A_h) x Re(A_w)^T - Im(A_h) x Im(A_w)^T`. The imaginary part is zero for odd
    bands, where the kept frequencies are symmetric. Cached: callers must not modify the result.
    """
    freqs = torch.arange(-(band // 2), band - band // 2, dtype=torch.int64)
    out_pos = torch.arange(band, dtype=torch.int64)
    in_pos = torch.arange(in_size, dtype=torch.int64)
    # Integer phases reduced modulo the period keep the angles exact before the float64 sin/cos.
    inverse = _unit_phasors(_turns(out_pos[:, None] * freqs[None, :], band))
    forward = _unit_phasors(-_turns(freqs[:, None] * in_pos[None, :], in_size))
    operator = inverse @ forward / in_size
    return operator.real.contiguous(), operator.imag.contiguous()


def _unit_phasors(angles: torch.Tensor) -> torch.Tensor:
    return torch.polar(torch.ones_like(angles), angles)


def _turns(products: torch.Tensor, period: int) -> torch.Tensor:
    return (products % period).to(torch.float64) * (2 * math.pi / period)


def resize_operator(
    in_size, out_size: int, total_in: int, offset=0, *, flip=None, dtype=torch.float64, device=None
) -> torch.Tensor:
    """The (…, out_size, total_in) matrix of antialiased bilinear resizing of a segment.

    Resizes the segment [offset, offset + in_size) of an axis of length total_in to out_size
    samples, as `F.interpolate(mode="bilinear", antialias=True, align_corners=False)` does: a
    triangle filter stretched by the downscale factor, clipped to the segment and renormalised.
    `in_size` and `offset` may be tensors of shape (N,) for per-sample crop boxes, and `flip` an (N,)
    bool tensor: the samples whose output is mirrored (a horizontal flip after the resize). The
    weights are computed in float64 and rounded once to `dtype`.

    Only the taps a row can reach are computed (a few, against total_in), then placed into the
    dense matrix: the per-sample operators of a batch of crop boxes cost O(out_size) float64 work
    each, not O(out_size · total_in).
    """
    in_size = torch.as_tensor(in_size, dtype=torch.float64, device=device)
    offset = torch.as_tensor(offset, dtype=torch.float64, device=device)
    scale = (in_size / out_size)[..., None, None]
    inv_scale = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    centers = scale * (torch.arange(out_size, dtype=torch.float64, device=device)[:, None] + 0.5)
    # The filter's open support (centre ± radius, radius = max(scale, 1) <= max(total_in / out_size, 1))
    # holds at most ceil(2 · radius) + 1 pixel centres s + 0.5, all from s = ⌊centre - radius - 0.5⌋ on.
    taps = math.ceil(2 * max(total_in / out_size, 1.0)) + 2
    first = torch.floor(centers - 1 / inv_scale - 0.5)
    source = first + torch.arange(taps, dtype=torch.float64, device=device)  # segment pixels, (…, out_size, taps)
    weights = (1 - ((source + 0.5 - centers) * inv_scale).abs()).clamp_min(0)
    weights = weights * ((source >= 0) & (source < in_size[..., None, None]))
    weights = weights / weights.sum(-1, keepdim=True)
    # A row's taps are distinct columns: a plain scatter (deterministic on every device) into a matrix
    # padded so that taps past either end land outside the returned columns.
    columns = (source + offset[..., None, None]).long() + taps
    if flip is not None:
        mirrored = flip.to(device)[:, None, None]
        weights = torch.where(mirrored, weights.flip(-2), weights)
        columns = torch.where(mirrored, columns.flip(-2), columns)
    dense = weights.new_zeros((*weights.shape[:-1], total_in + 2 * taps), dtype=dtype)
    return dense.scatter_(-1, columns, weights.to(dtype))[..., taps: taps + total_in]


def lowfreq_imag_factors(in_size: int, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (u, v) with `imag(lowfreq_axis_operator(in_size, band)) = outer(u, v)` for even bands.

    Of the kept frequencies only the unpaired Nyquist one, -band/2, has no conjugate partner, so
    only it contributes to the imaginary part: u[m] = (-1)^m from its inverse DFT row and
    v[n] = sin(pi * band * n / in_size) / in_size from its forward DFT column. For odd bands the
    imaginary part is zero and so are u and v.
    """
    u = 1.0 - 2.0 * (torch.arange(band, dtype=torch.float64) % 2)
    v = torch.sin(_turns((band // 2) * torch.arange(in_size, dtype=torch.int64), in_size)) / in_size
    return (u, v) if band % 2 == 0 else (torch.zeros(band, dtype=torch.float64), torch.zeros(in_size, dtype=torch.float64))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _lowfreq_resize_axis(in_size: int, band: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    real, _ = lowfreq_axis_operator(in_size, band)
    u, v = lowfreq_imag_factors(in_size, band)
    if out_size == band:
        return real, u, v
    resize = resize_operator(band, out_size, band)
    return resize @ real, resize @ u, v


def lowfreq_crop_axes(in_size, size, out_size) -> tuple[torch.Tensor, ...]:
    """float64 operators of the lowfreq crop to `size`, resized to `out_size`, for `separable_map`.

    Returns (rows, cols, row_u, row_v, col_u, col_v): rows (1, 1, oh, h) and cols (1, 1, ow, w)
    hold the real parts; the imaginary term `-Im(A_h) x Im(A_w)^T` is rank one,
    `(row_v . x col_v) * outer(row_u, col_u)`, with factors of shape (1, length). It is non-zero
    only when both bands are even (`has_rank_one_term`); otherwise the factors are zeros and
    callers leave the term out.
    """
    (h, w), (bh, bw), (oh, ow) = in_size, size, out_size
    real_h, u_h, v_h = _lowfreq_resize_axis(h, bh, oh)
    real_w, u_w, v_w = _lowfreq_resize_axis(w, bw, ow)
    return real_h[None, None], real_w[None, None], -u_h[None], v_h[None], u_w[None], v_w[None]


def has_rank_one_term(size) -> bool:
    """Whether lowfreq_crop's imaginary term is non-zero: both kept bands even."""
    return size[0] % 2 == 0 and size[1] % 2 == 0


@functools.lru_cache(maxsize=_CACHE_SIZE)
def lowfreq_crop_operators_cached(in_size, size, out_size, dtype, device):
    """`lowfreq_crop_axes` converted and kept on `device`; callers must not modify the result."""
    with torch.inference_mode(False):  # a first call under inference_mode must not cache inference tensors
        return tuple(_on_device(t, dtype, device) for t in lowfreq_crop_axes(in_size, size, out_size))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def lowfreq_crop_axes_with_factor_rows_cached(in_size, size, out_size, dtype, device):
    """Per axis, the (out + 1 or out, in) lowfreq operator that per-sample maps are composed with.

    The real part of each axis's lowfreq crop (resized to `out_size`), with the rank-one term's
    input-side factor v as one extra last row when the term is present (`has_rank_one_term`):
    a map C applied on the input side (a crop box, a flip) changes the operator into `rows @ C`
    and v into `v @ C`, so one product per axis covers both. Converted to `dtype`, kept on
    `device`; callers must not modify the result.
    """
    rows, cols, _, row_v, _, col_v = lowfreq_crop_axes(in_size, size, out_size)
    with torch.inference_mode(False):  # a first call under inference_mode must not cache inference tensors
        rows, cols = rows[0, 0], cols[0, 0]
        if has_rank_one_term(size):
            rows, cols = torch.cat([rows, row_v]), torch.cat([cols, col_v])
        return tuple(_on_device(t, dtype, device) for t in (rows, cols))


def _on_device(t: torch.Tensor, dtype, device) -> torch.Tensor:
    """A fresh copy of CPU tensor t in `dtype` on `device`, complete when this returns: a cached
    operator may be built on one thread's CUDA stream and read on another's (the input pipeline
    makes its batches on a stream of its own), so its conversion must not be left queued on the
    first. Converted on the host, then copied from pageable memory, which the host waits for."""
    return t.to(dtype=dtype).to(device=device, copy=True)
