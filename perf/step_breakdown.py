"""Why a small training step costs more than its FLOP share: its device time, kind of kernel by kind.

For the training script's models (DeiT-S and LocalFFN DeiT-S by default), compiled as the script
compiles them, one training step (forward, cross-entropy, backward, fused AdamW; the batch already
at its size) is profiled at each size and its kernels are grouped by kind: GEMMs, attention, the
LocalFFN conv, Inductor's fused pointwise and norm kernels, optimizer, loss, the position
embedding's resampling, copies, other (on a CPU also the host-side ops of autograd). Per kind
and size: ms per step, share of the step's kernel time, and `time / FLOP` = (its ms here / its ms at
the largest size) / (the model's FLOP ratio), which is above 1 where the kind costs more at this
size than the FLOPs say (issue 15: measured part by part, what keeps small steps above their share),
and kernels per step: a kernel's fixed cost (ramp-up, tail, the gap before the next) does not shrink
with the size, so the count says how much of a small step is fixed.

The profiled steps launch their kernels from the host: the profiler does not name the kernels of a
CUDA graph replay, and their device time is the same. Beside them, on a GPU, the step as the script
runs it (one whole-step CUDA graph, effkernels.train_step) is timed; `graph - kernels` is what the
device spends outside the listed kernels (gaps between them, graph launch).
Usage: python perf/step_breakdown.py [--sweep deit_small|tiny] [--compile default|none] [--out DIR]
"""
import os
import re
import sys

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from profile_kernels import profile  # noqa: E402
from train_step import model_flops  # noqa: E402

from effkernels.train_step import CudaGraphs, TrainStep  # noqa: E402

SWEEPS = {  # model width, batch, sizes
    "deit_small": ("small", 256, (96, 160, 224)),
    "tiny": ("tiny", 2, (32, 64)),
}
# A kernel (GPU) or op (CPU) name's kind: the first pattern that matches; "other" if none does.
KINDS = (
    ("attention", r"flash|fmha|attention|sdpa"),
    ("LocalFFN conv", r"dwconv"),
    ("optimizer", r"adam|multi_tensor"),
    ("loss", r"nll_loss|log_softmax|cross_entropy"),
    # timm resamples a ViT's position embedding to the input's grid at every step (dynamic_img_size)
    ("position-embedding resample", r"upsample|interpolat|bicubic"),
    ("GEMM", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|sm80_|ampere_|\bmm\b|addmm|bmm|matmul|linear|convolution"),
    ("copy / fill", r"copy|memcpy|memset|fill|\bcat\b"),
    ("pointwise / norm", r"^triton_|norm|gelu|hardswish|add|mul|sum|mean|div|sub|exp|where"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, lowered)), "other")


def by_kind(kernels) -> dict:
    """{kind: (ms per step, kernels per step)} from profile()'s (name, calls, ms) rows."""
    totals = {}
    for name, calls, ms in kernels:
        kind = kind_of(name)
        kind_ms, kind_calls = totals.get(kind, (0.0, 0.0))
        totals[kind] = kind_ms + ms, kind_calls + calls
    return totals


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="deit_small")
    parser.add_argument("--compile", choices=["default", "none"], default="default",
                        help="torch.compile mode of the models (the training script's default on a GPU)")
    parser.add_argument("--iterations", type=int, default=5, help="profiled steps per model and size")
    args = parser.parse_args(argv)
    device = args.device
    amp = device.type == "cuda"
    width, batch, sizes = SWEEPS[args.sweep]
    largest = max(sizes)
    rows = []
    for name in (f"deit_{width}_patch16_224", f"deit_{width}_localffn_patch16_224"):
        torch.manual_seed(0)
        model = timm.create_model(name, img_size=largest, dynamic_img_size=True).to(device)
        net = torch.compile(model, dynamic=False) if args.compile != "none" else model
        optimizer = torch.optim.AdamW(model.parameters(), fused=True)
        launched = TrainStep(net, optimizer, F.cross_entropy, amp=amp)
        graphed = (TrainStep(net, optimizer, F.cross_entropy, amp=amp, graphs=CudaGraphs(device))
                   if device.type == "cuda" else None)
        labels = torch.randint(0, 1000, (batch,), device=device)
        for size in sizes:
            x = torch.randn(batch, 3, size, size, device=device)
            _, kernels = profile(lambda: launched(x, labels, 1e-4), device, args.iterations)
            kinds = by_kind(kernels)
            total, count = (sum(values) for values in zip(*kinds.values()))
            flops = model_flops(model, size, device)
            graph_ms = None
            if graphed is not None:
                while not graphed.steady(x, labels):
                    graphed(x, labels, 1e-4)
                graph_ms = common.median_ms(lambda: graphed(x, labels, 1e-4), device, repeats=10)
            for kind, (ms, calls) in sorted(kinds.items(), key=lambda item: -item[1][0]):
                rows.append(dict(model=name, size=size, kind=kind, ms=ms, share=ms / total, kernels=calls, flops=flops))
            rows.append(dict(model=name, size=size, kind="all kernels", ms=total, share=1.0, kernels=count, flops=flops))
            if graph_ms is not None:
                rows.append(dict(model=name, size=size, kind="whole-step graph", ms=graph_ms, share=None, flops=flops))
                rows.append(dict(model=name, size=size, kind="graph - kernels", ms=graph_ms - total, share=None,
                                 flops=flops))
    for row in rows:  # against the same model and kind at the largest size
        base = next((r for r in rows if r["model"] == row["model"] and r["kind"] == row["kind"]
                     and r["size"] == largest), None)
        flop_ratio = row["flops"] / next(r["flops"] for r in rows if r["model"] == row["model"] and r["size"] == largest)
        row["FLOP ratio"] = flop_ratio
        row["time / FLOP"] = row["ms"] / base["ms"] / flop_ratio if base and base["ms"] > 0 else None
    meta = {**common.run_meta(device), "batch": batch, "sizes": sizes, "compile": args.compile, "amp bf16": amp,
            "iterations": args.iterations, "kinds": dict(KINDS)}
    columns = ["model", "size", "kind", "ms", "share", "kernels", "FLOP ratio", "time / FLOP"]
    print(common.write_results(args.out, "step_breakdown", meta, rows, columns))
    return rows


if __name__ == "__main__":
    main()
