"""What effkernels.timm.fuse buys on a real timm model: forward + backward time before and after.

For pvt_v2_b0 (every block's MlpWithDepthwiseConv becomes the fused LocalFFN): each stage's first
block alone, on the token grid it sees, and the whole model, timed round-robin in one run. On a GPU
each is also timed replayed from a CUDA graph ("graphed"): the device's time without the host's
launches, what a captured training step pays.
"""
import copy
import os
import sys

import timm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import effkernels  # noqa: E402

SWEEPS = {"tiny": (2, 64), "small": (16, 224), "full": (128, 224)}  # (batch, image size)


def step(module, inputs):
    def run():
        module.zero_grad(set_to_none=True)
        module(*inputs).float().sum().backward()
    return run


def timed(steps, device, repeats):
    """{"timm ms", "fused ms", "speed-up"} of the two steps, and on a GPU the same replayed from CUDA graphs."""
    steps = {**steps, **{f"{name} graphed": replay for name, fn in steps.items()
                         if (replay := common.graphed(fn, device)) is not None}}
    times = common.interleaved_median_ms(steps, device, repeats)
    row = {**{f"{name} ms": ms for name, ms in times.items()}, "speed-up": times["timm"] / times["fused"]}
    if "fused graphed" in times:
        row["graphed speed-up"] = times["timm graphed"] / times["fused graphed"]
    return row


def stage_inputs(model, batch, size, device, dtype):
    """For each stage: (its first block, the tokens and feature size that block receives)."""
    captured = []
    hooks = [stage.blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args)) for stage in model.stages]
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size, device=device, dtype=dtype))
    for hook in hooks:
        hook.remove()
    return [(stage.blocks[0], (x.detach().requires_grad_(), feat)) for stage, (x, feat) in zip(model.stages, captured)]


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="small", repeats=(30, 7))
    parser.add_argument("--model", default="pvt_v2_b0")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    device, dtype, repeats = args.device, getattr(torch, args.dtype), args.repeats
    batch, size = SWEEPS[args.sweep]
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=1000).to(device, dtype)
    fused = effkernels.timm.fuse(copy.deepcopy(model))
    rows = []
    for index, ((block, inputs), (fused_block, _)) in enumerate(
        zip(stage_inputs(model, batch, size, device, dtype), stage_inputs(fused, batch, size, device, dtype))
    ):
        rows.append({"part": f"stage {index} block", "tokens": f"{inputs[1][0]}x{inputs[1][1]}",
                     **timed({"timm": step(block, inputs), "fused": step(fused_block, inputs)}, device, repeats)})
    images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    rows.append({"part": "whole model", "tokens": f"{size}px",
                 **timed({"timm": step(model, (images,)), "fused": step(fused, (images,))}, device, repeats)})
    meta = {**common.run_meta(device), "model": args.model, "batch": batch, "image": size, "dtype": args.dtype,
            "repeats": repeats, "what": "forward + backward"}
    columns = [c for c in ("part", "tokens", "timm ms", "fused ms", "speed-up", "timm graphed ms", "fused graphed ms",
                           "graphed speed-up") if c in rows[0]]
    print(common.write_results(args.out, f"timm_fuse_{args.model}", meta, rows, columns,
                               plot=("part", "speed-up", "speed-up of fuse()")))


if __name__ == "__main__":
    main()
