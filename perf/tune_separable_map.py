"""Time the Triton separable_map's launch shapes at lowfreq_crop's training sizes, to choose the
default tile table (effkernels/triton/separable_map.py: default_tiles) by measurement.

For each band: uint8 batch × 3 × 224² images, ImageNet normalisation, bf16 out (the training path,
one bf16 part), every launch shape of the grid below, timed with CUDA events (median); shapes the
compiler cannot fit (registers, shared memory) are reported as such. Then the best shapes' pipeline
depths, and a sweep of its own for float32 out (three bf16 parts). Worker processes compile every
shape first (Triton's disk cache), so the timing loop only loads kernels. Then (--no-crop skips it)
the input pipeline's RandomResizedCrop launch, uint8 500² to 224² with float16 out (two bf16
parts), with and without its boxes as the kernel's support, beside the float32 whole-plane launch
it replaced, and its launch shapes.

--sm90 needs no GPU: it compiles the default launch shapes of the training sizes (uint8 to bf16 and
to float32 out, and float64) and of the crop for sm_90, specialised as the JIT specialises the real
launch, and reports registers, spills (in bytes, and instructions inside loops), the width loop's
instructions, and the count of wgmma, mma.sync and cp.async instructions (the tensor-core dots and
the pipelined loads). The test suite runs it to keep them in the kernel and the spills out of its
loops.
"""
import argparse
import itertools
import os
import sys

import numpy as np
import torch
import triton

from effkernels import operators
from effkernels.pipeline import DRAWS, counter_uniforms, sample_boxes
from effkernels.resized_crop import crop_flip_operators
from effkernels.triton.separable_map import centres_input, default_tiles, precision_parts, prepare_separable_map

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sm90  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def row_splits(band):
    """(BLOCK_M, TAIL_M) pairs whose rows cover the band in one row tile: the next power of two in one
    accumulator, and a main block (the largest power of two below the band, at most 128) plus a tail
    of the smallest power of two (at least 32) that reaches the band, or twice that, while the tail
    stays smaller than the main block."""
    splits = [(min(256, triton.next_power_of_2(band)), 0)]
    main = min(128, triton.next_power_of_2(band) // 2)
    if band > main >= 64:
        tail = max(32, triton.next_power_of_2(band - main))
        splits += [(main, t) for t in (tail, 2 * tail) if t < main]
    return splits


def candidate_tiles(band):
    """The launch shapes the sweep times at one band: every row split with column blocks of 32, 64 and
    128 and width blocks of 32 and 64 (exact multiples of the training sizes where the default pads
    them), 8 warps, as far as the accumulators fit; and the default's runners-up of the 2026-11-23
    sweep (height blocks of 64, 4 warps)."""
    for (block_m, tail_m), block_n, block_w in itertools.product(row_splits(band), (32, 64, 128), (32, 64)):
        if (block_m + tail_m) * block_n <= 256 * 64:
            yield dict(BLOCK_M=block_m, TAIL_M=tail_m, BLOCK_N=block_n, BLOCK_H=128, BLOCK_W=block_w, num_warps=8,
                       num_stages=3)
    default = default_tiles(band, band, 224, 224, precision_parts(torch.uint8, torch.bfloat16)[0])
    yield {**default, "BLOCK_H": 64}
    yield {**default, "BLOCK_H": 64, "num_warps": 4}


def float32_candidates():
    """The launch shapes of the float32-out sweep (three bf16 parts): 64 or 128 rows, 32- or 64-wide
    column, height and width blocks, one or two warpgroups; the 2026-11-23 float32 best (128 × 64,
    64-wide blocks, 4 warps) and today's default among them."""
    for block_m, block_n, block_h, block_w, warps in itertools.product((64, 128), (32, 64), (32, 64), (32, 64), (4, 8)):
        yield dict(BLOCK_M=block_m, TAIL_M=0, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
                   num_stages=3)


def fitted_tiles(band):
    """The default training launch shape with blocks that fit the band instead of padding it: 32-wide
    column and width blocks (exact for 96, 160, 192 and 224) and, for bands 129..192, 128 rows plus a
    64-row tail accumulator; bench_lowfreq_crop times it beside the default (a GPU's verdict in one
    call, before a whole sweep)."""
    tiles = {**default_tiles(band, band, 224, 224, precision_parts(torch.uint8, torch.bfloat16)[0]),
             "BLOCK_N": 32, "BLOCK_W": 32}
    if 128 < band <= 192:
        tiles.update(BLOCK_M=128, TAIL_M=64)
    return tiles


def launcher(band, batch, out_dtype, tiles, device="cuda"):
    """(launch, x): lowfreq_crop's training map of a uint8 batch × 3 × 224² (normalised, shared
    operators) prepared with the given launch options, and a random batch."""
    device = torch.device(device)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    scale = torch.tensor([1 / (255 * s) for s in STD], device=device)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=device)
    rows, cols, *factors = operators.lowfreq_crop_operators_cached(
        (224, 224), (band, band), (band, band), torch.float32, device)
    rank_one = tuple(factors) if operators.has_rank_one_term((band, band)) else None
    return prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one, tiles), x


CROP_SIDE, CROP_OUT = 500, 224  # a padded batch of 500×375 and 375×500 images, cropped to 224


def crop_tiles():
    """Candidate launch shapes of the input pipeline's crop (two bf16 parts: float16 out)."""
    for block_m, block_n, (block_h, block_w), warps in itertools.product(
        (64, 128), (32, 64, 128), ((64, 32), (64, 64), (128, 64), (64, 128)), (4, 8)
    ):
        if block_m * block_n <= 128 * 64:
            yield dict(BLOCK_M=block_m, TAIL_M=0, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_W=block_w,
                       num_warps=warps, num_stages=3)


def crop_launcher(batch, out_dtype, tiles, boxed):
    """The input pipeline's RandomResizedCrop launch (resized_crop_flip): uint8 batch × 3 × 500²,
    torchvision-sampled boxes of 500×375 and 375×500 images, to 224²; boxed: with the boxes as the
    kernel's support. Returns (launch, x)."""
    device = torch.device("cuda")
    heights = np.where(np.arange(batch) % 4 == 3, CROP_SIDE, 375)
    boxes = sample_boxes(heights, CROP_SIDE + 375 - heights, counter_uniforms(np.arange(batch), 0, DRAWS),
                         (0.08, 1.0), (3 / 4, 4 / 3))
    rows, cols, support = crop_flip_operators(torch.from_numpy(boxes).to(device), CROP_OUT, CROP_SIDE, CROP_SIDE)
    x = torch.randint(0, 256, (batch, 3, CROP_SIDE, CROP_SIDE), dtype=torch.uint8, device=device)
    launch = prepare_separable_map(x.shape, x.dtype, rows, cols, None, None, out_dtype, None, tiles,
                                   support=support if boxed else None)
    return launch, x


TRITON_TYPES = {torch.uint8: "u8", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def training_int_arguments(band):
    """The kernel's int arguments at lowfreq_crop's training launch (contiguous uint8 batch × 3 × 224²,
    one shared operator per axis, shared rank-one factors), by name, as prepare_separable_map passes
    them: shared operators and factors get batch stride 0."""
    size = 224
    return dict(C=3, H=size, W=size, OH=band, OW=band,
                x_sn=3 * size * size, x_sc=size * size, x_sh=size, x_sw=1,
                r_sn=0, r_sk=band * size, r_so=size, r_sh=1, c_sn=0, c_sk=band * size, c_so=size, c_sw=1,
                ru_sn=0, rv_sn=0, cu_sn=0, cv_sn=0)


def crop_int_arguments():
    """The kernel's int arguments at the input pipeline's crop launch (crop_launcher): per-sample operators."""
    side, out = CROP_SIDE, CROP_OUT
    return dict(C=3, H=side, W=side, OH=out, OW=out, x_sn=3 * side * side, x_sc=side * side, x_sh=side, x_sw=1,
                r_sn=out * side, r_sk=out * side, r_so=side, r_sh=1, c_sn=out * side, c_sk=out * side, c_so=side, c_sw=1,
                ru_sn=0, rv_sn=0, cu_sn=0, cv_sn=0)


def compile_report(job):
    """The sm_90 compile of the default launch shape (updated by an optional fourth item, a dict of
    launch options) for (band, x dtype name, output dtype name), 224² input, normalised (uint8 to bf16
    out: the training path), or band "crop": the input pipeline's crop launch (crop_launcher, boxed):
    a dict of the shape, registers, spill bytes, spill instructions inside loops and the instructions
    of the largest innermost loop (both None where Triton ships no nvdisasm), and the counts of
    wgmma, mma.sync (float64's IEEE dots) and cp.async instructions."""
    import triton.language as tl

    from effkernels.triton.separable_map import _separable_map_kernel as kernel

    band, x_name, out_name, *overrides = job
    crop = band == "crop"
    x_dtype, out_dtype = getattr(torch, x_name), getattr(torch, out_name)
    parts = precision_parts(x_dtype, out_dtype)[0]
    centre = not crop and centres_input(parts, has_shift=True)
    x_parts = precision_parts(x_dtype, out_dtype, centre)[1]
    tiles = default_tiles(CROP_OUT, CROP_OUT, CROP_SIDE, CROP_SIDE, parts) if crop else default_tiles(band, band, 224, 224, parts)
    tiles = {**tiles, **(overrides[0] if overrides else {})}
    accumulate = torch.float64 if parts == 0 else torch.float32  # operators, scale, shift, rank-one factors
    operator = "*" + TRITON_TYPES[torch.bfloat16 if parts == 1 else accumulate]
    types = {name: "i32" for name in kernel.arg_names}
    types.update(x_ptr="*" + TRITON_TYPES[x_dtype], rows_ptr=operator, cols_ptr=operator,
                 out_ptr="*" + TRITON_TYPES[out_dtype], support_ptr="*i32",
                 **{name: "*" + TRITON_TYPES[accumulate] for name in ("scale_ptr", "shift_ptr", "ru_ptr", "rv_ptr",
                                                                        "cu_ptr", "cv_ptr")})
    launch = {key: tiles[key] for key in ("num_warps", "num_stages")}
    constants, divisible = sm90.launch_specialisation(crop_int_arguments() if crop else training_int_arguments(band))
    constexprs = dict(**constants, K=1, HAS_SCALE=not crop, HAS_SHIFT=not crop,
                      HAS_RANK_ONE=not crop and operators.has_rank_one_term((band, band)), HAS_SUPPORT=crop, CENTRE=centre, PARTS=parts, X_PARTS=x_parts, ACC_DTYPE=tl.float64 if parts == 0 else tl.float32,
                      INTERPRETED=False, STAGES=launch["num_stages"],
                      **{k: v for k, v in tiles.items() if k not in launch})
    ptx = sm90.compile_ptx(kernel, types, constexprs, divisible=divisible, **launch)
    registers, spills, sass = sm90.assemble(ptx)
    return dict(band=band, x=x_name, out=out_name, **tiles, registers=registers, spill_bytes=spills,
                loop_spills=sm90.loop_spill_instructions(sass) if sass else None,
                hot_loop=sm90.hot_loop_instructions(sass) if sass else None,
                wgmma=ptx.count("wgmma.mma_async"), mma_sync=ptx.count("mma.sync"), cp_async=ptx.count("cp.async."))


def compile_only(job):
    """Run one shape once on a tiny batch (fills the disk cache); the error's name if it does not fit.
    job: launcher's arguments, or ("crop", crop_launcher's arguments)."""
    try:
        launch, x = crop_launcher(*job[1:]) if job[0] == "crop" else launcher(*job)
        launch(x)
        torch.cuda.synchronize()
        return ""
    except Exception as error:
        return type(error).__name__


def time_ms(band, batch, out_dtype, tiles=None, boxed=None):
    """Median ms of one launch (band "crop": the pipeline's crop, boxed or not); None if it does not fit."""
    try:
        launch, x = crop_launcher(batch, out_dtype, tiles, boxed) if band == "crop" else launcher(band, batch, out_dtype, tiles)
        launch(x)
        torch.cuda.synchronize()
    except Exception:  # out of registers / shared memory: not a candidate
        return None
    return triton.testing.do_bench(lambda: launch(x), warmup=10, rep=40, return_mode="median")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--bands", type=int, nargs="+", default=[96, 160, 192])
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=12, help="compiling processes")
    parser.add_argument("--sm90", action="store_true", help="the compile report of the default shapes only")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the input pipeline's crop launch")
    args = parser.parse_args(argv)
    if args.sm90:
        jobs = [(band, x, out) for band in args.bands
                for x, out in (("uint8", "bfloat16"), ("uint8", "float32"), ("float64", "float64"))]
        jobs += [("crop", "uint8", "float16")] if args.crop else []
        reports = sm90.in_workers(compile_report, jobs, args.jobs)
        for report in reports:
            print(report, flush=True)
        return reports
    if not torch.cuda.is_available():
        parser.error("it needs a CUDA GPU to time the launch shapes (--sm90 reports the compile anywhere)")
    stage_variants = [dict(num_stages=s) for s in (1, 2, 4)]  # 1: the width loop not pipelined
    shapes = {band: list(candidate_tiles(band)) for band in args.bands}
    jobs = [(band, 2, torch.bfloat16, tiles) for band in args.bands for tiles in shapes[band]]
    errors = sm90.in_workers(compile_only, jobs, args.jobs)
    print(f"compiled {len(jobs)} shapes, {sum(bool(e) for e in errors)} did not fit", flush=True)
    ranked = {}
    for band in args.bands:
        results = [(ms, tiles) for tiles in shapes[band]
                   if (ms := time_ms(band, args.batch, torch.bfloat16, tiles)) is not None]
        ranked[band] = sorted(results, key=lambda r: r[0])[: args.top]
    # Only the best shapes' other pipeline depths: compiled together, then timed.
    jobs = [(band, 2, torch.bfloat16, {**tiles, **stages}) for band in args.bands for _, tiles in ranked[band]
            for stages in stage_variants]
    sm90.in_workers(compile_only, jobs, args.jobs)
    for band in args.bands:
        default = default_tiles(band, band, 224, 224, precision_parts(torch.uint8, torch.bfloat16)[0])
        default_ms = time_ms(band, args.batch, torch.bfloat16)
        print(f"band {band}: default {default} {default_ms:.4f} ms; {len(shapes[band])} shapes", flush=True)
        for ms, tiles in ranked[band]:
            deeper = [time_ms(band, args.batch, torch.bfloat16, {**tiles, **v}) for v in stage_variants]
            print(f"  bf16 {ms:.4f} ms (stages 1/2/4: {' / '.join(f'{m:.4f}' if m else '-' for m in deeper)})  "
                  f"{tiles}", flush=True)
    tune_float32(args)
    if args.crop:
        tune_crop(args)


def tune_float32(args):
    """float32 out (three bf16 parts) at each band: every float32_candidates shape, against the default."""
    candidates = list(float32_candidates())
    sm90.in_workers(compile_only, [(band, 2, torch.float32, tiles) for band in args.bands for tiles in candidates],
                    args.jobs)
    for band in args.bands:
        default = default_tiles(band, band, 224, 224, precision_parts(torch.uint8, torch.float32)[0])
        results = sorted(((ms, tiles) for tiles in candidates
                          if (ms := time_ms(band, args.batch, torch.float32, tiles)) is not None), key=lambda r: r[0])
        print(f"band {band} float32: default {default} {time_ms(band, args.batch, torch.float32):.4f} ms; "
              f"{len(results)} of {len(candidates)} shapes ran", flush=True)
        for ms, tiles in results[: args.top]:
            print(f"  f32 {ms:.4f} ms  {tiles}", flush=True)


def tune_crop(args):
    """The input pipeline's crop: float32 out on whole planes (what it ran before) against float16 out
    with and without the boxes as support, at the default shape, then the fastest shapes, boxed."""
    def ms_text(ms):
        return "-" if ms is None else f"{ms:.4f}"

    candidates = list(crop_tiles())
    errors = sm90.in_workers(compile_only, [("crop", 2, torch.float16, tiles, True) for tiles in candidates], args.jobs)
    before = time_ms("crop", args.batch, torch.float32, boxed=False)
    whole, boxed = (time_ms("crop", args.batch, torch.float16, boxed=b) for b in (False, True))
    print(f"crop {CROP_SIDE}² -> {CROP_OUT}², batch {args.batch}: float32 whole planes {ms_text(before)} ms, "
          f"float16 whole planes {ms_text(whole)} ms, float16 boxed (the default) {ms_text(boxed)} ms; "
          f"{sum(bool(e) for e in errors)} of {len(candidates)} shapes did not fit", flush=True)
    results = sorted(((ms, tiles) for tiles in candidates
                      if (ms := time_ms("crop", args.batch, torch.float16, tiles, True)) is not None), key=lambda r: r[0])
    for ms, tiles in results[: args.top]:
        print(f"  float16 boxed {ms:.4f} ms  {tiles}", flush=True)


if __name__ == "__main__":
    main()
