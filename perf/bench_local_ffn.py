"""Benchmark the fused LocalFFN against the eager LocalFFN, its torch.compile, and a plain timm Mlp.

All four run forward + backward on the same tokens in the same run, timed round-robin:
- fused: effkernels.local_ffn (fc1 GEMM → fused dwconv_act kernel → fc2 GEMM);
- eager: effkernels.reference.local_ffn, the obvious PyTorch (Linear, Seq2Im, conv2d, Im2Seq, Linear);
- compiled: torch.compile of that eager function;
- mlp: timm's Mlp (fc1 → GELU → fc2) of the same widths: what locality costs is `fused / mlp`.
The LocalFFN layout is the ViT-24h one: h-swish before and after the 3×3 depthwise conv, class token
skipping the FFN. Also reported: the dwconv_act kernel alone (forward), its GB/s and % of the copy
roofline (h read once, a written once), the fused fwd+bwd TFLOP/s (FlopCounterMode FLOPs: the
GEMMs and the 3×3 taps), and the memory each LocalFFN needs for backward (CPU: the
tensors autograd saves; GPU: the peak allocated during forward + backward).
"""
import argparse
import os
import sys

import torch
from timm.layers import Mlp
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import effkernels  # noqa: E402
from effkernels import reference  # noqa: E402

WIDTHS = {"deit_tiny": 192, "deit_small": 384, "deit_base": 768}
SWEEPS = {  # (model, batch, grid side)
    "tiny": [("deit_tiny", 2, 4)],
    "small": [("deit_tiny", 64, side) for side in (6, 10, 14)] + [("deit_small", 32, side) for side in (6, 10, 14)],
    "full": [(model, 256, side) for model in WIDTHS for side in (6, 8, 10, 12, 14)],  # 96 ... 224 px
}
OPTIONS = dict(num_prefix_tokens=1, prefix="skip", pre_act="hardswish", act="hardswish")


def fwd_bwd(fn, x, params):
    def step():
        for p in params:
            p.grad = None
        fn(x).sum().backward()
    return step


def fwd_bwd_flops(fn, x):
    counter = FlopCounterMode(display=False)
    with counter:
        fn(x).sum().backward()
    return counter.get_total_flops()


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


def bench_case(model, batch, side, device, dtype, repeats):
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

    compiled = torch.compile(eager)
    steps = {name: fwd_bwd(fn, x, params) for name, fn in (("fused", fused), ("eager", eager), ("compiled", compiled))}
    steps["mlp"] = fwd_bwd(mlp, x, (x, *mlp.parameters()))
    times = common.interleaved_median_ms(steps, device, repeats)
    h = torch.randn(batch, 1 + side * side, hidden, **factory)
    dw_weight, dw_bias = ffn.dwconv.weight.detach(), ffn.dwconv.bias.detach()
    kernel_ms = common.median_ms(lambda: effkernels.dwconv_act(h, grid, dw_weight, dw_bias, **OPTIONS), device, repeats)
    return {
        "model": model,
        "batch": batch,
        "grid": f"{side}x{side}",
        **{f"{name} ms": ms for name, ms in times.items()},
        "fused / mlp": times["fused"] / times["mlp"],
        "eager / mlp": times["eager"] / times["mlp"],
        "compiled / mlp": times["compiled"] / times["mlp"],
        "speed-up vs eager": times["eager"] / times["fused"],
        "fused TFLOP/s": fwd_bwd_flops(fused, x) / times["fused"] / 1e9,
        "dwconv_act fwd ms": kernel_ms,
        "dwconv_act bytes": 2 * h.numel() * h.element_size(),
        "fused memory MB": memory_mb(fused, x),
        "eager memory MB": memory_mb(eager, x),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on the GPU, float32 on the CPU")
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="small")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 50 GPU, 11 CPU)")
    parser.add_argument("--out", default=None, help="results folder (default perf/results/<device>-<date>)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    repeats = args.repeats or (50 if device.type == "cuda" else 11)
    bandwidth = common.copy_bandwidth_gbs(device)
    rows = []
    for case in SWEEPS[args.sweep]:
        row = bench_case(*case, device, dtype, repeats)
        row["GB/s"] = row["dwconv_act bytes"] / row["dwconv_act fwd ms"] / 1e6
        row["% roofline"] = 100 * row["GB/s"] / bandwidth
        rows.append(row)
    meta = {**common.run_meta(device), "copy GB/s": bandwidth, "sweep": args.sweep, "repeats": repeats,
            "dtype": str(dtype), "layout": OPTIONS, "backend": os.environ.get("EFFKERNELS_BACKEND", "triton"),
            "memory": "tensors saved for backward" if device.type == "cpu" else "peak allocated during fwd+bwd"}
    columns = ["model", "batch", "grid", "fused ms", "eager ms", "compiled ms", "mlp ms", "fused / mlp",
               "eager / mlp", "compiled / mlp", "fused TFLOP/s", "dwconv_act fwd ms", "GB/s", "% roofline",
               "fused memory MB", "eager memory MB"]
    print(common.write_results(args.out or common.default_out_dir(device), "local_ffn", meta, rows, columns,
                                       plot=(("model", "grid"), "fused / mlp", "LocalFFN time / plain Mlp time")))


if __name__ == "__main__":
    main()
