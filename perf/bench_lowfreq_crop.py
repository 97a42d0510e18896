"""Benchmark effkernels.lowfreq_crop against the alternatives a training loop would use.

Peers, measured in the same run on the same batch:
- fft: EfficientTrain's freq_crop in torch.fft (fft2, shift, crop the centred block, ifft2, real);
- fft+resize: that, then F.interpolate(antialias=True) to the output size, when one is asked for;
- resize peers, the "just resize" baselines a frequency curriculum replaces, to the output size:
  F.interpolate(mode="bilinear", antialias=True); torchvision.transforms.v2.functional.resize
  (antialiased, what torchvision pipelines call on device tensors); and kornia's resize
  (Gaussian-blur antialiasing), when kornia is installed.
Peers get float32 input already in [0, 1]; effkernels is timed on uint8 (what a loader yields;
conversion, normalisation and cast fused) and on float32. Roofline: bytes that must move (input
read once, output written once) over the measured copy bandwidth of the device.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as torchvision_functional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import effkernels  # noqa: E402

try:
    import kornia.geometry.transform as kornia_transform
except ImportError:  # an optional peer
    kornia_transform = None

RESIZE_PEERS = ("interpolate", "torchvision resize", "kornia resize")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SWEEPS = {  # (batch, input size, band, output size or None)
    "tiny": [(2, 32, 16, None), (2, 32, 12, 16)],
    "small": [(32, 224, b, None) for b in (96, 160, 192)] + [(32, 224, 96, 128)],
    "full": [(batch, 224, b, None) for batch in (64, 256) for b in (96, 128, 160, 192)]
    + [(256, 224, 96, 128), (256, 224, 160, 224)],
}


def fft_lowfreq_crop(x: torch.Tensor, band: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    top, left = height // 2 - band // 2, width // 2 - band // 2
    block = torch.fft.ifftshift(spectrum[..., top : top + band, left : left + band], dim=(-2, -1))
    return torch.fft.ifft2(block).real * (band * band) / (height * width)


def bench_case(batch, size, band, out_size, device, repeats):
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    floats = images.float() / 255
    out = (out_size or band, out_size or band)
    times = {
        "effkernels uint8": common.median_ms(
            lambda: effkernels.lowfreq_crop(images, band, out_size, mean=MEAN, std=STD), device, repeats),
        "effkernels f32": common.median_ms(lambda: effkernels.lowfreq_crop(floats, band, out_size), device, repeats),
        "fft": common.median_ms(lambda: fft_lowfreq_crop(floats, band), device, repeats),
        "interpolate": common.median_ms(
            lambda: F.interpolate(floats, size=out, mode="bilinear", antialias=True), device, repeats),
        "torchvision resize": common.median_ms(
            lambda: torchvision_functional.resize(floats, list(out), antialias=True), device, repeats),
    }
    if kornia_transform is not None:
        times["kornia resize"] = common.median_ms(
            lambda: kornia_transform.resize(floats, out, antialias=True), device, repeats)
    if out_size is not None:
        times["fft+resize"] = common.median_ms(
            lambda: F.interpolate(fft_lowfreq_crop(floats, band), size=out, mode="bilinear", antialias=True),
            device, repeats)
    fft_peer = times.get("fft+resize", times["fft"])
    terms = 2 if band % 2 == 0 else 1
    flops = 2 * terms * batch * 3 * (size * size * out[1] + out[0] * size * out[1])
    return {
        "batch": batch,
        "input": size,
        "band": band,
        "output": out[0],
        **{f"{name} ms": ms for name, ms in times.items()},
        "speed-up vs fft": fft_peer / times["effkernels f32"],
        "vs best resize": min(times[name] for name in RESIZE_PEERS if name in times) / times["effkernels f32"],
        "uint8 bytes": images.numel() + batch * 3 * out[0] * out[1] * 4,
        "TFLOP/s": flops / times["effkernels uint8"] / 1e9,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="small")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 50 GPU, 7 CPU)")
    parser.add_argument("--out", default=None, help="results folder (default perf/results/<device>-<date>)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats or (50 if device.type == "cuda" else 7)
    bandwidth = common.copy_bandwidth_gbs(device)
    rows = []
    for case in SWEEPS[args.sweep]:
        row = bench_case(*case, device, repeats)
        row["GB/s"] = row["uint8 bytes"] / row["effkernels uint8 ms"] / 1e6
        row["% roofline"] = 100 * row["GB/s"] / bandwidth
        rows.append(row)
    meta = {**common.run_meta(device), "copy GB/s": bandwidth, "sweep": args.sweep, "repeats": repeats}
    columns = ["batch", "input", "band", "output", "effkernels uint8 ms", "effkernels f32 ms", "fft ms",
               "fft+resize ms", *(f"{name} ms" for name in RESIZE_PEERS), "speed-up vs fft", "vs best resize",
               "GB/s", "% roofline", "TFLOP/s"]
    print(common.write_results(args.out or common.default_out_dir(device), "lowfreq_crop", meta, rows, columns,
                                       plot=(("band", "output"), "speed-up vs fft", "speed-up vs torch.fft freq_crop")))


if __name__ == "__main__":
    main()
