"""Benchmark effkernels.lowfreq_crop against the alternatives a training loop would use.

effkernels, on uint8 images (what a loader yields; conversion, normalisation and cast fused):
- "bf16" / "f32": lowfreq_crop with bf16 / float32 output (the Triton kernel's bf16-only and
  hi + lo tensor-core precisions on a GPU); "f32 in": float32 images in [0, 1], float32 out;
- "f32 in bwd": the backward of "f32 in" alone (grad of x for a fixed random grad of the output,
  its autograd graph kept): the adjoint map, which the issue asks to be as fast as the forward;
- "aug bf16" / "aug f32": lowfreq_crop_augmented with per-sample crop boxes and flips;
- "CUDA C++ bf16" / "CUDA C++ f32": the plain op on the CUDA C++ backend (EFFKERNELS_BACKEND=cuda),
  on a GPU when it was built: the default backend is the one these show fastest;
- "bf16 fitted": on a GPU, at 224 px with no resize, the Triton kernel's raw launch with
  tune_separable_map.fitted_tiles (blocks that fit the band instead of padding it) on the same
  batches; "fitted / default" below 1 says the default tiles should change.
Peers, measured in the same run on the same batch:
- fft: EfficientTrain's freq_crop in torch.fft (fft2, shift, crop the centred block, ifft2, real);
  fft+resize: that, then F.interpolate(antialias=True) to the output size, when one is asked for;
- 2-GEMM: the low-pass as two plain library GEMMs from uint8, as /work/shared/gpu-probes/peers.py:
  `T = (x / 255) @ [Re A_w; Im A_w]ᵀ`, `y = Re A_h @ T_re - Im A_h @ T_im`, normalised, bf16 out;
  bf16 operands on a GPU (cuBLAS), float32 on a CPU (no fast bf16 GEMM there); eager and
  torch.compile'd (the compiled one is skipped on a CPU unless --compile-peers: it compiles slowly
  there and is no GPU fact);
- resize peers, the "just resize" baselines a frequency curriculum replaces, to the output size:
  F.interpolate(mode="bilinear", antialias=True); torchvision.transforms.v2.functional.resize
  (antialiased); and kornia's resize (Gaussian-blur antialiasing), when kornia is installed.
Peers other than 2-GEMM get float32 input already in [0, 1].
Ceilings measured in the same run: the copy bandwidth (roofline: uint8 input read once, output
written once) and a large matmul, bf16 on a GPU (the tensor-core rate), float32 on a CPU (what the
CPU kernel multiplies in): "% GEMM" is the bf16-output op's useful FLOP rate (K = 1 GEMM chain; the
rank-one term is O(H·W)) over it. On a CPU, lowfreq_crop without a resize runs folded (half those
multiply-adds, see csrc/cpu/separable_map.cpp), so there it can pass 100 %.
Host µs per call: many calls of each entry point on a tiny batch, timed on the host without
synchronising; on a GPU the kernels queue behind the host, so this is the host cost per call
(minus nothing: the GPU is idle most of the time); on a CPU the kernel itself is subtracted as the
time of a direct torch.ops.effkernels.separable_map call with prepared operators. "lowfreq_crop's
plan alone" is what a repeat call runs after its plan look-up (the raw Triton launch on a GPU), so
its gap to "lowfreq_crop" is the Python layer in front of the launch.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as torchvision_functional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import tune_separable_map  # noqa: E402

import effkernels  # noqa: E402
from effkernels import operators  # noqa: E402

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


def two_gemm_lowfreq_crop(size: int, band: int, out: tuple, device):
    """The peer of /work/shared/gpu-probes/peers.py: two library GEMMs with dense Re/Im operators."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    axes = operators.lowfreq_crop_axes((size, size), (band, band), out)
    real_h, real_w = axes[0][0, 0], axes[1][0, 0]
    # Re A_h x Re A_wᵀ - Im A_h x Im A_wᵀ, with lowfreq_crop_axes' rank-one factors made dense again.
    imag_h, imag_w = -torch.outer(axes[2][0], axes[3][0]), torch.outer(axes[4][0], axes[5][0])
    stacked_w = torch.cat([real_w, imag_w], 0).T.contiguous().to(device, dtype)
    real_h, imag_h = real_h.to(device, dtype), imag_h.to(device, dtype)
    mean = torch.tensor(MEAN, device=device)[:, None, None]
    std = torch.tensor(STD, device=device)[:, None, None]
    width = out[1]

    def run(images):
        t = (images.to(dtype) * (1 / 255)) @ stacked_w
        y = real_h @ t[..., :width] - imag_h @ t[..., width:]
        return ((y.float() - mean) / std).to(torch.bfloat16)

    return run


def backward_only(op, x):
    """A function running just the backward of op(x) with respect to x, for a fixed random grad of
    the output: the forward runs once here and its graph is kept for every call."""
    leaf = x.detach().requires_grad_()
    out = op(leaf)
    grad_out = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, leaf, grad_out, retain_graph=True)[0]


def bench_case(batch, size, band, out_size, device, repeats, compile_peers):
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    floats = images.float() / 255
    next_images, next_floats = common.cycling(images), common.cycling(floats)
    out = (out_size or band, out_size or band)
    module = effkernels.nn.LowFreqCrop(band, out_size, MEAN, STD, random_resized_crop=True, hflip_prob=0.5)
    boxes, flip = module.sample_boxes(batch, size, size), torch.rand(batch) < 0.5

    def ours(out_dtype):
        return lambda: effkernels.lowfreq_crop(next_images(), band, out_size, mean=MEAN, std=STD, out_dtype=out_dtype)

    def augmented(out_dtype):
        return lambda: effkernels.lowfreq_crop_augmented(
            next_images(), band, out_size, boxes=boxes, flip=flip, mean=MEAN, std=STD, out_dtype=out_dtype)

    two_gemm = two_gemm_lowfreq_crop(size, band, out, device)
    timed = {
        "bf16": ours(torch.bfloat16),
        "f32": ours(torch.float32),
        "f32 in": lambda: effkernels.lowfreq_crop(next_floats(), band, out_size),
        "f32 in bwd": backward_only(lambda x: effkernels.lowfreq_crop(x, band, out_size), floats),
        "aug bf16": augmented(torch.bfloat16),
        "aug f32": augmented(torch.float32),
        "fft": lambda: fft_lowfreq_crop(next_floats(), band),
        "2-GEMM": lambda: two_gemm(next_images()),
        "interpolate": lambda: F.interpolate(next_floats(), size=out, mode="bilinear", antialias=True),
        "torchvision resize": lambda: torchvision_functional.resize(next_floats(), list(out), antialias=True),
    }
    if common.has_cuda_cpp(device):
        # The other GPU backend on the same batches: the default is the one measured fastest.
        timed["CUDA C++ bf16"] = common.with_backend("cuda", ours(torch.bfloat16))
        timed["CUDA C++ f32"] = common.with_backend("cuda", ours(torch.float32))
    if device.type == "cuda" and size == 224 and out_size is None:
        fitted, _ = tune_separable_map.launcher(band, batch, torch.bfloat16, tune_separable_map.fitted_tiles(band))
        timed["bf16 fitted"] = lambda: fitted(next_images())
    if compile_peers:
        compiled = torch.compile(two_gemm)
        timed["2-GEMM compiled"] = lambda: compiled(next_images())
    if kornia_transform is not None:
        timed["kornia resize"] = lambda: kornia_transform.resize(next_floats(), out, antialias=True)
    if out_size is not None:
        timed["fft+resize"] = lambda: F.interpolate(fft_lowfreq_crop(next_floats(), band), size=out, mode="bilinear",
                                                    antialias=True)
    times = common.interleaved_median_ms(timed, device, repeats)  # a noisy neighbour hits every entry alike
    fft_peer = times.get("fft+resize", times["fft"])
    flops = 2 * batch * 3 * (size * size * out[1] + out[0] * size * out[1])
    return {
        "batch": batch,
        "input": size,
        "band": band,
        "output": out[0],
        **{f"{name} ms": ms for name, ms in times.items()},
        "speed-up vs fft": fft_peer / times["f32"],
        "bf16 vs fft": fft_peer / times["bf16"],
        "vs 2-GEMM": times["2-GEMM"] / times["bf16"],
        **({"vs 2-GEMM compiled": times["2-GEMM compiled"] / times["bf16"]} if "2-GEMM compiled" in times else {}),
        "aug / plain": times["aug bf16"] / times["bf16"],
        **({"fitted / default": times["bf16 fitted"] / times["bf16"]} if "bf16 fitted" in times else {}),
        "bwd / fwd": times["f32 in bwd"] / times["f32 in"],
        "vs best resize": min(times[name] for name in RESIZE_PEERS if name in times) / times["bf16"],
        "uint8 bytes": images.numel() + batch * 3 * out[0] * out[1] * 2,
        "TFLOP/s": flops / times["bf16"] / 1e9,
    }


def host_us_per_call(device, calls):
    """Host µs of one eager call of each entry point, on a tiny batch (see the module docstring)."""
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, device=device)
    boxes, flip = torch.tensor([[0, 0, 32, 32], [4, 2, 20, 24]]), torch.tensor([False, True])
    rows, cols, *factors = operators.lowfreq_crop_operators_cached((32, 32), (16, 16), (16, 16), torch.float32, device)
    scale, shift = effkernels.ops.normalisation_affine(images, MEAN, STD, torch.float32)
    op = torch.ops.effkernels.separable_map.default
    plan = effkernels.ops._lowfreq_plan(None, images, 16, None, MEAN, STD, torch.bfloat16)  # built, not cached
    entry_points = {
        "lowfreq_crop": lambda: effkernels.lowfreq_crop(images, 16, mean=MEAN, std=STD, out_dtype=torch.bfloat16),
        "lowfreq_crop_augmented": lambda: effkernels.lowfreq_crop_augmented(
            images, 16, boxes=boxes, flip=flip, mean=MEAN, std=STD, out_dtype=torch.bfloat16),
        "separable_map op, prepared": lambda: op(images, rows, cols, scale, shift, torch.bfloat16, *factors),
        # What a repeat lowfreq_crop call runs after its plan look-up (on a GPU the raw Triton launch): the
        # difference to "lowfreq_crop" is the Python layer in front of it.
        "lowfreq_crop's plan alone": lambda: plan(images),
    }
    results = {}
    threads = torch.get_num_threads()
    if device.type != "cuda":  # one thread: an OpenMP barrier on a loaded host would swamp the µs
        torch.set_num_threads(1)
    for name, fn in entry_points.items():
        for _ in range(10):
            fn()
        common.synchronize(device)
        samples = []
        for _ in range(5):
            begin = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - begin) / calls * 1e6)
            common.synchronize(device)
        results[name] = statistics.median(samples)
    torch.set_num_threads(threads)
    if device.type != "cuda":  # the kernel runs on the host too: subtract it
        kernel = results["separable_map op, prepared"]
        results = {name: us - kernel if name != "separable_map op, prepared" else us for name, us in results.items()}
    return results


def gemm_dtype(device) -> torch.dtype:
    """What the kernel multiplies in at bf16 output: bf16 tensor cores on a GPU, float32 on a CPU
    (whose bf16 matmul, without AMX/AVX512-BF16, runs far below its float32 one)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def gemm_tflops(device, dtype):
    """Measured rate of a large matmul of `dtype` on device, TFLOP/s."""
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    ms = common.median_ms(lambda: a @ b, device, repeats=5 if device.type == "cuda" else 3)
    return 2 * size**3 / ms / 1e9


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="small", repeats=(50, 7))
    parser.add_argument("--compile-peers", action=argparse.BooleanOptionalAction, default=None,
                        help="time the torch.compile'd 2-GEMM peer (default: on a GPU only)")
    parser.add_argument("--host-calls", type=int, default=None, help="calls per host-overhead sample (default 200)")
    args = parser.parse_args(argv)
    device, repeats = args.device, args.repeats
    compile_peers = device.type == "cuda" if args.compile_peers is None else args.compile_peers
    if not compile_peers:
        print("2-GEMM compiled: skipped (pass --compile-peers to time it; default on a GPU only)")
    bandwidth = common.copy_bandwidth_gbs(device)
    gemm_rate = gemm_tflops(device, gemm_dtype(device))
    rows = []
    for case in SWEEPS[args.sweep]:
        row = bench_case(*case, device, repeats, compile_peers)
        row["GB/s"] = row["uint8 bytes"] / row["bf16 ms"] / 1e6
        row["% roofline"] = 100 * row["GB/s"] / bandwidth
        row["% GEMM"] = 100 * row["TFLOP/s"] / gemm_rate
        rows.append(row)
    host = host_us_per_call(device, args.host_calls or (200 if args.sweep != "tiny" else 20))
    meta = {**common.run_meta(device), "copy GB/s": bandwidth, "GEMM dtype": str(gemm_dtype(device)),
            "GEMM TFLOP/s": gemm_rate,
            "host us per call": host, "2-GEMM compiled": "timed" if compile_peers else "skipped",
            "sweep": args.sweep, "repeats": repeats}
    columns = ["batch", "input", "band", "output", "bf16 ms", "bf16 fitted ms", "fitted / default", "f32 ms",
               "f32 in ms", "f32 in bwd ms",
               "aug bf16 ms", "aug f32 ms", "CUDA C++ bf16 ms", "CUDA C++ f32 ms",
               "fft ms", "fft+resize ms", "2-GEMM ms", "2-GEMM compiled ms", *(f"{name} ms" for name in RESIZE_PEERS),
               "speed-up vs fft", "bf16 vs fft", "vs 2-GEMM", "vs 2-GEMM compiled", "aug / plain", "bwd / fwd",
               "vs best resize",
               "GB/s", "% roofline", "TFLOP/s", "% GEMM"]
    print(common.write_results(args.out, "lowfreq_crop", meta, rows, columns,
                               plot=(("band", "output"), "speed-up vs fft", "speed-up vs torch.fft freq_crop")))
    print(f"{gemm_dtype(device)} GEMM {gemm_rate:.3g} TFLOP/s; host µs per eager call (tiny batch, {device.type}):")
    for name, us in host.items():
        print(f"  {name}: {us:.1f}")


if __name__ == "__main__":
    main()
