"""Attention at a curriculum's token counts: which SDPA backend a small training step should run.

Issue 15 names attention at 37 tokens (DeiT-S at 96 px) as a suspect for a small step costing more
than its FLOP share. The FlashAttention kernel tiles queries by 128 rows: at 37 tokens most of each
tile is padding, and the work is many short programs, one per (image, head). Here the attention of
one DeiT block (timm's layout: q, k and v are views of the qkv projection's output) runs forward and
backward, bf16 on a GPU (float32 on the CPU), through every SDPA backend PyTorch has for it:
- "default": what scaled_dot_product_attention picks by itself (its name in the "default" column);
- flash, efficient (memory-efficient), cudnn, math: that backend alone (sdpa_kernel), "–" where it
  cannot run these inputs here (the reason in the results' meta);
- "math compiled": the math backend under torch.compile (Inductor's batched GEMMs around one fused
  softmax kernel).
On a GPU each variant is timed as a CUDA graph replay, as the training script runs its steps, so
the device time is measured, not the host's launches. FLOPs: 12·B·heads·N²·head_dim per block
(forward QKᵀ and PV, backward four products of the same size). "per step ms" is the default's
time for all `depth` blocks of a training step; "time / FLOP" is (its time / its time at the
largest size) / (its FLOPs / the FLOPs at the largest size): above 1 where attention costs more at
this size than its FLOPs say. "default / best" above 1 says a step at that size would gain from
naming the best backend.
Usage: python perf/bench_attention.py [--sweep deit_small|small|full|tiny] [--out DIR]
"""
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WIDTHS = {"tiny": (3, 64), "small": (6, 64), "base": (12, 64)}  # DeiT: heads, head dim (depth 12)
DEPTH = 12
PATCH = 16
SIZES = (96, 160, 192, 224)  # EfficientTrain++'s DeiT sizes
SWEEPS = {  # (width, batch, sizes); deit_small: GPU-FACTS.md's whole-step shapes (DeiT-S, batch 256)
    "tiny": [("tiny", 2, (32, 64))],
    "small": [("small", 32, SIZES)],
    "deit_small": [("small", 256, SIZES)],
    "full": [(width, 256, SIZES) for width in WIDTHS],
}
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def attention(qkv: torch.Tensor, heads: int, backend=None) -> torch.Tensor:
    """timm's Attention core on its qkv projection's output (B, N, 3·heads·head_dim): SDPA through
    `backend` (None: PyTorch's choice), the heads merged back to (B, N, heads·head_dim)."""
    batch, tokens, width = qkv.shape
    q, k, v = qkv.view(batch, tokens, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    if backend is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(batch, tokens, width // 3)


def forward_backward(fn, qkv: torch.Tensor, grad: torch.Tensor):
    """One forward and backward of fn on qkv: the gradient returned, not accumulated (no extra add)."""
    return lambda: torch.autograd.grad(fn(qkv), qkv, grad)


def default_backend(qkv: torch.Tensor, heads: int) -> str:
    """The backend scaled_dot_product_attention picks by itself for these inputs."""
    batch, tokens, width = qkv.shape
    q, k, v = qkv.view(batch, tokens, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return SDPBackend(torch._fused_sdp_choice(q, k, v)).name.lower()


def variants(qkv: torch.Tensor, heads: int, failures: dict) -> dict:
    """{name: fwd+bwd callable} of the variants that run on these inputs; the others go to failures."""
    grad = torch.randn(qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3, dtype=qkv.dtype, device=qkv.device)
    found = {"default": forward_backward(lambda t: attention(t, heads), qkv, grad)}
    for name, backend in BACKENDS.items():
        found[name] = forward_backward(lambda t, backend=backend: attention(t, heads, backend), qkv, grad)
    compiled = torch.compile(lambda t: attention(t, heads, SDPBackend.MATH), fullgraph=True)
    found["math compiled"] = forward_backward(compiled, qkv, grad)
    runnable = {}
    for name, fn in found.items():
        try:
            fn()
        except RuntimeError as error:  # e.g. "No viable backend": this backend cannot take these inputs
            failures[name] = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            continue
        runnable[name] = common.graphed(fn, qkv.device) or fn
    return runnable


def attention_flops(batch: int, heads: int, head_dim: int, tokens: int) -> int:
    return 12 * batch * heads * tokens**2 * head_dim


def measure(width: str, batch: int, size: int, device: torch.device, dtype: torch.dtype, repeats: int,
            failures: dict) -> dict:
    heads, head_dim = WIDTHS[width]
    tokens = (size // PATCH) ** 2 + 1  # the grid and the class token
    qkv = torch.randn(batch, tokens, 3 * heads * head_dim, dtype=dtype, device=device, requires_grad=True)
    found = variants(qkv, heads, failures.setdefault(f"{width} {size}", {}))
    ms = common.interleaved_median_ms(found, device, repeats=repeats)
    best = min(ms, key=ms.get)
    row = {"model": f"deit_{width}", "batch": batch, "size": size, "tokens": tokens,
           "default": default_backend(qkv, heads)}
    row.update({f"{name} ms": ms.get(name) for name in ("default", *BACKENDS, "math compiled")})
    flops = attention_flops(batch, heads, head_dim, tokens)
    row.update({"best": best, "default / best": ms["default"] / ms[best],
                "per step ms": DEPTH * ms["default"], "best per step ms": DEPTH * ms[best],
                "TFLOP/s": flops / ms["default"] / 1e9, "flops": flops})
    return row


def add_size_ratios(rows: list) -> None:
    """time / FLOP against each model's largest size (see the module docstring)."""
    for model in {row["model"] for row in rows}:
        same = [row for row in rows if row["model"] == model]
        largest = max(same, key=lambda row: row["size"])
        for row in same:
            row["time / FLOP"] = (row["default ms"] / largest["default ms"]) / (row["flops"] / largest["flops"])


def main(argv=None):
    args = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="deit_small", repeats=(20, 3),
                                  repeats_of="timed samples per variant").parse_args(argv)
    device, repeats = args.device, args.repeats
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows, failures = [], {}
    for width, batch, sizes in SWEEPS[args.sweep]:
        for size in sizes:
            rows.append(measure(width, batch, size, device, dtype, repeats, failures))
            print(", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in rows[-1].items()), flush=True)
    add_size_ratios(rows)
    meta = {**common.run_meta(device), "dtype": str(dtype), "not run": failures}
    columns = ["model", "batch", "size", "tokens", "default", "default ms", *(f"{name} ms" for name in BACKENDS),
               "math compiled ms", "best", "default / best", "per step ms", "best per step ms", "TFLOP/s",
               "time / FLOP"]
    print(common.write_results(args.out, "attention", meta, rows, columns,
                               plot=(("model", "size"), "default / best", "default / best backend")))
    for case, reasons in failures.items():
        for name, reason in reasons.items():
            print(f"not run: {case} {name}: {reason}")


if __name__ == "__main__":
    main()
