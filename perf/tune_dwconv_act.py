"""Choose dwconv_act's Triton launch shapes by measurement (effkernels/triton/dwconv_act.py: launch_shape).

    python perf/tune_dwconv_act.py [--grids 6 10 14] [--hidden 1536] [--batch 256]   # on a GPU
    python perf/tune_dwconv_act.py --sm90 [--defaults-only]                            # anywhere

Candidates: BLOCK_W (grid columns per program strip) × BLOCK_C (channels) × num_warps × UNROLL (of the
row loop: fewer instructions, more registers), each compiled for sm_90 by Triton and ptxas in worker
processes: registers, spills, how many programs fit in an SM's 65,536 registers, SASS instructions
per value and row step in the hot loop (the kernels are likely issue-bound: see the module's
docstring), and the width of the kernel's global loads and stores (16-byte vectors are the design's
aim; scalar 2-byte loads are the per-channel taps).

On a GPU each candidate is then timed at LocalFFN's shapes (ViT-24h layout by default: h-swish before
and after the conv, no conv bias, one class token skipped; bf16, DeiT-S hidden width), with each
programs-per-SM count that fits (the sample groups of the one-wave launch), forward and backward apart, by
triton.testing.do_bench (median, L2 flushed between calls): kernel time, not host time. Rows give
GB/s and % of the measured copy roofline (forward moves h in and the result out; backward grad and h
in, grad_h out) and the ratio to today's default; the table lists the default and the fastest few.
Shapes that spill registers inside their loops (LDL/STL in the SASS) are counted, and not timed.

--sm90 needs no GPU: the compile report alone. The test suite runs it to keep the default shapes
within their register budget (no spills in their loops, PROGRAMS_PER_SM of them fit).
"""
import functools
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import sm90  # noqa: E402

PROGRAMS_PER_SM_TRIED = (1, 2, 3, 4, 6, 8, 12, 16)  # those that fit in the registers
LAYOUT = dict(num_prefix_tokens=1, prefix="skip", pre_act="hardswish")  # ViT-24h's, with --act after the conv
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


SHAPE_KEYS = ("BLOCK_W", "BLOCK_C", "num_warps", "UNROLL")  # a compiled kernel's launch shape


def candidates(kind, width):
    """Launch shapes (tuples of SHAPE_KEYS) worth timing for a grid `width` columns wide: strips of the
    whole width or half of it (the backward's strip holds a column more, or overlaps its neighbours)."""
    import triton

    from effkernels.triton import dwconv_act as kernels

    widest = triton.next_power_of_2(width + (kind == "backward"))
    widths = [w for w in (widest // 2, widest) if w >= 2 and (kind == "forward" or w in kernels.BACKWARD_BLOCK_WS)]
    for block_w, block_c, warps, unroll in itertools.product(widths, (16, 32, 64, 128), (2, 4, 8), (1, 3)):
        if 1 <= block_w * block_c // (32 * warps) <= 16:
            yield block_w, block_c, warps, unroll


def halo(kind, width, block_w):
    """The HALO the backward launches a `block_w` strip with at this width (0 for the forward)."""
    from effkernels.triton import dwconv_act as kernels

    return kernels.backward_halo(width, block_w) if kind == "backward" else 0


def default_shape(kind, width, dtype_name, hidden, act):
    """(the launch shape, the programs per SM) that launch_shape picks today."""
    from effkernels.triton import dwconv_act as kernels

    dtype = getattr(torch, dtype_name)
    _, options = kernels.launch_shape(kind, 1, hidden, LAYOUT["num_prefix_tokens"], width, dtype, torch.device("cpu"),
                                      act)
    return tuple(options[key] for key in SHAPE_KEYS), kernels.PROGRAMS_PER_SM[dtype][kind == "backward"]


def compile_report(job):
    """Compile one (kind, dtype, act, bias, HALO, *launch shape) for sm_90 (no GPU needed): a dict with
    the shape, registers, spill bytes (and spill instructions in loops), programs per SM that fit, SASS instructions per value in the
    hot loop, and global load/store instruction widths."""
    import triton.language as tl

    from effkernels.triton import dwconv_act as kernels

    kind, dtype_name, act, bias, with_halo, block_w, block_c, warps, unroll = job
    kernel = kernels._dwconv_act_fwd_kernel if kind == "forward" else kernels._dwconv_act_bwd_kernel
    # A real launch: batch a multiple of 16, one prefix token (the JIT makes it a constant), channels
    # a multiple of 16, token count and grid sides neither.
    constants, divisible = sm90.launch_specialisation(dict(B=256, P=LAYOUT["num_prefix_tokens"], C=1536))
    constexprs = dict(**constants, HAS_BIAS=bias, HAS_PREFIX=True, SKIP_PREFIX=True, PRE=LAYOUT["pre_act"], ACT=act,
                      ACC=tl.float32, BLOCK_P=1, BLOCK_W=block_w, BLOCK_C=block_c, UNROLL=unroll,
                      **({"HALO": with_halo} if kind == "backward" else {}))
    types = {name: ("*fp32" if name == "partials_ptr" else "*" + DTYPES[dtype_name]) if name.endswith("_ptr")
             else "i32" for name in kernel.arg_names}
    ptx = sm90.compile_ptx(kernel, types, constexprs, divisible=divisible, num_warps=warps)
    registers, spills, sass = sm90.assemble(ptx)
    values = unroll * block_w * block_c / (32 * warps)  # per thread and iteration of the hot loop
    if torch.cuda.is_available():
        # Fill Triton's disk cache for the timing loop: a small launch of the same specialisation (batch
        # and channels multiples of 16, token count and grid sides neither 1 nor a multiple of 16).
        side = block_w + 1 if with_halo else 3  # a width with the same HALO
        launch_call(kind, side, 16, 16, getattr(torch, dtype_name), act, bias, torch.device("cuda"),
                    dict(BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps, UNROLL=unroll))[0]()
    return dict(kind=kind, dtype=dtype_name, HALO=with_halo, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=warps,
                UNROLL=unroll,
                registers=registers, spill_bytes=spills,
                loop_spills=sm90.loop_spill_instructions(sass) if sass else None,
                programs_fit=sm90.programs_fit(registers, warps),
                sass_per_value=sm90.hot_loop_instructions(sass) / values if sass else None,
                loads=sm90.memory_widths(ptx, "ld"), stores=sm90.memory_widths(ptx, "st"))


def spills_in_loops(report):
    """Whether a compiled shape spills registers inside its loops (by ptxas's spill bytes where Triton
    ships no nvdisasm to read the SASS with)."""
    return bool(report["loop_spills"] if report["loop_spills"] is not None else report["spill_bytes"])


def launch_call(kind, side, hidden, batch, dtype, act, with_bias, device, tiles):
    """(a call of the forward or backward launch with `tiles` on fresh inputs, the bytes it moves)."""
    from effkernels.triton import dwconv_act as kernels

    h = torch.randn(batch, 1 + side * side, hidden, device=device, dtype=dtype)
    weight = torch.randn(hidden, 1, 3, 3, device=device, dtype=dtype)
    bias = torch.randn(hidden, device=device, dtype=dtype) if with_bias else None
    options = dict(**LAYOUT, act=act, tiles=tiles)
    if kind == "forward":
        return functools.partial(kernels.dwconv_act_triton, h, (side, side), weight, bias, **options), 2 * h.nbytes
    return (functools.partial(kernels.dwconv_act_backward_triton, torch.randn_like(h), h, (side, side), weight, bias,
                              **options), 3 * h.nbytes)


def time_launches(kind, side, hidden, batch, dtype, act, with_bias, report, per_sm_counts, device, bandwidth):
    """Timed rows of one compiled candidate at one grid side, for each programs-per-SM count."""
    import triton

    rows = []
    shape = {key: report[key] for key in SHAPE_KEYS}
    for per_sm in per_sm_counts:
        tiles = dict(shape, programs_per_sm=per_sm)
        call, moved = launch_call(kind, side, hidden, batch, dtype, act, with_bias, device, tiles)
        if device.type == "cuda":
            ms = triton.testing.do_bench(call, warmup=5, rep=25, return_mode="median")
        else:  # the interpreter: the code path is tried, the figure means nothing
            ms = common.median_ms(call, device, repeats=1, warmup=0)
        rows.append(dict(kind=kind, grid=f"{side}x{side}", hidden=hidden, batch=batch, **tiles, ms=ms,
                         registers=report["registers"], spill_bytes=report["spill_bytes"],
                         loop_spills=report["loop_spills"],
                         sass_per_value=report["sass_per_value"],
                         **{"GB/s": moved / ms / 1e6, "% roofline": 100 * moved / ms / 1e6 / bandwidth}))
    return rows


def parse_args(argv):
    parser = common.BenchmarkParser(__doc__)
    parser.add_argument("--sm90", action="store_true", help="compile report only (no GPU needed)")
    parser.add_argument("--defaults-only", action="store_true", help="only today's default shapes")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--act", choices=["hardswish", "gelu", "gelu_tanh", "relu"], default="hardswish",
                        help="activation after the conv (ViT-24h: hardswish; PVTv2: gelu)")
    parser.add_argument("--bias", action="store_true", help="with a conv bias (PVTv2 has one)")
    parser.add_argument("--grids", type=int, nargs="+", default=[6, 10, 14], help="grid sides (tokens per row)")
    parser.add_argument("--hidden", type=int, default=1536, help="LocalFFN hidden width (DeiT-S: 1536)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--kinds", nargs="+", choices=["forward", "backward"], default=["forward", "backward"])
    parser.add_argument("--top", type=int, default=5, help="fastest rows listed per grid and kind")
    parser.add_argument("--shapes", type=int, default=None, help="time only the first N candidates (a smoke run)")
    parser.add_argument("--jobs", type=int, default=min(12, os.cpu_count() or 1), help="compiling processes")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = args.device
    if not args.sm90 and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("timing runs on a CUDA GPU (or, its figures meaningless, under TRITON_INTERPRET=1); "
                 "--sm90 gives the compile report anywhere")
    shapes = {(kind, width): {default_shape(kind, width, args.dtype, args.hidden, args.act)[0],
                              *([] if args.defaults_only else list(candidates(kind, width))[: args.shapes])}
              for kind in args.kinds for width in args.grids}
    jobs = sorted({(kind, args.dtype, args.act, args.bias, halo(kind, width, shape[0]), *shape)
                   for (kind, width), group in shapes.items() for shape in group})
    reports = dict(zip(jobs, sm90.in_workers(compile_report, jobs, args.jobs)))
    spilling = [r for r in reports.values() if spills_in_loops(r)]
    print(f"compiled {len(reports)} launch shapes for sm_90; {len(spilling)} spill registers in their loops"
          f"{'' if args.sm90 else ' (not timed)'}", flush=True)
    if args.sm90:
        for report in reports.values():
            print({k: report[k] for k in ("kind", "HALO", *SHAPE_KEYS, "registers", "spill_bytes", "loop_spills",
                                          "programs_fit", "sass_per_value", "loads", "stores")}, flush=True)
        return list(reports.values())

    dtype = getattr(torch, args.dtype)
    bandwidth = common.copy_bandwidth_gbs(device)
    listed = []
    for (kind, width), group in shapes.items():
        default_tiles, default_per_sm = default_shape(kind, width, args.dtype, args.hidden, args.act)
        default = (*default_tiles, default_per_sm)
        rows = []
        for shape in sorted(group):
            report = reports[(kind, args.dtype, args.act, args.bias, halo(kind, width, shape[0]), *shape)]
            if spills_in_loops(report) and shape != default_tiles:  # paying for spills every row: not a candidate
                continue
            # Sample groups matter on a GPU only (the interpreter runs two): the counts that fit there.
            fit = max(report["programs_fit"], 1) if device.type == "cuda" else 0
            fitting = [n for n in PROGRAMS_PER_SM_TRIED if n <= fit]
            counts = sorted({*fitting, default_per_sm})
            rows += time_launches(kind, width, args.hidden, args.batch, dtype, args.act, args.bias, report, counts,
                                  device, bandwidth)
        for row in rows:
            row["default"] = tuple(row[key] for key in (*SHAPE_KEYS, "programs_per_sm")) == default
        default_ms = next(row["ms"] for row in rows if row["default"])
        for row in rows:
            row["vs default"] = default_ms / row["ms"]
        rows.sort(key=lambda r: r["ms"])
        listed += [r for r in rows if r["default"]] + [r for r in rows[: args.top] if not r["default"]]
        best = rows[0]
        print(f"{kind} {width}x{width}: default {default_ms:.4f} ms; best {best['ms']:.4f} ms "
              f"({best['% roofline']:.0f} % of copy roofline) with BLOCK_W {best['BLOCK_W']}, BLOCK_C "
              f"{best['BLOCK_C']}, {best['num_warps']} warps, {best['programs_per_sm']} per SM", flush=True)
    columns = ["kind", "grid", "default", *SHAPE_KEYS, "programs_per_sm", "registers", "sass_per_value",
               "spill_bytes", "loop_spills", "ms", "GB/s", "% roofline", "vs default"]
    meta = {**common.run_meta(device), "copy GB/s": bandwidth, "dtype": args.dtype, "hidden": args.hidden,
            "batch": args.batch, "layout": {**LAYOUT, "act": args.act, "bias": args.bias}}
    print(common.write_results(args.out, "tune_dwconv_act", meta, listed, columns))
    return listed


if __name__ == "__main__":
    main()
