"""RandomResizedCrop boxes and horizontal flips for a whole batch, each sample from its own seed.

`sample_boxes` is torchvision's `RandomResizedCrop.get_params` (10 attempts at a random area
fraction in `scale` and a log-uniform aspect ratio in `ratio`, the first box that fits wins, else
the central crop clamped to `ratio`) run on all samples at once in numpy, where the Python loop
would cost ~30 µs per sample, as much host time as a training step has at 30k images/s.

Its random numbers are counter-based (`counter_uniforms`): draw k of a sample is a hash of
(sample seed, stream, k), so a sample's box depends on its seed alone, not on the batch it lands
in or on the draws of other samples; a replay round is a stream. `mix_seed` folds several integers
into one seed the same way (for the per-batch RandAugment generator).
"""
import math
import numbers

import numpy as np
import torch

from .checks import as_python

ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its central-crop fallback
# Per sample: an area fraction and a log aspect ratio per attempt, then top, left and the flip coin.
AREA_DRAWS, RATIO_DRAWS, TOP_DRAW, LEFT_DRAW, FLIP_DRAW = (
    slice(0, ATTEMPTS), slice(ATTEMPTS, 2 * ATTEMPTS), 2 * ATTEMPTS, 2 * ATTEMPTS + 1, 2 * ATTEMPTS + 2)
DRAWS = 2 * ATTEMPTS + 3

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele et al. 2014): a bijective, well-mixing 64-bit hash."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN_GAMMA
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def mix_seed(*values: int) -> int:
    """A non-negative 63-bit seed that depends on every integer of `values` (Python or NumPy) and
    their order."""
    state = np.zeros((), dtype=np.uint64)
    for value in values:
        state = _splitmix64(state ^ np.uint64(int(value) % 2**64))
    return int(state >> np.uint64(1))


def counter_uniforms(sample_seeds, stream: int, count: int) -> np.ndarray:
    """(N, count) float64 uniforms in [0, 1): entry (n, k) a hash of (sample_seeds[n], stream, k)."""
    keys = _splitmix64(np.asarray(sample_seeds, dtype=np.uint64) ^ np.uint64(mix_seed(stream)))
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys[:, None] + np.arange(count, dtype=np.uint64) * _GOLDEN_GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def check_scale_and_ratio(scale, ratio) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, ratio) as float pairs; ValueError/TypeError naming the argument when unusable."""
    pairs = []
    for name, value in (("scale", scale), ("ratio", ratio)):
        items = as_python(value)
        if not (isinstance(items, (tuple, list)) and len(items) == 2 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items)):
            raise TypeError(f"{name} must be a pair of numbers (low, high), got {value!r}")
        low, high = float(items[0]), float(items[1])
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")
        pairs.append((low, high))
    if pairs[0][1] > 1:
        raise ValueError(f"scale must not exceed 1 (the whole image), got {scale!r}")
    return pairs[0], pairs[1]


def sample_boxes(heights, widths, uniforms: np.ndarray, scale, ratio, flip_prob: float = 0.5) -> np.ndarray:
    """(N, 5) int64 (top, left, height, width, flip) for images of the given sizes.

    `uniforms` (N, DRAWS) in [0, 1) drive RandomResizedCrop.get_params' draws: attempt a uses
    `scale[0] + (scale[1] - scale[0]) * uniforms[:, AREA_DRAWS][:, a]` as its area fraction and the
    log aspect ratio likewise from RATIO_DRAWS between torchvision's float32 logs of `ratio`; the
    winning box's top is `floor(u * (H - h + 1))` of TOP_DRAW (left likewise); flip when the
    FLIP_DRAW uniform is below flip_prob.
    """
    height = np.asarray(heights, dtype=np.int64)
    width = np.asarray(widths, dtype=np.int64)
    area = (height * width).astype(np.float64)[:, None]
    log_ratio = torch.log(torch.tensor(ratio)).tolist()  # float32 logs, as get_params takes them
    target_area = area * (scale[0] + (scale[1] - scale[0]) * uniforms[:, AREA_DRAWS])
    aspect = np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * uniforms[:, RATIO_DRAWS])
    box_w = np.round(np.sqrt(target_area * aspect)).astype(np.int64)  # round half to even, as Python's round
    box_h = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (box_w > 0) & (box_w <= width[:, None]) & (box_h > 0) & (box_h <= height[:, None])
    first = fits.argmax(1)
    found = fits.any(1)
    rows = np.arange(len(height))
    fallback_h, fallback_w = _central_fallback(height, width, ratio)
    h = np.where(found, box_h[rows, first], fallback_h)
    w = np.where(found, box_w[rows, first], fallback_w)
    top = np.where(found, np.floor(uniforms[:, TOP_DRAW] * (height - h + 1)).astype(np.int64), (height - h) // 2)
    left = np.where(found, np.floor(uniforms[:, LEFT_DRAW] * (width - w + 1)).astype(np.int64), (width - w) // 2)
    flip = (uniforms[:, FLIP_DRAW] < flip_prob).astype(np.int64)
    return np.stack([top, left, h, w, flip], 1)


def _central_fallback(height: np.ndarray, width: np.ndarray, ratio) -> tuple[np.ndarray, np.ndarray]:
    """get_params' fallback box size: the whole image, cut to the nearest allowed aspect ratio."""
    in_ratio = width / height
    low, high = min(ratio), max(ratio)
    too_tall, too_wide = in_ratio < low, in_ratio > high
    h = np.where(too_tall, np.round(width / low).astype(np.int64), height)
    w = np.where(too_wide, np.round(height * high).astype(np.int64), width)
    return h, w
