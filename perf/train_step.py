"""Does a training step's measured time follow its theoretical FLOPs across curriculum sizes?

For each model variant and input size: the median time of one full training step (uint8 batch on
the device → low-frequency crop to the size → forward → backward → fused AdamW step), and its
forward + backward FLOPs (FlopCounterMode). Both are reported relative to the largest size: where
`time ratio / FLOP ratio` is above 1, a small-size step costs more than theory says.

The step's parts are also timed alone, to say why: the transform reads the full-size batch at
every size, the optimizer step costs the same at every size, and `fwd+bwd / FLOP` is the model
alone (on the GPU, kernel-launch overhead shows up there at small sizes; --compile adds variants
that run as the training script does by default, to remove it). `training` is forward, backward and
optimizer step on the prepared input: `training / FLOP` is what the model and its optimizer cost
against theory, the transform left out. `step / plain` is a LocalFFN step against the plain DeiT
step run the same way: the cost of locality.

Variants (same batch, same sizes, timed round-robin):
- localffn fused: deit_*_localffn with effkernels' fused LocalFFN and lowfreq_crop;
- localffn eager: the same model with the eager LocalFFN reference and the torch.fft freq_crop;
- plain: the timm DeiT without locality, with effkernels' lowfreq_crop;
- localffn compiled, plain compiled (--compile): the model under torch.compile in the training
  script's TrainStep; on a GPU its forward, loss, backward and AdamW replay as one CUDA graph per size.
"""
import contextlib
import copy
import os
import sys
from unittest import mock

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_lowfreq_crop import fft_lowfreq_crop  # noqa: E402

import effkernels  # noqa: E402
from effkernels import reference  # noqa: E402
from effkernels.flops import flop_counter  # noqa: E402
from effkernels.nn import LocalFFN  # noqa: E402
from effkernels.train_step import CudaGraphs, TrainStep  # noqa: E402

PARTS = ("step", "transform", "training", "fwd+bwd", "optimizer")  # timed alone; a graphed step has the first three
SWEEPS = {  # (model width, batch, sizes)
    "tiny": ("tiny", 2, (32, 64)),
    "small": ("tiny", 16, (96, 160, 224)),
    "full": ("small", 256, (96, 160, 224)),  # GPU-FACTS.md's whole-step shapes: DeiT-S, batch 256
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fused_transform(images, size):
    return effkernels.lowfreq_crop(images, size, mean=MEAN, std=STD)


def eager_transform(images, size):
    x = fft_lowfreq_crop(images.float() / 255, size)
    return (x - torch.tensor(MEAN, device=x.device)[:, None, None]) / torch.tensor(STD, device=x.device)[:, None, None]


class _StepParts:
    """Callables for a whole step (the transform, then the training on its output) and its parts."""

    def prepare(self, images, size):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.transform(images, size)

    def timed_parts(self, images, labels, size):
        x = self.prepare(images, size)
        self.warm_up(x, labels)
        return {"step": lambda: self.train(self.prepare(images, size), labels),
                "transform": lambda: self.transform(images, size),
                "training": lambda: self.train(x, labels),
                **self.more_parts(x, labels)}

    def warm_up(self, x, labels):
        pass

    def more_parts(self, x, labels):
        return {}


class Variant(_StepParts):
    """A model, its optimizer and its curriculum transform, launched eagerly: forward + backward and
    the optimizer step also timed apart."""

    def __init__(self, model, optimizer, transform, amp, context=contextlib.nullcontext):
        self.model, self.optimizer, self.transform, self.amp, self.context = model, optimizer, transform, amp, context

    def forward_backward(self, x, labels):
        with self.context(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = F.cross_entropy(self.model(x), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def train(self, x, labels):
        self.forward_backward(x, labels)
        self.optimizer.step()

    def more_parts(self, x, labels):
        return {"fwd+bwd": lambda: self.forward_backward(x, labels), "optimizer": self.optimizer.step}


class ScriptStep(_StepParts):
    """A model in effkernels.train's TrainStep (one CUDA graph per size on a GPU); forward, backward
    and optimizer are not separable in one graph."""

    def __init__(self, train_step, transform, amp):
        self.train_step, self.transform, self.amp = train_step, transform, amp

    def train(self, x, labels):
        self.train_step(x, labels, 1e-4)

    def warm_up(self, x, labels):
        while not self.train_step.steady(x, labels):  # warm-ups and the capture, out of the timing
            self.train(x, labels)


def adamw(model):
    """AdamW as the training script runs it: the fused kernel (one launch per step, not per tensor)."""
    return torch.optim.AdamW(model.parameters(), fused=True)


def model_flops(model, size, device):
    x = torch.randn(2, 3, size, size, device=device)
    counter = flop_counter(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="small", repeats=(20, 5),
                                    repeats_of="timed steps per case")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (slow to compile on CPU)")
    args = parser.parse_args(argv)
    device, repeats = args.device, args.repeats
    amp = device.type == "cuda"
    width, batch, sizes = SWEEPS[args.sweep]
    largest = max(sizes)
    models = {
        "localffn": timm.create_model(f"deit_{width}_localffn_patch16_224", img_size=largest, dynamic_img_size=True).to(device),
        "plain": timm.create_model(f"deit_{width}_patch16_224", img_size=largest, dynamic_img_size=True).to(device),
    }
    optimizers = {name: adamw(model) for name, model in models.items()}
    variants = {
        "localffn fused": Variant(models["localffn"], optimizers["localffn"], fused_transform, amp),
        "localffn eager": Variant(models["localffn"], optimizers["localffn"], eager_transform, amp, _eager_local_ffn),
        "plain": Variant(models["plain"], optimizers["plain"], fused_transform, amp),
    }
    if args.compile:
        for name in ("localffn", "plain"):
            model = copy.deepcopy(models[name])  # its own compiled graphs and optimizer state
            graphs = CudaGraphs(device) if device.type == "cuda" else None
            train_step = TrainStep(torch.compile(model, dynamic=False), adamw(model), F.cross_entropy, amp=amp,
                                   graphs=graphs)
            variants[f"{name} compiled"] = ScriptStep(train_step, fused_transform, amp)
    images = torch.randint(0, 256, (batch, 3, largest, largest), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    rows = []
    for size in sizes:
        parts = {(name, part): fn for name, variant in variants.items()
                 for part, fn in variant.timed_parts(images, labels, size).items()}
        times = common.interleaved_median_ms(parts, device, repeats, warmup=2)
        flops = {name: model_flops(model, size, device) for name, model in models.items()}
        for name in variants:
            row = {"variant": name, "size": size, "GFLOP/image": flops[name.split()[0]] / 1e9,
                   **{f"{part} ms": times.get((name, part)) for part in PARTS}}
            rows.append({**row, "images/s": batch / row["step ms"] * 1e3})
    for row in rows:  # ratios against the same variant at the largest size
        base = next(r for r in rows if r["variant"] == row["variant"] and r["size"] == largest)
        row["FLOP ratio"] = row["GFLOP/image"] / base["GFLOP/image"]
        row["time ratio"] = row["step ms"] / base["step ms"]
        row["time / FLOP"] = row["time ratio"] / row["FLOP ratio"]
        row["training / FLOP"] = row["training ms"] / base["training ms"] / row["FLOP ratio"]
        row["fwd+bwd / FLOP"] = (row["fwd+bwd ms"] / base["fwd+bwd ms"] / row["FLOP ratio"]
                                 if row["fwd+bwd ms"] is not None else None)
        # The cost of locality: a LocalFFN step against the plain DeiT step run the same way (issue 13
        # asks at most 1.10x, compiled with CUDA graphs).
        peer = "plain compiled" if row["variant"].endswith("compiled") else "plain"
        plain = next(r for r in rows if r["variant"] == peer and r["size"] == row["size"])
        row["step / plain"] = row["step ms"] / plain["step ms"]
    meta = {**common.run_meta(device), "model width": width, "batch": batch, "amp bf16": amp, "repeats": repeats,
            "optimizer": "AdamW fused"}
    columns = ["variant", "size", *[f"{part} ms" for part in PARTS], "images/s", "GFLOP/image",
               "time ratio", "FLOP ratio", "time / FLOP", "training / FLOP", "fwd+bwd / FLOP", "step / plain"]
    print(common.write_results(args.out, "train_step", meta, rows, columns,
                               plot=(("variant", "size"), "time / FLOP",
                                     "(time ratio) / (FLOP ratio) vs largest size")))


def _eager_local_ffn():
    return mock.patch.object(LocalFFN, "forward", reference.local_ffn_module)


if __name__ == "__main__":
    main()
