"""Time the Triton separable_map's launch shapes at lowfreq_crop's training sizes, to choose the
default tile table (effkernels/triton/separable_map.py: default_tiles) by measurement.

For each band: uint8 batch × 3 × 224² images, ImageNet normalisation, bf16 out (the training path,
one bf16 part), every launch shape of the grid below, timed with CUDA events (median); shapes the
compiler cannot fit (registers, shared memory) are reported as such. Then the best shapes' pipeline
depths, and float32 out (three bf16 parts) for the best. Worker processes compile every shape first
(Triton's disk cache), so the timing loop only loads kernels.

--sm90 needs no GPU: it compiles the default launch shapes of the training sizes (uint8 to bf16 and
to float32 out, and float64) for sm_90, specialised as the JIT specialises the real launch, and
reports registers, spills, and the count of wgmma, mma.sync and cp.async instructions (the
tensor-core dots and the pipelined loads). The test suite runs it to keep them in the kernel.
"""
import argparse
import itertools
import os
import sys

import torch
import triton

from effkernels import operators
from effkernels.triton.separable_map import centres_input, default_tiles, precision_parts, prepare_separable_map

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sm90  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def candidate_tiles(band):
    block_ms = sorted({min(256, triton.next_power_of_2(band)), 128})
    for block_m, block_n, (block_h, block_w), warps in itertools.product(
        block_ms, (64, 128), ((64, 64), (32, 128), (64, 128), (128, 64)), (4, 8)
    ):
        if block_m * block_n <= 256 * 64:
            yield dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
                       num_stages=3)


def launcher(band, batch, out_dtype, tiles):
    device = torch.device("cuda")
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    scale = torch.tensor([1 / (255 * s) for s in STD], device=device)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=device)
    rows, cols, *factors = operators.lowfreq_crop_operators_cached(
        (224, 224), (band, band), (band, band), torch.float32, device)
    rank_one = tuple(factors) if operators.has_rank_one_term((band, band)) else None
    return prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one, tiles), x


TRITON_TYPES = {torch.uint8: "u8", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def training_int_arguments(band):
    """The kernel's int arguments at lowfreq_crop's training launch (contiguous uint8 batch × 3 × 224²,
    one shared operator per axis, shared rank-one factors), by name, as prepare_separable_map passes
    them: shared operators and factors get batch stride 0."""
    size = 224
    return dict(C=3, H=size, W=size, OH=band, OW=band,
                x_sn=3 * size * size, x_sc=size * size, x_sh=size, x_sw=1,
                r_sn=0, r_sk=band * size, r_so=size, r_sh=1, c_sn=0, c_sk=band * size, c_so=size, c_sw=1,
                ru_sn=0, rv_sn=0, cu_sn=0, cv_sn=0)


def compile_report(job):
    """The sm_90 compile of the default launch shape for (band, x dtype name, output dtype name), 224²
    input, normalised (uint8 to bf16 out: the training path): a dict of the shape, registers, spills,
    and the counts of wgmma, mma.sync (float64's IEEE dots) and cp.async instructions."""
    import triton.language as tl

    from effkernels.triton.separable_map import _separable_map_kernel as kernel

    band, x_name, out_name = job
    x_dtype, out_dtype = getattr(torch, x_name), getattr(torch, out_name)
    parts = precision_parts(x_dtype, out_dtype)[0]
    centre = centres_input(parts, has_shift=True)
    x_parts = precision_parts(x_dtype, out_dtype, centre)[1]
    tiles = default_tiles(band, band, 224, 224, parts)
    accumulate = torch.float64 if parts == 0 else torch.float32  # operators, scale, shift, rank-one factors
    operator = "*" + TRITON_TYPES[torch.bfloat16 if parts == 1 else accumulate]
    types = {name: "i32" for name in kernel.arg_names}
    types.update(x_ptr="*" + TRITON_TYPES[x_dtype], rows_ptr=operator, cols_ptr=operator,
                 out_ptr="*" + TRITON_TYPES[out_dtype],
                 **{name: "*" + TRITON_TYPES[accumulate] for name in ("scale_ptr", "shift_ptr", "ru_ptr", "rv_ptr",
                                                                        "cu_ptr", "cv_ptr")})
    launch = {key: tiles[key] for key in ("num_warps", "num_stages")}
    constants, divisible = sm90.launch_specialisation(training_int_arguments(band))
    constexprs = dict(**constants, K=1, HAS_SCALE=True, HAS_SHIFT=True, HAS_RANK_ONE=operators.has_rank_one_term((band, band)),
                      CENTRE=centre, PARTS=parts, X_PARTS=x_parts, ACC_DTYPE=tl.float64 if parts == 0 else tl.float32,
                      INTERPRETED=False, STAGES=launch["num_stages"],
                      **{k: v for k, v in tiles.items() if k not in launch})
    ptx = sm90.compile_ptx(kernel, types, constexprs, divisible=divisible, **launch)
    registers, spills, _ = sm90.assemble(ptx)
    return dict(band=band, x=x_name, out=out_name, **tiles, registers=registers, spill_bytes=spills,
                wgmma=ptx.count("wgmma.mma_async"), mma_sync=ptx.count("mma.sync"), cp_async=ptx.count("cp.async."))


def compile_only(job):
    """Run one shape once on a tiny batch (fills the disk cache); the error's name if it does not fit."""
    try:
        launch, x = launcher(*job)
        launch(x)
        torch.cuda.synchronize()
        return ""
    except Exception as error:
        return type(error).__name__


def time_ms(band, batch, out_dtype, tiles=None):
    try:
        launch, x = launcher(band, batch, out_dtype, tiles)
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
    args = parser.parse_args(argv)
    if args.sm90:
        jobs = [(band, x, out) for band in args.bands
                for x, out in (("uint8", "bfloat16"), ("uint8", "float32"), ("float64", "float64"))]
        reports = sm90.in_workers(compile_report, jobs, args.jobs)
        for report in reports:
            print(report, flush=True)
        return reports
    if not torch.cuda.is_available():
        parser.error("it needs a CUDA GPU to time the launch shapes (--sm90 reports the compile anywhere)")
    stage_variants = [dict(num_stages=s) for s in (1, 2, 4)]  # 1: the width loop not pipelined
    shapes = {band: list(candidate_tiles(band)) for band in args.bands}
    jobs = [(band, 2, dtype, {**tiles, **stages}) for band in args.bands for tiles in shapes[band]
            for dtype in (torch.bfloat16,) for stages in [{}] + stage_variants]
    errors = sm90.in_workers(compile_only, jobs, args.jobs)
    print(f"compiled {len(jobs)} shapes, {sum(bool(e) for e in errors)} did not fit", flush=True)
    for band in args.bands:
        default = default_tiles(band, band, 224, 224, precision_parts(torch.uint8, torch.bfloat16)[0])
        default_ms = time_ms(band, args.batch, torch.bfloat16)
        unpipelined_ms = time_ms(band, args.batch, torch.bfloat16, {**default, "num_stages": 1})
        results = [(ms, tiles) for tiles in shapes[band]
                   if (ms := time_ms(band, args.batch, torch.bfloat16, tiles)) is not None]
        results.sort(key=lambda r: r[0])
        print(f"band {band}: default {default} {default_ms:.4f} ms (width loop not pipelined: "
              f"{unpipelined_ms and round(unpipelined_ms, 4)} ms); {len(results)} of {len(shapes[band])} shapes ran",
              flush=True)
        for ms, tiles in results[: args.top]:
            deeper = [time_ms(band, args.batch, torch.bfloat16, {**tiles, **v}) for v in stage_variants]
            f32_ms = time_ms(band, args.batch, torch.float32, tiles)
            print(f"  bf16 {ms:.4f} ms (stages 1/2/4: {' / '.join(f'{m:.4f}' if m else '-' for m in deeper)})  "
                  f"f32 {f32_ms if f32_ms is None else round(f32_ms, 4)} ms  {tiles}", flush=True)


if __name__ == "__main__":
    main()
