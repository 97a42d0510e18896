"""Benchmark effkernels.augment.rand_augment: its Triton kernels against its torch stages and timm's PIL path.

What the input pipeline runs on every delivered batch (replays included): `rand-m9-mstd0.5-inc1` on
uint8 images at the crop size (224 in EfficientTrain++'s order), batch and magnitude as given.
- "triton": the GPU path, three Triton launches per op slot (a statistics pass, the lookup tables,
  then each image's own op) after small torch computations of the draws' parameters;
- "torch": the same draws through the whole-batch torch stages (every stage over every image), the
  formulation the kernels replaced on the GPU and the CPU path today;
- "timm PIL": timm's RandAugment on PIL images, one process, image by image: what one DataLoader
  worker does (CPU only, the batch's images converted to PIL beforehand).
"ms" is the device time per batch (CUDA events around back-to-back calls; host time where it is
larger), "host µs" the wall time per call of a loop that synchronises once at the end: on a GPU,
with small images, it is the host's launch cost that an eager pipeline pays per batch. "img/s" is
batch over the larger of the two. The Triton path needs a GPU here (the CPU's interpreter is no
speed); the default is the path a GPU run shows fastest.
"""
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from effkernels import augment  # noqa: E402
from effkernels.training_input import _RandAugment  # noqa: E402

SWEEPS = {"tiny": [(4, 32)], "small": [(64, 224), (256, 224)], "full": [(64, 224), (256, 160), (256, 224)]}
MAGNITUDE = 9


def _with_pixel_path(triton: bool, fn):
    """fn run with rand_augment's pixels on the Triton kernels (True) or the torch stages."""
    def run():
        chosen, augment._uses_triton = augment._uses_triton, lambda images: triton
        try:
            return fn()
        finally:
            augment._uses_triton = chosen
    return run


def timm_per_image(images: torch.Tensor):
    """timm's RandAugment with train.py's hparams (its CPU path's transform) over the batch's images as PIL images."""
    transform = _RandAugment()
    transform.magnitude = MAGNITUDE
    pil = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images.cpu()]
    return lambda: [np.asarray(transform(image)) for image in pil]


def main(argv=None):
    args = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="small", repeats=(20, 3),
                                  repeats_of="timed samples per path").parse_args(argv)
    device, repeats = args.device, args.repeats
    rows = []
    for batch, size in SWEEPS[args.sweep]:
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        call = lambda: augment.rand_augment(images, MAGNITUDE, generator=generator)  # noqa: E731
        paths = {"torch": _with_pixel_path(False, call)}
        if device.type == "cuda":
            paths["triton"] = _with_pixel_path(True, call)
        else:
            paths["timm PIL"] = timm_per_image(images)
        device_ms = common.interleaved_median_ms(paths, device, repeats=repeats, warmup=2)
        row = {"batch": batch, "size": size, "magnitude": MAGNITUDE}
        for name, fn in paths.items():
            host_us = common.wall_us_per_call(fn, device, calls=max(2, repeats // 2), warmup=1)
            row[f"{name} ms"] = device_ms[name]
            row[f"{name} host us"] = host_us
            row[f"{name} img/s"] = batch / (max(device_ms[name], host_us / 1e3) / 1e3)
        if "triton ms" in row:
            row["torch / triton"] = row["torch ms"] / row["triton ms"]
        rows.append(row)
        print(", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in row.items()), flush=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    fastest = "triton img/s" if device.type == "cuda" else "torch img/s"
    print(common.write_results(args.out, "augment", common.run_meta(device), rows, columns,
                               plot=(("batch", "size"), fastest, "images/s")))


if __name__ == "__main__":
    main()
