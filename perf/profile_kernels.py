"""Where the time goes: the kernels of the workloads that miss their GPU targets, profiled.

The benchmarks say how far an op is from its target; this says which kernels make up the gap. Each
workload runs a few warm iterations, then `iterations` under torch.profiler; the table lists its
heaviest kernels (on a GPU: device time per iteration and share of the workload's device time; on a
CPU: self CPU time of each op) and the workload's host time per iteration (wall time of the eager
loop, device synchronised once at the end). Workloads, at the issues' shapes by default:
- local_ffn: the fused LocalFFN block forward + backward, DeiT-S widths, class token + 14×14 grid,
  next to a plain Mlp (fc1 → GELU → fc2) of the same widths, the target's peer (issue 13);
- lowfreq_crop: uint8 224² → band 160, normalised, bf16 out, plain and augmented (issue 12).
Usage: python perf/profile_kernels.py [--sweep deit_small|tiny] [--out DIR]
"""
import json
import os

import torch
import torch.nn.functional as F

import common
import effkernels

SHAPES = {  # batch, grid side, (dim, hidden), image side, band
    "deit_small": dict(batch=256, grid=14, widths=(384, 1536), image=224, band=160),
    "tiny": dict(batch=2, grid=3, widths=(8, 16), image=20, band=12),
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def local_ffn_workloads(shape, device, dtype):
    """{name: step} for the fused LocalFFN block and the plain Mlp, forward + backward."""
    dim, hidden = shape["widths"]
    tokens = 1 + shape["grid"] ** 2

    def param(*size, scale):
        return (torch.randn(*size, device=device) * scale).requires_grad_()

    x = torch.randn(shape["batch"], tokens, dim, device=device, dtype=dtype, requires_grad=True)
    fc1, fc1_bias = param(hidden, dim, scale=dim**-0.5), param(hidden, scale=0.02)
    dw, dw_bias = param(hidden, 1, 3, 3, scale=1 / 3), param(hidden, scale=0.02)
    fc2, fc2_bias = param(dim, hidden, scale=hidden**-0.5), param(dim, scale=0.02)
    grad = torch.randn_like(x)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def fused():
        with autocast:
            y = effkernels.local_ffn(x, shape["grid"], fc1, fc1_bias, dw, dw_bias, fc2, fc2_bias, num_prefix_tokens=1,
                                     pre_act="hardswish", act="hardswish")
        y.backward(grad)

    def mlp():
        with autocast:
            y = F.linear(F.gelu(F.linear(x, fc1, fc1_bias)), fc2, fc2_bias)
        y.backward(grad)

    return {"local_ffn fused block": fused, "local_ffn plain Mlp": mlp}


def lowfreq_workloads(shape, device, dtype):
    """{name: step} for lowfreq_crop, plain and with per-sample boxes and flips."""
    n, side, band = shape["batch"], shape["image"], shape["band"]
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device=device)
    boxes = torch.tensor([[0, 0, side, side]] * n)
    boxes[1::2, 2:] = side * 3 // 4
    flips = torch.arange(n) % 2 == 0
    options = dict(mean=MEAN, std=STD, out_dtype=dtype)

    def plain():
        effkernels.lowfreq_crop(images, band, **options)

    def augmented():
        effkernels.lowfreq_crop_augmented(images, band, boxes=boxes, flip=flips, **options)

    return {"lowfreq_crop plain": plain, "lowfreq_crop augmented": augmented}


def profile(step, device, iterations):
    """(host ms per iteration, [(kernel or op, calls per iteration, ms per iteration)] heaviest first)."""
    host_ms = common.wall_us_per_call(step, device, iterations, warmup=3) / 1e3
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iterations):
            step()
        common.synchronize(device)
    rows = []
    for event in prof.key_averages():
        # self device time marks the kernels on a GPU (CPU-side ops have none); on a CPU, every op's own time.
        micros = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if micros > 0:
            rows.append((event.key, event.count / iterations, micros / iterations / 1e3))
    rows.sort(key=lambda row: -row[2])
    return host_ms, rows


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SHAPES, sweep="deit_small")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--top", type=int, default=8, help="kernels listed per workload")
    args = parser.parse_args(argv)
    device = args.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = SHAPES[args.sweep]
    workloads = {**local_ffn_workloads(shape, device, dtype), **lowfreq_workloads(shape, device, dtype)}
    unit = "device" if device.type == "cuda" else "CPU self"
    lines = [f"profile_kernels: {common.device_name(device)}, torch {torch.__version__}, sweep {args.sweep}, "
             f"{dtype}, {args.iterations} iterations", ""]
    results = {}
    for name, step in workloads.items():
        host_ms, rows = profile(step, device, args.iterations)
        total = sum(ms for _, _, ms in rows)
        results[name] = {"host ms": host_ms, f"{unit} ms": total,
                         "kernels": [{"name": k, "calls": c, "ms": ms} for k, c, ms in rows]}
        lines += [f"### {name}: {total:.3f} ms {unit} time, {host_ms:.3f} ms wall per iteration", "",
                  f"| kernel | calls | ms | % of {unit} time |", "|---|---|---|---|"]
        lines += [f"| {k[:90]} | {c:g} | {ms:.4f} | {100 * ms / total:.1f} |" for k, c, ms in rows[: args.top]]
        lines.append("")
        print(f"{name}: {total:.3f} ms {unit}, {host_ms:.3f} ms wall", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "profile_kernels.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(args.out, "profile_kernels.json"), "w") as f:
        json.dump({"meta": common.run_meta(device), "workloads": results}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
