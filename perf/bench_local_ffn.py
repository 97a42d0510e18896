"""Benchmark the fused LocalFFN against its peers, all in one run, forward + backward on the same tokens.

Block variants (timed round-robin, so that a noisy neighbour hits every peer alike):
- fused: effkernels.local_ffn (fc1 GEMM → the fused dwconv_act kernel → fc2 GEMM), eager and torch.compile'd
  (the op stays opaque to Inductor: its GPU kernel runs inside the compiled graph);
- reference: effkernels.reference.local_ffn, the obvious PyTorch (Linear, Seq2Im transpose + reshape,
  grouped conv2d, Im2Seq, Linear), eager and compiled by Inductor (which sends the conv to cuDNN);
- view conv: the reference with the conv run by cuDNN on a channels-last view of the grid tokens (no
  transpose copy; ../shared/gpu-probes/peers.py measured it), eager;
- mlp: timm's Mlp (fc1 → GELU → fc2) of the same widths, eager and compiled: what locality costs;
- fused CUDA C++ (on a GPU with the CUDA C++ kernels built): the fused block with dwconv_act's other GPU
  backend, eager, so the default can be the faster one.
On a GPU each of these is also timed "graphed": its forward + backward captured once in a CUDA graph
and replayed. An eager step can time the host's launches rather than the kernels (on the H100 of
2026-11-23 an eager Mlp step took 1.3-1.5 ms at every grid from 6×6 to 14×14, though its work grows
5×); the graphed times are the device's, what a captured training step pays, and their ratios
("graphed / mlp graphed") compare the kernels themselves.
The layout is ViT-24h's: h-swish before and after the 3×3 depthwise conv, class token skipping the FFN.

The conv kernels alone: dwconv_act forward and backward (effkernels' default GPU kernel, the CUDA C++
one beside it when built, or the C++ kernel on a CPU) against the view conv by cuDNN, with GB/s and % of the measured copy roofline (forward moves h in
and a out; backward moves grad and h in and grad_h out). Host µs per eager call: the time per call of
dwconv_act on a tiny input (forward without grad; backward as autograd reaches it), many calls back to
back, so the device never waits on itself: what a launch-bound step pays per op.

FLOPs: every variant computes the same math, so all TFLOP/s use one count, "model GFLOP": the
reference block's fwd+bwd counted by effkernels.flops.flop_counter. torch's own FlopCounterMode
counts a depthwise conv's weight gradient as a dense hidden×hidden conv (it ignores `groups`); the
column "torch-counted GFLOP" shows that count for the same reference block (DeiT-S at 224 px: ~4.5×
the real work). The fused op's own registered count includes its recompute of the conv in backward.

On a CPU the default sweep is tiny (compiling the variants takes minutes there); `--no-compile` skips
the compiled variants anywhere. The output says what was skipped.
"""
import os
import sys

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import effkernels  # noqa: E402
from effkernels import reference  # noqa: E402
from effkernels.flops import flop_counter  # noqa: E402

WIDTHS = {"deit_tiny": 192, "deit_small": 384, "deit_base": 768}
SWEEPS = {  # (model, batch, grid side)
    "tiny": [("deit_tiny", 2, 4)],
    "small": [("deit_tiny", 64, side) for side in (6, 10, 14)] + [("deit_small", 32, side) for side in (6, 10, 14)],
    "deit_small": [("deit_small", 256, side) for side in (6, 10, 14)],  # GPU-FACTS.md's LocalFFN table
    "full": [(model, 256, side) for model in WIDTHS for side in (6, 8, 10, 12, 14)],  # 96 ... 224 px
}
OPTIONS = dict(num_prefix_tokens=1, prefix="skip", pre_act="hardswish", act="hardswish")
BLOCKS = ("fused", "fused CUDA C++", "fused compiled", "reference", "reference compiled", "view conv", "mlp",
          "mlp compiled")


def view_conv_local_ffn(x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias, *,
                        num_prefix_tokens, prefix, pre_act, act):
    """reference.local_ffn with the conv on an NCHW view of the token-major grid (no Seq2Im copy)."""
    h = reference.ACTIVATIONS[pre_act](F.linear(x, fc1_weight, fc1_bias))
    grid_a = reference.ACTIVATIONS[act](_view_conv(h, grid_size, dw_weight, dw_bias, num_prefix_tokens))
    prefix_h = h[:, :num_prefix_tokens]
    prefix_a = torch.zeros_like(prefix_h) if prefix == "skip" else reference.ACTIVATIONS[act](prefix_h)
    y = F.linear(torch.cat([prefix_a, grid_a], dim=1), fc2_weight, fc2_bias)
    if prefix == "skip":
        y = torch.cat([torch.zeros_like(y[:, :num_prefix_tokens]), y[:, num_prefix_tokens:]], dim=1)
    return y


def _view_conv(h, grid_size, weight, bias, num_prefix_tokens):
    """The depthwise conv of h's grid tokens through an NCHW view of the (B, N, C) memory, token-major out."""
    image = h[:, num_prefix_tokens:].unflatten(1, tuple(grid_size)).permute(0, 3, 1, 2)
    out = F.conv2d(image, weight, bias, padding=1, groups=h.shape[2])
    return out.permute(0, 2, 3, 1).flatten(1, 2)


def fwd_bwd(fn, x, params):
    def step():
        for p in params:
            p.grad = None
        fn(x).sum().backward()
    return step


def count_flops(fn, x, mode):
    with mode:
        fn(x).sum().backward()
    return mode.get_total_flops()


def memory_mb(fn, x):
    """MB of distinct tensors autograd keeps for backward (CPU), or the peak memory of fwd+bwd (GPU)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x).sum().backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values()) / 2**20


def host_overhead(device, dtype):
    """Host µs per eager call of dwconv_act on a 1 × (1 + 2×2) × 8 input: the forward alone (no
    grad), and the backward as training reaches it (forward with grad + autograd backward, minus
    the forward with grad)."""
    h = torch.randn(1, 5, 8, device=device, dtype=dtype)
    weight = torch.randn(8, 1, 3, 3, device=device, dtype=dtype, requires_grad=True)
    bias = torch.randn(8, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(h)

    def call():
        return effkernels.dwconv_act(h, (2, 2), weight, bias, **OPTIONS)

    with torch.no_grad():
        forward = common.wall_us_per_call(call, device, 300)
    with_grad = common.wall_us_per_call(call, device, 300)
    both = common.wall_us_per_call(lambda: call().backward(grad), device, 300)
    return {"host us dwconv_act fwd": forward, "host us dwconv_act bwd": both - with_grad}


def bench_case(model, batch, side, device, dtype, repeats, compile_variants):
    dim = WIDTHS[model]
    hidden = 4 * dim
    grid = (side, side)
    factory = dict(device=device, dtype=dtype)
    ffn = effkernels.nn.LocalFFN(dim, hidden, act_layer="hardswish", pre_act="hardswish", prefix="skip",
                                 num_prefix_tokens=1, **factory)
    mlp = Mlp(dim, hidden, **factory)
    x = torch.randn(batch, 1 + side * side, dim, requires_grad=True, **factory)
    weights = (ffn.fc1.weight, ffn.fc1.bias, ffn.dwconv.weight, ffn.dwconv.bias, ffn.fc2.weight, ffn.fc2.bias)
    params = (x, *weights)

    def fused(t):
        return effkernels.local_ffn(t, grid, *weights, **OPTIONS)

    def eager(t):
        return reference.local_ffn(t, grid, *weights, **OPTIONS)

    def view_conv(t):
        return view_conv_local_ffn(t, grid, *weights, **OPTIONS)

    blocks = {"fused": fused, "reference": eager, "view conv": view_conv}
    if compile_variants:
        blocks.update({"fused compiled": torch.compile(fused, dynamic=False),
                       "reference compiled": torch.compile(eager, dynamic=False)})
    steps = {name: fwd_bwd(fn, x, params) for name, fn in blocks.items()}
    if common.has_cuda_cpp(device):  # the other GPU backend: the default is the one measured fastest
        steps["fused CUDA C++"] = common.with_backend("cuda", fwd_bwd(fused, x, params))
    steps["mlp"] = fwd_bwd(mlp, x, (x, *mlp.parameters()))
    if compile_variants:
        steps["mlp compiled"] = fwd_bwd(torch.compile(mlp, dynamic=False), x, (x, *mlp.parameters()))
    for name, step in list(steps.items()):
        if (replay := common.graphed(step, device)) is not None:
            steps[f"{name} graphed"] = replay
    times = common.interleaved_median_ms(steps, device, repeats)

    model_flops = count_flops(eager, x, flop_counter(display=False))
    torch_flops = count_flops(eager, x, FlopCounterMode(display=False))
    row = {"model": model, "batch": batch, "grid": f"{side}x{side}",
           "model GFLOP": model_flops / 1e9, "torch-counted GFLOP": torch_flops / 1e9}
    for name, ms in times.items():
        row[f"{name} ms"] = ms
        row[f"{name} TFLOP/s"] = model_flops / ms / 1e9
    for name in ("fused", "fused CUDA C++", "reference", "view conv", "fused compiled", "reference compiled"):
        if name in times:
            row[f"{name} / mlp"] = times[name] / times["mlp"]
        if f"{name} graphed" in times:
            row[f"{name} graphed / mlp graphed"] = times[f"{name} graphed"] / times["mlp graphed"]

    # The conv kernels alone, on h = fc1(x) in the run's dtype.
    h = torch.randn(batch, 1 + side * side, hidden, **factory)
    grad = torch.randn_like(h)
    dw_weight, dw_bias = ffn.dwconv.weight.detach(), ffn.dwconv.bias.detach()
    nbytes = h.numel() * h.element_size()
    kernels = {
        "dwconv_act fwd": (lambda: effkernels.dwconv_act(h, grid, dw_weight, dw_bias, **OPTIONS), 2 * nbytes),
        "dwconv_act bwd": (lambda: torch.ops.effkernels.dwconv_act_backward(grad, h, grid, dw_weight, dw_bias,
                                                                            **OPTIONS), 3 * nbytes),
    }
    if common.has_cuda_cpp(device):
        # The other GPU backend on the same inputs: the default is the one measured fastest.
        kernels["dwconv_act CUDA C++ fwd"] = (
            lambda: torch.ops.effkernels.dwconv_act_cuda(h, grid, dw_weight, dw_bias, **OPTIONS), 2 * nbytes)
        kernels["dwconv_act CUDA C++ bwd"] = (
            lambda: torch.ops.effkernels.dwconv_act_backward_cuda(grad, h, grid, dw_weight, dw_bias, **OPTIONS),
            3 * nbytes)
    leaves = [t.detach().requires_grad_() for t in (h, dw_weight, dw_bias)]
    view_out = F.hardswish(_view_conv(F.hardswish(leaves[0]), grid, leaves[1], leaves[2], 1))
    view_grad = torch.randn_like(view_out)
    kernels["view conv fwd"] = (
        lambda: F.hardswish(_view_conv(F.hardswish(h), grid, dw_weight, dw_bias, 1)), 2 * nbytes)
    kernels["view conv bwd"] = (
        lambda: torch.autograd.grad(view_out, leaves, view_grad, retain_graph=True), 3 * nbytes)
    with torch.no_grad():
        kernel_times = common.interleaved_median_ms({k: fn for k, (fn, _) in kernels.items()}, device, repeats)
    for name, (_, moved) in kernels.items():
        row[f"{name} ms"] = kernel_times[name]
        row[f"{name} GB/s"] = moved / kernel_times[name] / 1e6
    row["fused memory MB"] = memory_mb(fused, x)
    row["reference memory MB"] = memory_mb(eager, x)
    return row


def kernel_names(row) -> list[str]:
    """The conv kernels timed alone in this row (dwconv_act, the view conv, the CUDA C++ backend)."""
    return [key[: -len(" GB/s")] for key in row if key.endswith(" GB/s")]


def progress_line(row) -> str:
    """One case's headline figures, printed as soon as it is measured."""
    names = ("fused / mlp", "fused CUDA C++ / mlp", "fused compiled / mlp", "fused graphed / mlp graphed",
             "fused CUDA C++ graphed / mlp graphed")
    ratios = ", ".join(f"{name} {row[name]:.2f}" for name in names if name in row)
    kernels = ", ".join(f"{name} {row[f'{name} ms']:.3f} ms ({row[f'{name} % roofline']:.0f} %)"
                        for name in kernel_names(row))
    return f"{row['model']} b{row['batch']} {row['grid']}: {ratios}; {kernels}"


def write(out_dir, meta, rows):
    """local_ffn.{md,json,png} of the rows so far; the markdown table."""
    block_columns = [f"{name}{how} ms" for how in ("", " graphed") for name in BLOCKS
                     if f"{name}{how} ms" in rows[0]]
    ratio_columns = [f"{name}{how} / mlp{how}" for how in ("", " graphed")
                     for name in ("fused", "fused CUDA C++", "fused compiled", "reference", "reference compiled",
                                  "view conv")]
    columns = (["model", "batch", "grid", "model GFLOP", "torch-counted GFLOP"] + block_columns
               + [c for c in (*ratio_columns, "fused TFLOP/s", "fused graphed TFLOP/s") if c in rows[0]]
               + [f"{k} {unit}" for k in kernel_names(rows[0]) for unit in ("ms", "% roofline")]
               + ["fused memory MB", "reference memory MB"])
    return common.write_results(out_dir, "local_ffn", meta, rows, columns,
                                plot=(("model", "grid"), "fused / mlp", "LocalFFN time / plain Mlp time"))


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep_help="default: small on GPU, tiny on CPU",
                                    repeats=(50, 5))
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on the GPU, float32 on the CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd variants")
    args = parser.parse_args(argv)
    device, repeats = args.device, args.repeats
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    sweep = args.sweep or ("small" if device.type == "cuda" else "tiny")
    compile_variants = not args.no_compile
    skipped = [] if compile_variants else ["fused compiled", "reference compiled", "mlp compiled (--no-compile)"]
    if device.type != "cuda":
        skipped.append("the GPU kernels: on a CPU dwconv_act runs its C++ kernel and the view conv oneDNN's")
    bandwidth = common.copy_bandwidth_gbs(device)
    meta = {**common.run_meta(device), "copy GB/s": bandwidth, "sweep": sweep, "repeats": repeats,
            "dtype": str(dtype), "layout": OPTIONS,
            "backend": effkernels.ops.gpu_backend("dwconv_act") if device.type == "cuda" else "cpu",
            "memory": "tensors saved for backward" if device.type == "cpu" else "peak allocated during fwd+bwd",
            "skipped": skipped}
    rows = []
    for case in SWEEPS[sweep]:
        row = bench_case(*case, device, dtype, repeats, compile_variants)
        for name in kernel_names(row):
            row[f"{name} % roofline"] = 100 * row[f"{name} GB/s"] / bandwidth
        rows.append(row)
        print(progress_line(row), flush=True)
        write(args.out, meta, rows)  # after every case: a run stopped at its time limit keeps the finished ones
    meta.update(host_overhead(device, dtype))
    table = write(args.out, meta, rows)
    print(table)
    print(f"host µs per eager call: dwconv_act {meta['host us dwconv_act fwd']:.1f}, "
          f"dwconv_act_backward {meta['host us dwconv_act bwd']:.1f} ({meta['device']})")
    print("skipped: " + ("; ".join(skipped) if skipped else "nothing"))


if __name__ == "__main__":
    main()
