"""Triton kernels of effkernels.augment: one RandAugment op slot of a batch in three launches.

The torch formulation (effkernels.augment) runs every stage over the whole batch and lets each image
take the result of its own op: per slot a histogram scatter over int64 indices, 16 float32 gathers
for the warp and ~900 small torch ops per rand_augment call, so on a GPU the pipeline's augmentation
at 224 px is bound by host launches and by memory traffic many times the image's size. Here:
- `image_stats`: one pass over the batch (uint8 read once) gives every image's per-channel
  histogram, minimum and maximum and its grayscale sum (AutoContrast, Equalize, Contrast).
- `lookup_tables`: one small launch builds every image's pointwise-op table from those statistics
  and its magnitude (the torch path's ~40 small ops per slot, augment._pointwise_lut, which the
  tests hold it against).
- `apply_slot`: one pass that applies each image's own op and nothing else: a program owns a block
  of one image's pixels, reads the image's op id, and runs the lookup table (pointwise ops), the
  blend with its degenerate image (enhance ops) or the affine resampling (warps) for that block.
The parameters fixed by the draws alone (blend factors, affine coefficients) are computed once per
call for all slots by the same torch code as the torch path (effkernels.augment). The arithmetic
on pixels repeats the torch path's operation by operation (integer grayscale and smoothing, float32
blends, float64 sample positions, the bicubic Horner form), compiled without fused multiply-adds
(enable_fp_fusion=False): Pillow rounds each product of a blend before the sum, and the enhance ops
must match it exactly.
"""
import os

import torch
import triton
import triton.language as tl

# Op ids (effkernels.augment.OPS order) that the kernels branch on.
_AUTO_CONTRAST, _EQUALIZE, _INVERT = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
_ROTATE, _POSTERIZE, _SOLARIZE, _SOLARIZE_ADD = tl.constexpr(3), tl.constexpr(4), tl.constexpr(5), tl.constexpr(6)
_COLOR, _CONTRAST, _BRIGHTNESS, _SHARPNESS = tl.constexpr(7), tl.constexpr(8), tl.constexpr(9), tl.constexpr(10)
_SHEAR_X, _TRANSLATE_Y = tl.constexpr(11), tl.constexpr(14)
STATS_WIDTH = 259  # per (image, channel): 256 histogram bins, 255 - minimum, maximum, grayscale sum (channel 0)
STATS_BLOCK, STATS_SPLIT = 1024, 8  # pixels per step; programs per image (each sums many blocks, then atomics)
APPLY_BLOCK = 256  # pixels per program: the warps' 16 taps fit in 72 registers (sm_90), 7 programs per SM
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter's cost is per program: one per image


@triton.jit
def _image_stats_kernel(images_ptr, stats_ptr, HW, SPLIT, C: tl.constexpr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    """Program (n, s) sums the blocks s, s + SPLIT, ... of image n in registers, then adds them to
    the image's row in one atomic per value (integers: the same result in any order)."""
    n = tl.program_id(0).to(tl.int64)
    image = images_ptr + n * C * HW
    bins = tl.arange(0, 256)
    gray_total = tl.zeros((), dtype=tl.int64)
    for c in tl.static_range(C):
        hist = tl.zeros((256,), dtype=tl.int32)
        negated_min = tl.zeros((), dtype=tl.int32)
        maximum = tl.zeros((), dtype=tl.int32)
        for start in range(tl.program_id(1) * BLOCK, HW, SPLIT * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < HW
            x = tl.load(image + c * HW + offs, mask=mask, other=0).to(tl.int32)
            # masked pixels read as 0: take them out of bin 0 again
            hist += tl.histogram(x, 256) - tl.where(bins == 0, BLOCK - tl.sum(mask.to(tl.int32), axis=0), 0)
            negated_min = tl.maximum(negated_min, tl.max(tl.where(mask, 255 - x, 0), axis=0))
            maximum = tl.maximum(maximum, tl.max(x, axis=0))
            if C == 3:  # Pillow's convert("L") in 16-bit fixed point (augment._grayscale), per pixel
                if c == 2:
                    gray = (tl.load(image + offs, mask=mask, other=0).to(tl.int32) * 19595
                            + tl.load(image + HW + offs, mask=mask, other=0).to(tl.int32) * 38470
                            + x * 7471 + 32768) >> 16
                    gray_total += tl.sum(gray, axis=0).to(tl.int64)
            else:
                gray_total += tl.sum(x, axis=0).to(tl.int64)
        row = stats_ptr + (n * C + c) * WIDTH
        tl.atomic_add(row + bins, hist.to(tl.int64))
        tl.atomic_max(row + 256, negated_min.to(tl.int64))
        tl.atomic_max(row + 257, maximum.to(tl.int64))
    tl.atomic_add(stats_ptr + n * C * WIDTH + 258, gray_total)


def image_stats(images: torch.Tensor) -> torch.Tensor:
    """(N, C, 259) int64 per image and channel: histogram (256 bins), 255 - minimum, maximum, and in
    channel 0's last column the sum of the grayscale image (augment._image_stats reads it)."""
    n, c, h, w = images.shape
    stats = torch.zeros((n, c, STATS_WIDTH), dtype=torch.int64, device=images.device)
    split = min(STATS_SPLIT, triton.cdiv(h * w, STATS_BLOCK))
    if n and h * w:
        _image_stats_kernel[(n, split)](images, stats, h * w, split, C=c, WIDTH=STATS_WIDTH, BLOCK=STATS_BLOCK)
    return stats


@triton.jit
def _lookup_table_kernel(stats_ptr, op_ptr, magnitude_ptr, lut_ptr, pixels, C: tl.constexpr, WIDTH: tl.constexpr):
    """Program (n, c) writes the 256-entry table of image n's pointwise op for channel c (the identity
    for other ops), as augment._pointwise_lut computes it: Pillow's double arithmetic for AutoContrast,
    integer arithmetic for Equalize, timm's levels M / 10 -> bits and thresholds."""
    n = tl.program_id(0).to(tl.int64)
    row = stats_ptr + (n * C + tl.program_id(1)) * WIDTH
    levels = tl.arange(0, 256).to(tl.int64)
    op = tl.load(op_ptr + n)
    lut = levels
    if op == _AUTO_CONTRAST:  # stretch [lo, hi] to [0, 255]: int(i * scale + offset) in double
        lo = 255 - tl.load(row + 256)
        hi = tl.load(row + 257)
        scale = 255.0 / tl.maximum(hi - lo, 1).to(tl.float64)
        stretched = (levels.to(tl.float64) * scale + (-lo).to(tl.float64) * scale).to(tl.int64)  # truncates
        lut = tl.where(hi > lo, tl.minimum(tl.maximum(stretched, 0), 255), levels)
    elif op == _EQUALIZE:  # (step // 2 + pixels below i) // step, step = (pixels - count at the top) // 255
        hist = tl.load(row + levels)
        top = tl.sum(tl.where(levels == tl.load(row + 257), hist, 0), axis=0)
        step = (pixels - top) // 255
        below = tl.cumsum(hist, axis=0) - hist
        lut = tl.where(step > 0, tl.minimum((step // 2 + below) // tl.maximum(step, 1), 255), levels)
    elif op == _INVERT:
        lut = 255 - levels
    elif (op >= _POSTERIZE) and (op <= _SOLARIZE_ADD):
        fraction = tl.load(magnitude_ptr + n) / 10.0  # a division, as augment._fraction
        if op == _POSTERIZE:  # keep 4 - int(4 M / 10) bits
            lut = levels & (256 - (1 << (4 + (fraction * 4.0).to(tl.int64))))
        elif op == _SOLARIZE:  # invert from 256 - min(256, int(256 M / 10)) up
            threshold = 256 - tl.minimum((fraction * 256.0).to(tl.int64), 256)
            lut = tl.where(levels < threshold, levels, 255 - levels)
        else:  # below 128 add min(128, int(110 M / 10)), saturating
            added = tl.minimum(levels + tl.minimum((fraction * 110.0).to(tl.int64), 128), 255)
            lut = tl.where(levels < 128, added, levels)
    tl.store(lut_ptr + (n * C + tl.program_id(1)) * 256 + levels, lut.to(tl.uint8))


def lookup_tables(stats: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, C, 256) uint8: each image's pointwise-op table per channel from its stats (image_stats),
    op ids and float64 magnitudes; the identity for the other ops."""
    n, c, _ = stats.shape
    lut = torch.empty((n, c, 256), dtype=torch.uint8, device=stats.device)
    if n:
        _lookup_table_kernel[(n, c)](stats, op, magnitude, lut, pixels, C=c, WIDTH=STATS_WIDTH, num_warps=1,
                                     enable_fp_fusion=False)
    return lut


@triton.jit
def _cubic(v1, v2, v3, v4, d):
    """augment._cubic: Pillow's bicubic (a = -1) in Horner form; bilinear when v1 = v2, v3 = v4."""
    a = v1 - v2
    b = v3 - v4
    p2 = v3 - v1
    p3 = b + 2.0 * a
    minus_p4 = a + b
    t = p3 - d * minus_p4
    return v2 + d * (p2 + d * t)


@triton.jit
def _tap(plane, y0, x0, dy_index, dx_index, bicubic, H, W, mask):
    """The pixel at tap (dy_index, dx_index) of the 4×4 (bicubic: offsets -1..2) or 2×2 (bilinear:
    0, 0, 1, 1) neighbourhood, indices clamped to the image, as float32."""
    oy = tl.where(bicubic, dy_index - 1, dy_index // 2)
    ox = tl.where(bicubic, dx_index - 1, dx_index // 2)
    y = tl.minimum(tl.maximum(y0 + oy, 0), H - 1)
    x = tl.minimum(tl.maximum(x0 + ox, 0), W - 1)
    return tl.load(plane + y * W + x, mask=mask, other=0).to(tl.float32)


@triton.jit
def _tap_row(plane, y0, x0, dy_index, dx, bicubic, H, W, mask):
    return _cubic(_tap(plane, y0, x0, dy_index, 0, bicubic, H, W, mask),
                  _tap(plane, y0, x0, dy_index, 1, bicubic, H, W, mask),
                  _tap(plane, y0, x0, dy_index, 2, bicubic, H, W, mask),
                  _tap(plane, y0, x0, dy_index, 3, bicubic, H, W, mask), dx)


@triton.jit
def _apply_slot_kernel(images_ptr, out_ptr, op_ptr, lut_ptr, alpha_ptr, stats_ptr, coefficients_ptr, bicubic_ptr,
                       fill0, fill1, fill2, H, W, C: tl.constexpr, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    HW = H * W
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    image = images_ptr + n * C * HW
    out = out_ptr + n * C * HW
    op = tl.load(op_ptr + n)
    if (op <= _SOLARIZE_ADD) and (op != _ROTATE):  # pointwise: the image's lookup table
        for c in tl.static_range(C):
            x = tl.load(image + c * HW + offs, mask=mask, other=0).to(tl.int32)
            y = tl.load(lut_ptr + (n * C + c) * 256 + x, mask=mask, other=0)
            tl.store(out + c * HW + offs, y.to(tl.uint8), mask=mask)
    elif (op >= _COLOR) and (op <= _SHARPNESS):  # enhance: Image.blend(degenerate, image, alpha)
        alpha = tl.load(alpha_ptr + n)
        row = offs // W
        col = offs % W
        gray = tl.load(image + offs, mask=mask, other=0).to(tl.int32)
        if C == 3:
            gray = (gray * 19595 + tl.load(image + HW + offs, mask=mask, other=0).to(tl.int32) * 38470
                    + tl.load(image + 2 * HW + offs, mask=mask, other=0).to(tl.int32) * 7471 + 32768) >> 16
        interior = mask & (row >= 1) & (row < H - 1) & (col >= 1) & (col < W - 1)
        for c in tl.static_range(C):
            plane = image + c * HW
            x = tl.load(plane + offs, mask=mask, other=0).to(tl.int32)
            if op == _COLOR:
                degenerate = gray.to(tl.float32)
            elif op == _CONTRAST:  # int(mean of the grayscale image + 0.5), in integers (augment._gray_mean)
                gray_mean = (2 * tl.load(stats_ptr + n * C * WIDTH + 258) + HW) // (2 * HW)
                degenerate = tl.zeros((BLOCK,), dtype=tl.float32) + gray_mean.to(tl.float32)
            elif op == _BRIGHTNESS:
                degenerate = tl.zeros((BLOCK,), dtype=tl.float32)
            else:  # ImageFilter.SMOOTH: floor((S + 6.5) / 13) = (2 S + 13) // 26, border unchanged
                total = 4 * x
                for dy in tl.static_range(-1, 2):
                    for dx in tl.static_range(-1, 2):
                        total += tl.load(plane + offs + dy * W + dx, mask=interior, other=0).to(tl.int32)
                degenerate = tl.where(interior, (2 * total + 13) // 26, x).to(tl.float32)
            pixels = x.to(tl.float32)
            blended = degenerate + alpha * (pixels - degenerate)
            blended = tl.minimum(tl.maximum(blended, 0.0), 255.0)
            tl.store(out + c * HW + offs, blended.to(tl.uint8), mask=mask)
    elif (op == _ROTATE) or ((op >= _SHEAR_X) and (op <= _TRANSLATE_Y)):  # warp: Pillow's inverse affine map
        coefficients = coefficients_ptr + n * 6
        bicubic = tl.load(bicubic_ptr + n) != 0
        xs = (offs % W).to(tl.float64) + 0.5
        ys = (offs // W).to(tl.float64) + 0.5
        x_in = tl.load(coefficients) * xs + tl.load(coefficients + 1) * ys + tl.load(coefficients + 2)
        y_in = tl.load(coefficients + 3) * xs + tl.load(coefficients + 4) * ys + tl.load(coefficients + 5)
        inside = (x_in >= 0) & (x_in < W) & (y_in >= 0) & (y_in < H)
        x_in -= 0.5
        y_in -= 0.5
        x0 = tl.floor(x_in)
        y0 = tl.floor(y_in)
        dx = (x_in - x0).to(tl.float32)
        dy = (y_in - y0).to(tl.float32)
        x0 = x0.to(tl.int32)
        y0 = y0.to(tl.int32)
        for c in tl.static_range(C):
            plane = image + c * HW
            warped = _cubic(_tap_row(plane, y0, x0, 0, dx, bicubic, H, W, mask),
                            _tap_row(plane, y0, x0, 1, dx, bicubic, H, W, mask),
                            _tap_row(plane, y0, x0, 2, dx, bicubic, H, W, mask),
                            _tap_row(plane, y0, x0, 3, dx, bicubic, H, W, mask), dy)
            warped = tl.minimum(tl.maximum(warped, 0.0), 255.0).to(tl.uint8)
            fill = fill0 if c == 0 else (fill1 if c == 1 else fill2)
            tl.store(out + c * HW + offs, tl.where(inside, warped, fill.to(tl.uint8)), mask=mask)
    else:  # not applied
        for c in tl.static_range(C):
            tl.store(out + c * HW + offs, tl.load(image + c * HW + offs, mask=mask), mask=mask)


def apply_slot(images, op, magnitude, alpha, coefficients, bicubic, fill):
    """Each image's own op of one slot, in three launches (statistics, lookup tables, pixels): images
    uint8 (N, C, H, W) contiguous; op (N,) int64 ids (len(OPS) = not applied); magnitude (N,) float64;
    alpha (N,) float32; coefficients (N, 6) float64; bicubic (N,) bool; fill one int per channel."""
    n, c, h, w = images.shape
    out = torch.empty_like(images)
    if n and h * w:
        stats = image_stats(images)
        lut = lookup_tables(stats, op, magnitude, h * w)
        fill = (*fill, 0, 0)[:3]
        block = triton.next_power_of_2(h * w) if INTERPRETED else APPLY_BLOCK
        _apply_slot_kernel[(n, triton.cdiv(h * w, block))](
            images, out, op, lut, alpha, stats, coefficients, bicubic, *fill, h, w, C=c, WIDTH=STATS_WIDTH,
            BLOCK=block, num_warps=4, enable_fp_fusion=False)
    return out
