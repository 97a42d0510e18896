"""Batched, per-sample RandAugment on uint8 image tensors (any device).

The semantics are timm's `rand_augment_transform("rand-m{m}-mstd0.5-inc1", hparams)` with the
hparams train.py passes (img_mean fill, no 'interpolation' key) and Pillow's ops underneath:
the 15 ops of timm's increasing set, ops drawn uniformly with replacement per image, each applied
with probability `prob`, magnitude per (image, op) ~ N(m, magnitude_std) clipped to [0, 10], signed
ops negated with probability 1/2, and, because timm's AugmentOp gets no 'interpolation' hparam, each
geometric op picks bilinear or bicubic at random (timm's _RANDOM_INTERPOLATION).

All draws for a batch happen at once on the images' device. Per op slot, the per-image statistics
(histograms, channel extremes, grayscale sums) and parameters (lookup tables, blend factors, affine
maps) are computed once for the batch, and each image gets its op:
  pointwise  AutoContrast, Equalize, Invert, Posterize, Solarize, SolarizeAdd: a 256-entry lookup
             table per (image, channel), built from per-image statistics;
  enhance    Color, Contrast, Brightness, Sharpness: Pillow's ImageEnhance blend with a
             per-image degenerate image (grayscale, grayscale mean, black, 3x3 smooth);
  warp       Rotate, ShearX/Y, TranslateX/YRel: one inverse affine map per image, sampled as
             Pillow's ImagingGenericTransform does (bilinear or bicubic taps, fill outside).
On a GPU each slot is three Triton launches (effkernels/triton/rand_augment.py: a statistics pass,
the lookup tables, then one pass in which each image runs its own op only). Elsewhere three
whole-batch torch stages run, every image taking the result of the stage its op belongs to: the
torch formulation, which the tests hold against Pillow and the Triton kernels against it.
Nothing in rand_augment reads a value back to the host or copies one in, so it queues on a GPU
without syncs. Per-sample parameters are float64 vectors (N values; Pillow's level arithmetic is in
double), so a device without float64 (MPS) is not supported.

Integer results follow Pillow's rounding (truncation after float blends, the 16-bit fixed point
grayscale, the rounded smooth filter), so the pointwise and enhance ops match Pillow exactly. The
warps compute sample positions in double as Pillow does (same fill decisions, same taps) but
interpolate in float32 where Pillow uses double, which moves some pixels by one level (measured: at
most 1 level, on up to 6 % of the pixels for a translation by a near-integer number of pixels, where
Pillow truncates b - 1e-14 to b - 1); interpolating in float64 would match exactly, at a cost on GPUs
with slow double arithmetic.
"""
import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checks import check_int

__all__ = ["OPS", "apply_op", "rand_augment"]

OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
_ID = {name: index for index, name in enumerate(OPS)}
_SKIPPED = len(OPS)  # op id of a slot whose coin said "not applied"
_ENHANCE_OPS = ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")
_WARP_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_LEVEL_DENOM = 10.0  # timm: magnitude M maps to the fraction M / 10 of each op's range
_DEFAULT_FILL = (124, 116, 104)


# ---------------------------------------------------------------------------------- arguments
def _check_images(images):
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")


def _check_fill(fill, channels):
    if not isinstance(fill, (tuple, list)) or len(fill) != channels:
        raise ValueError(f"fill must be a sequence of {channels} values (one per channel), got {fill!r}")
    if not all(isinstance(v, numbers.Integral) and 0 <= v <= 255 for v in fill):
        raise ValueError(f"fill values must be integers in [0, 255], got {fill!r}")


def _check_magnitude(magnitude, n, device):
    """A number or an (N,) tensor in [0, 10] -> (N,) float64 on device (one host sync for a tensor)."""
    if isinstance(magnitude, torch.Tensor):
        if magnitude.dim() > 1 or (magnitude.dim() == 1 and magnitude.shape[0] != n):
            raise ValueError(f"magnitude must be a number or a ({n},) tensor, got shape {tuple(magnitude.shape)}")
        if magnitude.is_complex() or magnitude.dtype == torch.bool:
            raise TypeError(f"magnitude must be real, got {magnitude.dtype}")
        magnitude = magnitude.to(device=device, dtype=torch.float64).expand(n)
        if not bool(((magnitude >= 0) & (magnitude <= _LEVEL_DENOM)).all()):
            raise ValueError("magnitude values must lie in [0, 10]")
        return magnitude
    return torch.full((n,), _check_magnitude_number(magnitude), dtype=torch.float64, device=device)


def _check_magnitude_number(magnitude):
    if not isinstance(magnitude, numbers.Real) or isinstance(magnitude, bool):
        raise TypeError(f"magnitude must be a real number, got {type(magnitude).__name__}")
    if not 0 <= magnitude <= _LEVEL_DENOM:
        raise ValueError(f"magnitude must lie in [0, 10], got {magnitude}")
    return float(magnitude)


def _per_sample_flag(value, n, device, name):
    """A bool or an (N,) bool tensor -> (N,) bool tensor on device."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool or value.dim() > 1 or (value.dim() == 1 and value.shape[0] != n):
            raise ValueError(f"{name} must be a bool or a ({n},) bool tensor")
        return value.to(device).expand(n)
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or a bool tensor, got {type(value).__name__}")
    return torch.full((n,), value, dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------------- device constants
# Tensors made from Python lists are copied host-to-device, and torch follows a copy from pageable
# memory with a stream sync; the hot path builds its constants with kernels instead.
def _is_one_of(op, names):
    """Bool mask of the images whose op is one of names."""
    mask = op == _ID[names[0]]
    for name in names[1:]:
        mask = mask | (op == _ID[name])
    return mask


def _channel_constant(values, like):
    """(1, C, 1, 1) tensor of per-channel Python numbers, dtype and device of like."""
    channel = torch.arange(len(values), device=like.device).view(1, -1, 1, 1)
    out = torch.zeros((1, len(values), 1, 1), dtype=like.dtype, device=like.device)
    for index, value in enumerate(values):
        out = torch.where(channel == index, value, out)
    return out


# ---------------------------------------------------------------------------------- level functions
def _fraction(magnitude):
    """M / 10 as Python divides. Divisions here take two tensors: torch turns a division by or of a
    Python scalar into a multiplication by a reciprocal, one ulp off at times, enough to flip an int()."""
    return magnitude / torch.full_like(magnitude, _LEVEL_DENOM)


def _signed(value, negate):
    """timm's _randomly_negate, with the coin drawn by the caller."""
    return torch.where(negate, -value, value)


def _enhance_factor(magnitude, negate):
    """timm's _enhance_increasing_level_to_arg: max(0.1, 1 +- 0.9 M / 10)."""
    return (1.0 + _signed(_fraction(magnitude) * 0.9, negate)).clamp(min=0.1)


# ---------------------------------------------------------------------------------- image statistics
class _Stats(NamedTuple):
    """Per image: lo, hi (N, C, 1) int64 channel extremes, hist (N, C, 256) int64, gray_total (N,)
    int64 sum of the grayscale image, pixels per plane."""
    lo: torch.Tensor
    hi: torch.Tensor
    hist: torch.Tensor
    gray_total: torch.Tensor
    pixels: int


def _image_stats(images):
    """The statistics AutoContrast, Equalize and Contrast read, in torch ops."""
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    index = flat.long()
    ones = torch.ones((), dtype=torch.int64, device=images.device).expand(n, c, h * w)
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=images.device).scatter_add_(2, index, ones)
    lo, hi = flat.amin(-1, keepdim=True).long(), flat.amax(-1, keepdim=True).long()
    return _Stats(lo, hi, hist, _grayscale(images).sum(dim=(1, 2, 3), dtype=torch.int64), h * w)


# ---------------------------------------------------------------------------------- pointwise ops
def _autocontrast_lut(lo, hi, levels):
    """ImageOps.autocontrast (cutoff 0): stretch [lo, hi] to [0, 255], lut = int(i * scale + offset)
    in double as Pillow computes it; a channel with one value keeps the identity."""
    span = (hi - lo).clamp(min=1).double()
    scale = torch.full_like(span, 255.0) / span  # a tensor numerator: see _fraction
    stretched = (levels.double() * scale + (-lo) * scale).trunc().clamp(0, 255).long()
    return torch.where(hi > lo, stretched, levels)


def _equalize_lut(hist, hi, pixels, levels):
    """ImageOps.equalize as of Pillow 13: step = (count - count of the top value) // 255,
    lut[i] = (step // 2 + pixels below i) // step, identity when step is 0; the table runs past 255
    at the top values and Pillow's point() clips it."""
    top = hist.gather(2, hi)
    step = (pixels - top) // 255
    below = hist.cumsum(-1) - hist
    equalized = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    return torch.where(step > 0, equalized, levels)


def _posterize_lut(magnitude, levels):
    """timm's PosterizeIncreasing keeps 4 - int(4 M / 10) bits: 0 bits at M = 10 maps everything to 0
    (Pillow >= 12 rejects bits = 0; older Pillow's mask gave 0 too)."""
    bits = 4 - (_fraction(magnitude) * 4).trunc().long()
    return levels & (256 - 2 ** (8 - bits))  # ~(2 ** (8 - bits) - 1) in 8 bits


def _solarize_lut(magnitude, levels):
    """ImageOps.solarize with timm's SolarizeIncreasing threshold 256 - min(256, int(256 M / 10))."""
    threshold = 256 - (_fraction(magnitude) * 256).trunc().long().clamp(max=256)
    return torch.where(levels < threshold, levels, 255 - levels)


def _solarize_add_lut(magnitude, levels):
    """timm's solarize_add: below 128 add min(128, int(110 M / 10)), saturating at 255."""
    add = (_fraction(magnitude) * 110).trunc().long().clamp(max=128)
    return torch.where(levels < 128, (levels + add).clamp(max=255), levels)


def _pointwise_lut(op, magnitude, stats):
    """(N, C, 256) int64: each image's lookup table for its pointwise op, the identity for others."""
    n, c = stats.hist.shape[:2]
    levels = torch.arange(256, device=op.device).expand(n, c, 256)
    m = magnitude.view(n, 1, 1)
    tables = {
        "AutoContrast": _autocontrast_lut(stats.lo, stats.hi, levels),
        "Equalize": _equalize_lut(stats.hist, stats.hi, stats.pixels, levels),
        "Invert": 255 - levels,
        "PosterizeIncreasing": _posterize_lut(m, levels),
        "SolarizeIncreasing": _solarize_lut(m, levels),
        "SolarizeAdd": _solarize_add_lut(m, levels),
    }
    lut = levels
    for name, table in tables.items():
        lut = torch.where(op.view(n, 1, 1) == _ID[name], table, lut)
    return lut


def _pointwise(images, lut):
    """The pointwise ops as one gather from each (image, channel)'s lookup table."""
    n, c, h, w = images.shape
    return lut.to(torch.uint8).gather(2, images.reshape(n, c, h * w).long()).view(n, c, h, w)


# ---------------------------------------------------------------------------------- enhance stage
def _grayscale(images):
    """Pillow's convert("L"): (R 19595 + G 38470 + B 7471 + 2**15) >> 16, the 16-bit fixed point form
    of the ITU-R 601-2 weights 0.299/0.587/0.114; a 1-channel image is its own grayscale."""
    if images.shape[1] == 1:
        return images.int()
    r, g, b = images.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).unsqueeze(1)


def _gray_mean(stats):
    """(N,) int64: ImageEnhance.Contrast's degenerate level, int(mean of the grayscale image + 0.5),
    in integers."""
    return (2 * stats.gray_total + stats.pixels) // (2 * stats.pixels)


def _smooth(pixels):
    """ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, scale 13) of float32 pixels. Pillow's
    Filter.c adds 0.5 and truncates: floor((S + 6.5) / 13) of the integer sum S, which lies at least
    1/26 from an integer, so float32 gets it exactly; the border pixels stay unchanged (all of them
    in an image less than 3 pixels high or wide, which Pillow returns as it is)."""
    _, c, h, w = pixels.shape
    if h < 3 or w < 3:
        return pixels.clone()
    kernel = torch.where(torch.arange(9, device=pixels.device).view(3, 3) == 4, 5.0, 1.0)
    bias = torch.full((c,), 6.5, device=pixels.device)
    sums = F.conv2d(pixels, kernel.expand(c, 1, 3, 3), bias, groups=c)  # exact: integers < 2**24
    out = pixels.clone()
    out[:, :, 1:-1, 1:-1] = (sums / 13).floor()
    return out


def _blend(degenerate, pixels, alpha):
    """Image.blend(degenerate, image, alpha) as Blend.c computes it: in1 + alpha * (in2 - in1) in float32
    (a separate multiply and add, no fused multiply-add), clipped to [0, 255], truncated to uint8."""
    return (degenerate + alpha * (pixels - degenerate)).clamp(0, 255).to(torch.uint8)  # the cast truncates


def _enhance(images, op, alpha, gray_mean):
    """Color, Contrast, Brightness and Sharpness as blends with a per-image degenerate image; alpha
    (N,) float32 blend factors, gray_mean (N,) the Contrast level."""
    n = images.shape[0]
    pixels = images.float()
    op = op.view(n, 1, 1, 1)
    degenerate = torch.where(op == _ID["ColorIncreasing"], _grayscale(images).float(), 0.0)
    degenerate = torch.where(op == _ID["ContrastIncreasing"], gray_mean.view(n, 1, 1, 1).float(), degenerate)
    degenerate = torch.where(op == _ID["SharpnessIncreasing"], _smooth(pixels), degenerate)
    blended = _blend(degenerate, pixels, alpha.view(n, 1, 1, 1))
    return torch.where(_is_one_of(op, _ENHANCE_OPS), blended, images)


# ---------------------------------------------------------------------------------- warp stage
def _affine_coefficients(op, magnitude, negate, height, width):
    """(N, 6) float64 coefficients (a, b, c, d, e, f) of Pillow's inverse map, input = (a x + b y + c,
    d x + e y + f) at output pixel centres, for timm's geometric ops; identity for other images."""
    n = op.shape[0]
    one, zero = torch.ones_like(magnitude), torch.zeros_like(magnitude)
    fraction = _fraction(magnitude)
    shear = _signed(fraction * 0.3, negate)
    shift = _signed(fraction * 0.45, negate)
    # Image.rotate: angle % 360, cos and sin rounded to 15 decimals, the matrix about the centre
    # (w / 2, h / 2); repeated in double so that sample positions (and fill decisions) are Pillow's.
    angle = -torch.deg2rad(torch.remainder(_signed(fraction * 30.0, negate), 360.0))
    cos, sin = torch.cos(angle).round(decimals=15), torch.sin(angle).round(decimals=15)
    cx, cy = width / 2.0, height / 2.0
    rotate = torch.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], 1)
    matrices = {
        "Rotate": rotate,
        "ShearX": torch.stack([one, shear, zero, zero, one, zero], 1),
        "ShearY": torch.stack([one, zero, zero, shear, one, zero], 1),
        "TranslateXRel": torch.stack([one, zero, shift * width, zero, one, zero], 1),
        "TranslateYRel": torch.stack([one, zero, zero, zero, one, shift * height], 1),
    }
    coefficients = torch.stack([one, zero, zero, zero, one, zero], 1)
    for name, matrix in matrices.items():
        coefficients = torch.where(op.view(n, 1) == _ID[name], matrix, coefficients)
    return coefficients


def _cubic(v1, v2, v3, v4, d):
    """Pillow's BICUBIC macro (a = -1) in its Horner form, v2 + d (p2 + d (p3 + d p4)), in 8 tensor ops.
    The difference form returns v2 exactly at d = 0 and a constant exactly, which matters because the
    result is truncated. With v1 = v2 and v3 = v4 it is Pillow's BILINEAR, v2 + d (v3 - v2)."""
    a, b = v1 - v2, v3 - v4
    p2 = v3 - v1
    p3 = torch.add(b, a, alpha=2)
    minus_p4 = a + b
    t = torch.addcmul(p3, d, minus_p4, value=-1)
    return torch.addcmul(v2, d, torch.addcmul(p2, d, t))


def _sample_positions(coefficients, height, width):
    """Source positions of the output pixel centres: the inside mask (Pillow's filters return fill
    outside [0, W) x [0, H)), the top-left integer tap and the fractional offsets. Positions are
    computed in double as Pillow does (one value per pixel, not per channel, so cheap); the offsets
    are then rounded to float32 for the per-channel blends."""
    a = coefficients.unsqueeze(-1).unsqueeze(-1).unbind(1)
    ys = torch.arange(height, device=coefficients.device, dtype=torch.float64).view(-1, 1) + 0.5
    xs = torch.arange(width, device=coefficients.device, dtype=torch.float64) + 0.5
    x_in = a[0] * xs + a[1] * ys + a[2]
    y_in = a[3] * xs + a[4] * ys + a[5]
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    x_in, y_in = x_in - 0.5, y_in - 0.5
    x0, y0 = x_in.floor(), y_in.floor()
    return inside, x0.long(), y0.long(), (x_in - x0).float(), (y_in - y0).float()


def _warp(images, op, coefficients, bicubic, fill):
    """Rotate, ShearX/Y and TranslateX/YRel as one affine resampling per image (coefficients from
    _affine_coefficients): 4x4 taps at offsets -1..2 for bicubic, (0, 0, 1, 1) for bilinear, indices
    clamped to the image as Pillow's XCLIP/YCLIP."""
    n, c, h, w = images.shape
    inside, x0, y0, dx, dy = _sample_positions(coefficients, h, w)
    taps = torch.arange(4, device=images.device)
    offsets = torch.where(bicubic.view(n, 1), taps - 1, taps // 2).view(n, 4, 1, 1)
    columns = (x0.unsqueeze(1) + offsets).clamp(0, w - 1)  # (N, 4, H, W)
    rows = (y0.unsqueeze(1) + offsets).clamp(0, h - 1) * w
    flat = images.reshape(n, c, h * w).float()
    dx, dy = dx.unsqueeze(1), dy.unsqueeze(1)

    def row(i):
        """Taps of row i, blended horizontally."""
        indices = ((rows[:, i] + columns[:, j]).view(n, 1, h * w).expand(n, c, h * w) for j in range(4))
        return _cubic(*(flat.gather(2, index).view(n, c, h, w) for index in indices), dx)

    warped = _cubic(*(row(i) for i in range(4)), dy)
    # Pillow clamps the bicubic value to [0, 255] and truncates; the bilinear value stays in range.
    warped = warped.clamp(0, 255).to(torch.uint8)  # the cast truncates
    warped = torch.where(inside.unsqueeze(1), warped, _channel_constant(fill, images))
    return torch.where(_is_one_of(op, _WARP_OPS).view(n, 1, 1, 1), warped, images)


# ---------------------------------------------------------------------------------- one op slot
def _draw_parameters(op, magnitude, negate, height, width):
    """(blend factors float32, affine coefficients (..., 6) float64) of draws of any shape: what the
    draws alone fix, computed once for all of a batch's slots."""
    shape = op.shape
    alpha = _enhance_factor(magnitude, negate).float()  # Pillow takes the factor as a C float
    coefficients = _affine_coefficients(op.flatten(), magnitude.flatten(), negate.flatten(), height, width)
    return alpha, coefficients.view(*shape, 6)


def _apply_slot(images, op, magnitude, bicubic, fill, alpha, coefficients):
    """Each image's own op (op: (N,) ids, _SKIPPED for none) with its parameters (alpha,
    coefficients: _draw_parameters'). On a GPU the Triton kernels (effkernels/triton/rand_augment.py:
    statistics, lookup tables, then each image's own op, three launches); elsewhere the torch
    statistics and lookup tables and three whole-batch torch stages (each image taking the stage of
    its op)."""
    if _uses_triton(images):
        from .triton.rand_augment import apply_slot

        return apply_slot(images.contiguous(), op, magnitude, alpha, coefficients, bicubic, fill)
    stats = _image_stats(images)
    out = _pointwise(images, _pointwise_lut(op, magnitude, stats))
    out = _enhance(out, op, alpha, _gray_mean(stats))
    return _warp(out, op, coefficients, bicubic, fill)


def _uses_triton(images) -> bool:
    """The Triton kernels run the pixels of CUDA images (tests route CPU images to them under the
    Triton interpreter)."""
    return images.device.type == "cuda"


# ---------------------------------------------------------------------------------- public API
def apply_op(images, name, magnitude, *, negate=False, bicubic=True, fill=_DEFAULT_FILL):
    """Apply one of timm's ops, by its timm name, to every image with the given per-sample parameters.

    images: uint8 (N, C, H, W); magnitude: a number or an (N,) tensor in [0, 10]; negate: the outcome
    of timm's _randomly_negate per sample (used by the signed ops); bicubic: True for bicubic, False for
    bilinear (used by the geometric ops); fill: the colour outside the warped image (timm's img_mean).
    Reproduces timm's AugmentOp(name, prob=1, magnitude) with those draws. Validating a magnitude tensor
    reads it back to the host once; rand_augment does not.
    """
    _check_images(images)
    if name not in _ID:
        raise ValueError(f"name must be one of {OPS}, got {name!r}")
    n, device = images.shape[0], images.device
    _check_fill(fill, images.shape[1])
    magnitude = _check_magnitude(magnitude, n, device)
    negate = _per_sample_flag(negate, n, device, "negate")
    bicubic = _per_sample_flag(bicubic, n, device, "bicubic")
    op = torch.full((n,), _ID[name], device=device)
    return _apply_slot(images, op, magnitude, bicubic, fill, *_draw_parameters(op, magnitude, negate, *images.shape[2:]))


def _draw_magnitudes(shape, magnitude, magnitude_std, generator, device):
    """timm's AugmentOp: gauss(m, std) when 0 < std < inf, uniform(0, m) when std is inf, clipped to [0, 10]."""
    if magnitude_std == math.inf:
        drawn = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * magnitude
    else:
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float64)
        drawn = magnitude + magnitude_std * noise
    return drawn.clamp(0.0, _LEVEL_DENOM)


def _draw_plan(n, num_ops, magnitude, prob, magnitude_std, generator, device):
    """All of a batch's random draws, each (num_ops, N), on device: op ids (_SKIPPED where the op's coin
    says no; timm's AugmentOp skips when random() > prob), magnitudes, negate coins, bicubic coins."""
    shape = (num_ops, n)
    op = torch.randint(len(OPS), shape, generator=generator, device=device)
    op = torch.where(torch.rand(shape, generator=generator, device=device) < prob, op, _SKIPPED)
    magnitudes = _draw_magnitudes(shape, magnitude, magnitude_std, generator, device)
    negate = torch.rand(shape, generator=generator, device=device) < 0.5
    bicubic = torch.rand(shape, generator=generator, device=device) < 0.5
    return op, magnitudes, negate, bicubic


def rand_augment(images, magnitude, *, num_ops=2, prob=0.5, magnitude_std=0.5, fill=_DEFAULT_FILL, generator=None):
    """timm's RandAugment `rand-m{magnitude}-n{num_ops}-p{prob}-mstd{magnitude_std}-inc1` on a batch.

    images: uint8 (N, C, H, W) on any device; returns a new uint8 tensor of the same shape. Per image,
    `num_ops` ops are drawn uniformly with replacement from OPS and each is applied with probability
    `prob`, with its own magnitude, sign and interpolation (bilinear or bicubic, 1/2 each, as timm
    does without an 'interpolation' hparam). Every draw comes from `generator` (which must live on the
    images' device) in one call per kind, and nothing is read back to the host.
    """
    _check_images(images)
    magnitude = _check_magnitude_number(magnitude)
    check_int("num_ops", num_ops, 0)
    if not isinstance(prob, numbers.Real) or not 0 <= prob <= 1:
        raise ValueError(f"prob must be a number in [0, 1], got {prob!r}")
    if not isinstance(magnitude_std, numbers.Real) or not magnitude_std >= 0:
        raise ValueError(f"magnitude_std must be a number >= 0 (inf: uniform), got {magnitude_std!r}")
    _check_fill(fill, images.shape[1])

    op, magnitudes, negate, bicubic = _draw_plan(images.shape[0], num_ops, magnitude, prob, float(magnitude_std),
                                                 generator, images.device)
    alpha, coefficients = _draw_parameters(op, magnitudes, negate, *images.shape[2:])
    out = images.clone()
    for slot in range(num_ops):
        out = _apply_slot(out, op[slot], magnitudes[slot], bicubic[slot], fill, alpha[slot], coefficients[slot])
    return out
