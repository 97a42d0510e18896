"""Public functions of the effkernels ops: argument checks, fake kernels, autograd, backend choice.

The op schemas live in csrc/ops.cpp; the CPU kernels in csrc/cpu; the GPU kernels in
effkernels/triton (default) and csrc/cuda (`EFFKERNELS_BACKEND=cuda`). The spec of every op is
effkernels/reference.py.
"""
import functools
import numbers
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake

from . import _C  # noqa: F401  (loads the schemas and the C++ kernels)
from . import operators
from .checks import as_python, check_tensor, integer

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INPUT_DTYPES = (torch.uint8,) + FLOAT_DTYPES
GPU_BACKENDS = ("triton", "cuda")


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel accumulates in for inputs of `dtype`: float64 stays, all else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# separable_map: the kernel every image-plane transform runs on
# --------------------------------------------------------------------------------------------


def separable_map(x, rows, cols, scale=None, shift=None, out_dtype=None, rank_one=None):
    """`out[n, c] = (Σ_k rows[n, k] @ x[n, c] @ cols[n, k]ᵀ + R[n, c]) * scale[c] + shift[c]`, cast.

    A linear map of every image plane that is separable along its two axes, followed by a
    per-channel affine: one kernel launch for any chain of crops, resizes, flips, low-pass filters
    and normalisation (see effkernels.operators). x: (N, C, H, W), uint8 (raw 0..255 values) or
    floating; rows: (1 or N, K, OH, H); cols: (1 or N, K, OW, W); scale, shift: (C,) or None.
    rank_one: None or (row_u, row_v, col_u, col_v) of shapes (1 or N, OH / H / OW / W), an extra
    term given by its factors, `R[n, c] = (row_v[n] · x[n, c] col_v[n]) * outer(row_u[n], col_u[n])`,
    i.e. one more K-term with rows = outer(row_u, row_v) and cols = outer(col_u, col_v), that costs
    O(H·W) per plane instead of a GEMM chain (lowfreq_crop's imaginary part is such a term).
    Operators, scale and shift are float64 for float64 x, else float32. out_dtype defaults to
    x's dtype, float32 for uint8 x. Differentiable in every tensor argument. On the GPU the Triton
    kernel picks its tensor-core precision from x's dtype and out_dtype (see
    effkernels.triton.separable_map.precision_parts): float32 accuracy for float32 output, bf16
    operators (one pass per GEMM) for bf16 output from uint8 x, IEEE float64 for float64.
    """
    check_separable_map(x, rows, cols, scale, shift, out_dtype, rank_one)
    factors = (None,) * 4 if rank_one is None else tuple(rank_one)
    return torch.ops.effkernels.separable_map(x, rows, cols, scale, shift, out_dtype, *factors)


def check_image_batch(x):
    """x must be an (N, C, H, W) tensor of a dtype the image kernels read."""
    check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"x must be uint8, float16, bfloat16, float32 or float64, got {x.dtype}")


def check_separable_map(x, rows, cols, scale, shift, out_dtype, rank_one=None):
    """Raise TypeError/ValueError naming the argument when separable_map cannot run on these."""
    check_image_batch(x)
    for name, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
    acc = accumulate_dtype(x.dtype)
    n, c, h, w = x.shape
    for name, ops, size, axis in (("rows", rows, h, "H"), ("cols", cols, w, "W")):
        if ops.dim() != 4:
            raise ValueError(f"{name} must have shape (1 or N, K, OUT, {size}), got {tuple(ops.shape)}")
        if ops.dtype != acc:
            raise TypeError(f"{name} must be {acc} for x of dtype {x.dtype}, got {ops.dtype}")
        if ops.shape[0] not in (1, n):
            raise ValueError(f"{name} must hold 1 or N={n} operators, got {ops.shape[0]}")
        if ops.shape[3] != size:
            raise ValueError(f"{name} must have {axis}={size} columns, got {ops.shape[3]}")
        if ops.device != x.device:
            raise ValueError(f"{name} must be on {x.device} like x, got {ops.device}")
    if rows.shape[1] != cols.shape[1] or rows.shape[1] < 1:
        raise ValueError(f"rows and cols must have the same K >= 1, got {rows.shape[1]} and {cols.shape[1]}")
    for name, affine in (("scale", scale), ("shift", shift)):
        if affine is None:
            continue
        if not isinstance(affine, torch.Tensor):
            raise TypeError(f"{name} must be a Tensor or None, got {type(affine).__name__}")
        if affine.shape != (c,):
            raise ValueError(f"{name} must have shape (C,) = ({c},), got {tuple(affine.shape)}")
        if affine.dtype != acc:
            raise TypeError(f"{name} must be {acc} for x of dtype {x.dtype}, got {affine.dtype}")
        if affine.device != x.device:
            raise ValueError(f"{name} must be on {x.device} like x, got {affine.device}")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be a floating dtype, got {out_dtype}")
    if rank_one is not None:
        _check_rank_one(x, rank_one, rows.shape[2], cols.shape[2], acc)


def _check_rank_one(x, rank_one, oh, ow, acc):
    names = ("row_u", "row_v", "col_u", "col_v")
    if not isinstance(rank_one, Sequence) or len(rank_one) != 4 or not all(isinstance(f, torch.Tensor) for f in rank_one):
        raise TypeError(f"rank_one must be None or four Tensors ({', '.join(names)}), got {rank_one!r}")
    n, _, h, w = x.shape
    for name, factor, length in zip(names, rank_one, (oh, h, ow, w)):
        if factor.dim() != 2 or factor.shape[0] not in (1, n) or factor.shape[1] != length:
            raise ValueError(f"{name} must have shape (1 or N={n}, {length}), got {tuple(factor.shape)}")
        if factor.dtype != acc:
            raise TypeError(f"{name} must be {acc} for x of dtype {x.dtype}, got {factor.dtype}")
        if factor.device != x.device:
            raise ValueError(f"{name} must be on {x.device} like x, got {factor.device}")


def _rank_one_args(row_u, row_v, col_u, col_v):
    """The op's four optional factor arguments as separable_map's `rank_one` (None or a tuple)."""
    factors = (row_u, row_v, col_u, col_v)
    if all(f is None for f in factors):
        return None
    if any(f is None for f in factors):
        raise ValueError("row_u, row_v, col_u and col_v must be given all together or not at all")
    return factors


def _separable_map_out_dtype(x, rows, out_dtype):
    if out_dtype is not None:
        return out_dtype
    return x.dtype if x.dtype.is_floating_point else rows.dtype


@torch.library.register_fake("effkernels::separable_map")
def _separable_map_fake(x, rows, cols, scale=None, shift=None, out_dtype=None, row_u=None, row_v=None, col_u=None,
                        col_v=None):
    check_separable_map(x, rows, cols, scale, shift, out_dtype, _rank_one_args(row_u, row_v, col_u, col_v))
    n, c = x.shape[:2]
    return x.new_empty((n, c, rows.shape[2], cols.shape[2]), dtype=_separable_map_out_dtype(x, rows, out_dtype))


def _separable_map_setup_context(ctx, inputs, output):
    x, rows, cols, scale, shift, out_dtype, *factors = inputs
    # ctx.needs_input_grad does not line up with optional arguments here; ask the tensors.
    ctx.needs_grad = [t is not None and t.requires_grad for t in (x, rows, cols, scale, shift, *factors)]
    needs_x_data = any(ctx.needs_grad[1:4]) or any(ctx.needs_grad[5:])  # these grads read x
    ctx.save_for_backward(x if needs_x_data else None, rows, cols, scale, *factors)
    ctx.x_dtype = x.dtype


def _separable_map_backward(ctx, grad):
    x, rows, cols, scale, *factors = ctx.saved_tensors
    need_x, need_rows, need_cols, need_scale, need_shift, *need_factors = ctx.needs_grad
    rank_one = _rank_one_args(*factors)
    grad_x = grad_rows = grad_cols = grad_scale = grad_shift = None
    grad_factors = [None] * 4
    grad = grad.to(rows.dtype) if accumulate_dtype(grad.dtype) != rows.dtype else grad
    if need_x:
        # The map is linear in x: its adjoint is the same kernel with transposed operators (the
        # rank-one term's transpose swaps each pair of factors).
        adjoint = (None,) * 4 if rank_one is None else (factors[1], factors[0], factors[3], factors[2])
        grad_x = torch.ops.effkernels.separable_map(
            grad, rows.transpose(-1, -2), cols.transpose(-1, -2), scale, None, ctx.x_dtype, *adjoint
        )
    if need_shift:
        grad_shift = grad.sum((0, 2, 3), dtype=rows.dtype)
    if need_scale:
        unscaled = torch.ops.effkernels.separable_map(x, rows, cols, None, None, rows.dtype, *factors)
        grad_scale = (grad.to(rows.dtype) * unscaled).sum((0, 2, 3))
    if need_rows or need_cols or any(need_factors):
        n = x.shape[0]
        x_acc = x.to(rows.dtype)
        grad_pre = grad.to(rows.dtype)
        if scale is not None:
            grad_pre = grad_pre * scale[:, None, None]

        def reduce_to(value, like):  # a shared (batch 1) operator gets the sum over the batch
            return value.sum(0, keepdim=True) if like.shape[0] == 1 else value

        if need_rows:
            grad_rows = reduce_to(torch.einsum("ncov,nkvw,nchw->nkoh", grad_pre, cols.expand(n, -1, -1, -1), x_acc), rows)
        if need_cols:
            grad_cols = reduce_to(torch.einsum("ncov,nkoh,nchw->nkvw", grad_pre, rows.expand(n, -1, -1, -1), x_acc), cols)
        if any(need_factors):
            row_u, row_v, col_u, col_v = (f.expand(n, -1) for f in factors)
            weight = torch.einsum("nh,nchw,nw->nc", row_v, x_acc, col_v)  # the term is weight * row_u col_uᵀ
            grad_weight = torch.einsum("ncov,no,nv->nc", grad_pre, row_u, col_u)
            candidates = (
                lambda: torch.einsum("ncov,nc,nv->no", grad_pre, weight, col_u),
                lambda: torch.einsum("nc,nchw,nw->nh", grad_weight, x_acc, col_v),
                lambda: torch.einsum("ncov,nc,no->nv", grad_pre, weight, row_u),
                lambda: torch.einsum("nc,nchw,nh->nw", grad_weight, x_acc, row_v),
            )
            grad_factors = [reduce_to(make(), f) if need else None for need, make, f in zip(need_factors, candidates, factors)]
    return grad_x, grad_rows, grad_cols, grad_scale, grad_shift, None, *grad_factors


torch.library.register_autograd(
    "effkernels::separable_map", _separable_map_backward, setup_context=_separable_map_setup_context
)


# The GPU kernel family of each op when EFFKERNELS_BACKEND is unset: the one a GPU benchmark showed
# fastest (perf/bench_lowfreq_crop.py, perf/bench_local_ffn.py time both in one run). Triton for both
# since the H100 run of 2026-11-23; the CUDA C++ dwconv_act stencil (2026-12-07) is not measured yet.
DEFAULT_GPU_BACKENDS = {"separable_map": "triton", "dwconv_act": "triton"}


def gpu_backend(op: str) -> str:
    """The GPU kernel family `op` ("separable_map" or "dwconv_act") runs: `EFFKERNELS_BACKEND`
    (triton or cuda) for every op where it is set, else the op's measured default (Triton where
    that default is CUDA C++ and effkernels was built without it)."""
    built = hasattr(torch.ops.effkernels, "separable_map_cuda")
    backend = os.environ.get("EFFKERNELS_BACKEND")
    if backend is None:
        return DEFAULT_GPU_BACKENDS[op] if built else "triton"
    if backend not in GPU_BACKENDS:
        raise ValueError(f"EFFKERNELS_BACKEND must be one of {GPU_BACKENDS}, got {backend!r}")
    if backend == "cuda" and not built:
        raise RuntimeError("EFFKERNELS_BACKEND=cuda but effkernels was built without its CUDA C++ kernels")
    return backend


@torch.library.register_kernel("effkernels::separable_map", "cuda")
def _separable_map_gpu(x, rows, cols, scale=None, shift=None, out_dtype=None, row_u=None, row_v=None, col_u=None,
                       col_v=None):
    rank_one = _rank_one_args(row_u, row_v, col_u, col_v)
    # Direct torch.ops calls reach this kernel unchecked, and the Triton kernel has no checks of its own.
    check_separable_map(x, rows, cols, scale, shift, out_dtype, rank_one)
    return _gpu_separable_map_launch(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one)(x)


def _gpu_separable_map_launch(x_shape, x_dtype, rows, cols, scale, shift, out_dtype, rank_one, support=None):
    """`launch(x) -> out` for CUDA x of this shape and dtype, arguments already checked (support: see
    `boxed_separable_map`; the Triton kernel's hint, which the CUDA C++ kernel does without).

    The Triton kernel by default. float64, and EFFKERNELS_BACKEND=cuda, go to the CUDA C++ kernel
    (its float64 path is the measured one on the GPU); that kernel knows no rank-one term, so the
    term becomes one more dense K-term there. The Triton kernel has an IEEE float64 path too (run
    under the interpreter, and on a GPU when effkernels was built without CUDA C++); the CUDA C++
    kernel can go once a GPU run shows that path correct and no slower.
    """
    if _gpu_separable_map_kernel(x_dtype) == "cuda":
        if rank_one is not None:
            rows, cols = _with_dense_term(rows, rank_one[0], rank_one[1]), _with_dense_term(cols, rank_one[2], rank_one[3])
        return lambda x: torch.ops.effkernels.separable_map_cuda(x, rows, cols, scale, shift, out_dtype)
    from .triton.separable_map import prepare_separable_map  # triton is needed on GPU machines only

    return prepare_separable_map(x_shape, x_dtype, rows, cols, scale, shift, out_dtype, rank_one, support=support)


def boxed_separable_map(x, rows, cols, out_dtype, support):
    """`separable_map(x, rows, cols, out_dtype=out_dtype)` of per-sample operators that are zero
    outside each sample's input box: support, (N, 4) int32 on x's device, (row start, row end,
    column start, column end) per sample. In an eager CUDA call that nothing traces, the Triton
    kernel skips the blocks of x outside the boxes (a RandomResizedCrop box covers about half of
    a padded batch's plane); elsewhere the op maps whole planes, with the same result. The caller
    vouches for the boxes: checking their values would read them back from the device."""
    check_separable_map(x, rows, cols, None, None, out_dtype)
    if not isinstance(support, torch.Tensor) or support.dtype != torch.int32:
        raise TypeError(f"support must be an int32 Tensor, got {getattr(support, 'dtype', type(support).__name__)}")
    if support.shape != (x.shape[0], 4) or support.device != x.device:
        raise ValueError(f"support must have shape (N, 4) = ({x.shape[0]}, 4) on {x.device} like x, got "
                         f"{tuple(support.shape)} on {support.device}")
    if x.device.type == "cuda" and _untraced_without_grad(x):
        return _gpu_separable_map_launch(x.shape, x.dtype, rows, cols, None, None, out_dtype, None, support)(x)
    return torch.ops.effkernels.separable_map(x, rows, cols, None, None, out_dtype, None, None, None, None)


def _gpu_separable_map_kernel(x_dtype) -> str:
    """Which kernel `_gpu_separable_map_launch` prepares for x of this dtype: "triton" or "cuda"."""
    if x_dtype == torch.float64 and hasattr(torch.ops.effkernels, "separable_map_cuda"):
        return "cuda"
    return gpu_backend("separable_map")


def _with_dense_term(operators_, u, v):
    """operators (1 or N, K, O, I) with outer(u, v) appended as term K (batch broadcast to the largest)."""
    batch = max(operators_.shape[0], u.shape[0], v.shape[0])
    term = (u[:, :, None] * v[:, None, :]).expand(batch, -1, -1)
    return torch.cat([operators_.expand(batch, -1, -1, -1), term[:, None]], 1)


# --------------------------------------------------------------------------------------------
# lowfreq_crop: EfficientTrain's low-frequency crop (+ resize + normalise) as one separable_map
# --------------------------------------------------------------------------------------------


def lowfreq_crop(x, size, out_size=None, *, mean=None, std=None, out_dtype=None):
    """Keep the centred `size` block of x's spectrum (EfficientTrain), then resize and normalise.

    x: (N, C, H, W), uint8 (scaled to [0, 1] first) or floating, on CPU or CUDA. size: int or
    (bh, bw), the kept bandwidth, 1 <= bh <= H, 1 <= bw <= W; the result has shape (N, C, bh, bw)
    and equals `real(ifft2(centred block of fft2(x))) * bh * bw / (H * W)`. out_size: (oh, ow) to
    resize that with antialiased bilinear interpolation. mean, std: per-channel sequences,
    `(y - mean) / std` last. out_dtype: float32 for uint8 x, else x's dtype, by default.
    Linear in x, so differentiable for floating x; one kernel launch on the GPU, a K = 1
    separable_map plus the rank-one imaginary term when both bands are even.

    Host path: an eager call that autograd, torch.compile, dispatch/function modes and functorch
    transforms do not watch is served from a plan cached per (shape, dtype, device, arguments, CUDA
    stream: the operators a plan prepares are written on its stream, and only work queued there
    after them is sure to see them): the arguments were checked and the operators, normalisation
    constants and launch metadata built on the plan's first call, so a repeat call only allocates
    the output and launches the kernel (the raw Triton launch on CUDA, the C++ kernel through the
    dispatcher on CPU). Such calls do not show up as effkernels::lowfreq_crop in profiler traces;
    everything else goes through the op.
    """
    check_tensor("x", x)
    if _untraced_without_grad(x):
        key = _plan_key(x, size, out_size, mean, std, out_dtype)
        plan = _LOWFREQ_PLANS.get(key) if key is not None else None
        if plan is None:
            plan = _lowfreq_plan(key, x, size, out_size, mean, std, out_dtype)
        return plan(x)
    return torch.ops.effkernels.lowfreq_crop(
        x,
        pair(size, "size"),
        None if out_size is None else pair(out_size, "out_size"),
        _channel_values(mean, "mean"),
        _channel_values(std, "std"),
        out_dtype,
    )


_LOWFREQ_PLANS: dict = {}
_MAX_PLANS = 256


def _untraced_without_grad(x) -> bool:
    """Whether a call may bypass the op: a plain tensor that no autograd, tracer or mode watches."""
    return not (x.requires_grad and torch.is_grad_enabled()) and untraced(x)


def untraced(x) -> bool:
    """Whether x is a plain tensor that no tracer, mode or transform watches (autograd may): an
    eager call on it may run the kernels without the op dispatcher. The profiler sees what runs:
    the kernels (by their own names on a GPU), not the op."""
    return (
        type(x) is torch.Tensor
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
        and not torch._C._are_functorch_transforms_active()
    )


def _plan_key(x, *args):
    """A hashable key of x's description, its current CUDA stream where it has one (a plan's
    operators are written on the stream that prepared it) and the arguments; None for argument
    types not cached."""
    parts = [x.shape, x.dtype, x.device, os.environ.get("EFFKERNELS_BACKEND")]
    if x.device.type == "cuda":
        parts.append(torch.cuda.current_stream(x.device).cuda_stream)
    for value in args:
        kind = type(value)
        if value is None or kind is int or kind is torch.dtype:
            parts.append(value)
        elif kind is list or kind is tuple:
            parts.append(tuple(value))
        elif isinstance(value, np.integer):  # equal to, and hashed as, the Python int: the same plan
            parts.append(int(value))
        elif kind is np.ndarray:
            parts.append(tuple(value.tolist()))
        else:
            return None
    return tuple(parts)


def _lowfreq_plan(key, x, size, out_size, mean, std, out_dtype):
    """Check the arguments once, build operators and launch, cache the result under key."""
    size = pair(size, "size")
    out_size = size if out_size is None else pair(out_size, "out_size")
    mean, std = _channel_values(mean, "mean"), _channel_values(std, "std")
    check_lowfreq_crop(x, size, out_size, mean, std, out_dtype)
    acc = accumulate_dtype(x.dtype)
    rows, cols, *factors = operators.lowfreq_crop_operators_cached(
        tuple(x.shape[-2:]), tuple(size), tuple(out_size), acc, x.device
    )
    rank_one = tuple(factors) if operators.has_rank_one_term(size) else None
    scale, shift = normalisation_affine(x, mean, std, acc)
    if x.device.type == "cuda":
        plan = _gpu_separable_map_launch(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one)
    else:
        op, factor_args = torch.ops.effkernels.separable_map.default, rank_one or (None,) * 4

        def plan(images):
            return op(images, rows, cols, scale, shift, out_dtype, *factor_args)

    if key is not None:
        if len(_LOWFREQ_PLANS) >= _MAX_PLANS:
            _LOWFREQ_PLANS.clear()
        _LOWFREQ_PLANS[key] = plan
    return plan


def pair(value, name: str) -> list:
    """`value` as a two-element list of ints: an integer (of any kind, see checks.integer) is used
    for both axes; a pair may be a sequence, array or tensor of two integers."""
    kind = type(value)
    if (kind is tuple or kind is list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return list(value)  # the common case, checked first: this runs on every eager op call
    single = integer(value)
    if _is_int(single):
        return [single, single]
    items = as_python(value)
    if isinstance(items, Sequence) and len(items) == 2:
        both = [integer(item) for item in items]
        if all(_is_int(item) for item in both):
            return both
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def _channel_values(values, name: str):
    """Per-channel numbers (a sequence, array or tensor of reals) as a list of floats."""
    if values is None:
        return None
    values = as_python(values)
    if not isinstance(values, Sequence) or not all(isinstance(v, numbers.Real) for v in values):
        raise TypeError(f"{name} must be a sequence of numbers, one per channel, got {values!r}")
    return [float(v) for v in values]


def check_lowfreq_crop(x, size, out_size, mean, std, out_dtype):
    """Raise TypeError/ValueError naming the argument when lowfreq_crop cannot run on these."""
    check_image_batch(x)
    height, width = x.shape[-2:]
    bh, bw = size
    if not (1 <= bh <= height and 1 <= bw <= width):
        raise ValueError(f"size must lie in [1, input size] = [1, ({height}, {width})], got ({bh}, {bw})")
    if out_size is not None and not (out_size[0] >= 1 and out_size[1] >= 1):
        raise ValueError(f"out_size must be positive, got {tuple(out_size)}")
    channels = x.shape[1]
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise ValueError(f"{name} must have one value per channel (C={channels}), got {len(values)}")
    if std is not None and any(s == 0 for s in std):
        raise ValueError(f"std must be non-zero, got {std}")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be a floating dtype, got {out_dtype}")


def normalisation_affine(x, mean, std, dtype):
    """(scale, shift) tensors that map x's values to `(x / 255 if uint8 - mean) / std`, or None.

    In eager mode they are cached per device: no host-to-device copy per call, which would cost a
    launch on every small step and cannot be captured in a CUDA graph. While traced (torch.compile,
    FlopCounterMode, ...) they are made afresh, so no traced tensor is ever cached.
    """
    input_scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    if mean is None and std is None and input_scale == 1.0:
        return None, None
    std = tuple(std) if std is not None else (1.0,) * x.shape[1]
    mean = None if mean is None else tuple(mean)
    traced = torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0 or is_fake(x)
    make = _affine_tensors if traced else _affine_tensors_cached
    return make(input_scale, mean, std, dtype, x.device)


def _affine_tensors(input_scale, mean, std, dtype, device):
    scale = torch.tensor([input_scale / s for s in std], dtype=dtype, device=device)
    shift = None if mean is None else torch.tensor([-m / s for m, s in zip(mean, std)], dtype=dtype, device=device)
    return scale, shift


@functools.lru_cache(maxsize=64)
def _affine_tensors_cached(input_scale, mean, std, dtype, device):
    with torch.inference_mode(False):  # a first call under inference_mode must not cache inference tensors
        return _affine_tensors(input_scale, mean, std, dtype, device)


@torch.library.impl("effkernels::lowfreq_crop", "CompositeImplicitAutograd")
def _lowfreq_crop_composite(x, size, out_size=None, mean=None, std=None, out_dtype=None):
    check_lowfreq_crop(x, size, out_size, mean, std, out_dtype)
    acc = accumulate_dtype(x.dtype)
    rows, cols, *factors = torch.ops.effkernels.lowfreq_crop_operators(
        list(x.shape[-2:]), size, size if out_size is None else out_size, dtype=acc, device=x.device
    )
    factors = factors if operators.has_rank_one_term(size) else (None,) * 4
    scale, shift = normalisation_affine(x, mean, std, acc)
    return torch.ops.effkernels.separable_map(x, rows, cols, scale, shift, out_dtype, *factors)


@torch.library.impl("effkernels::lowfreq_crop_operators", "CompositeExplicitAutograd")
def _lowfreq_crop_operators(in_size, size, out_size, *, dtype, device):
    cached = operators.lowfreq_crop_operators_cached(tuple(in_size), tuple(size), tuple(out_size), dtype, torch.device(device))
    # Op outputs must be fresh tensors: a compiled graph may reuse an output's memory.
    return tuple(t.clone() for t in cached)


@torch.library.register_fake("effkernels::lowfreq_crop_operators")
def _lowfreq_crop_operators_fake(in_size, size, out_size, *, dtype, device):
    (h, w), (oh, ow) = in_size, out_size
    return (
        torch.empty((1, 1, oh, h), dtype=dtype, device=device),
        torch.empty((1, 1, ow, w), dtype=dtype, device=device),
        *(torch.empty((1, length), dtype=dtype, device=device) for length in (oh, h, ow, w)),
    )


def lowfreq_crop_augmented(x, size, out_size=None, *, boxes=None, flip=None, mean=None, std=None, out_dtype=None):
    """`lowfreq_crop` after a per-sample crop box and horizontal flip, still one kernel launch.

    Per sample n the pipeline is torchvision's RandomResizedCrop then RandomHorizontalFlip, then
    the low-frequency crop: the box `boxes[n] = (top, left, height, width)` (input pixels) is
    resized back to x's (H, W) with antialiased bilinear interpolation, mirrored when `flip[n]`,
    low-passed to `size` and resized to `out_size`. All of it is folded into per-sample operator
    matrices (the rank-one term's input-side factors become per-sample vectors). Pass boxes and
    flip as CPU tensors: their values are checked on the host.

    On the GPU one Triton launch builds the per-sample operators (effkernels.triton.
    augmented_operators) from the boxes, copied to the device in one non-blocking transfer, and
    one separable_map launch applies them. An eager call that nothing traces or differentiates
    is served from a plan cached per (shape, dtype, device, arguments, CUDA stream), as
    lowfreq_crop's: the arguments other than boxes and flip were checked when it was made, and it
    holds the launches and the operator buffers that each call rewrites (stream-ordered, hence the
    stream in the key). With autograd on, the same kernel builds fresh operators for the
    separable_map op (its backward saves them). Elsewhere (CPU, torch.compile, dispatch modes,
    functorch) the operators are composed with torch ops, traceably.
    """
    check_tensor("x", x)
    if _untraced_without_grad(x) and x.device.type in _TRITON_OPERATOR_DEVICES:
        key = _plan_key(x, size, out_size, mean, std, out_dtype)
        plan = _AUGMENTED_PLANS.get(key) if key is not None else None
        if plan is None:
            plan = _augmented_plan(key, x, size, out_size, mean, std, out_dtype)
        return plan(x, boxes, flip)
    size = pair(size, "size")
    out_size = size if out_size is None else pair(out_size, "out_size")
    mean, std = _channel_values(mean, "mean"), _channel_values(std, "std")
    check_lowfreq_crop(x, size, out_size, mean, std, out_dtype)
    n, _, height, width = x.shape
    boxes, flip = _check_boxes_and_flip(boxes, flip, n, height, width)
    acc = accumulate_dtype(x.dtype)
    if x.device.type in _TRITON_OPERATOR_DEVICES and _untraced_with_grad(x):
        rows, cols, factors = _augmented_operators_triton(x, size, out_size, boxes, flip, acc)
    else:
        rows, cols, factors = augmented_operators_torch(x, size, out_size, boxes, flip, acc)
    scale, shift = normalisation_affine(x, mean, std, acc)
    return torch.ops.effkernels.separable_map(x, rows, cols, scale, shift, out_dtype, *factors)


_TRITON_OPERATOR_DEVICES = ("cuda",)  # device types whose operators the Triton kernel builds (tests add "cpu")
_AUGMENTED_PLANS: dict = {}


def _untraced_with_grad(x) -> bool:
    """Whether autograd watches x but no tracer, mode or transform does: real tensors, so Triton
    kernels may build the operators that the (differentiable) separable_map op then reads."""
    return x.requires_grad and torch.is_grad_enabled() and _untraced_without_grad(x.detach())


def _augmented_plan(key, x, size, out_size, mean, std, out_dtype):
    """Check the arguments once, bind operator buffers and launches, cache the plan under key.

    The plan `(images, boxes, flip) -> out` checks and packs boxes and flip on the host, copies
    them to the device (non-blocking, from pinned memory), rebuilds the operators in its buffers
    with one Triton launch and applies them with one separable_map launch.
    """
    from .triton.augmented_operators import prepare_augmented_operators  # triton is needed on GPU machines only

    size = pair(size, "size")
    out_size = size if out_size is None else pair(out_size, "out_size")
    mean, std = _channel_values(mean, "mean"), _channel_values(std, "std")
    check_lowfreq_crop(x, size, out_size, mean, std, out_dtype)
    n, _, height, width = x.shape
    acc = accumulate_dtype(x.dtype)
    # The Triton launch reads the operator tensors it was prepared with at each launch; the CUDA C++
    # route derives new tensors from them while preparing.
    binds_operators = _gpu_separable_map_kernel(x.dtype) == "triton"
    operator_dtype = _augmented_operator_dtype(x.dtype, out_dtype, acc) if binds_operators else acc
    rows, cols, row_v, col_v = _augmented_operator_buffers(n, height, width, size, out_size, operator_dtype, acc, x.device)
    row_lowfreq, col_lowfreq = operators.lowfreq_crop_axes_with_factor_rows_cached(
        (height, width), tuple(size), tuple(out_size), acc, x.device
    )
    build = prepare_augmented_operators(row_lowfreq, col_lowfreq, rows, cols, row_v, col_v)
    rank_one = _augmented_rank_one(x, size, out_size, acc, row_v, col_v)
    scale, shift = normalisation_affine(x, mean, std, acc)
    launch_args = (x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one)
    if binds_operators:  # the launch reads the buffers as they are when it runs: prepare it once
        launch = _gpu_separable_map_launch(*launch_args)
    else:  # the CUDA C++ route derives tensors from the operators while preparing: prepare per call
        def launch(images):
            return _gpu_separable_map_launch(*launch_args)(images)

    pin = x.device.type == "cuda"

    def plan(images, boxes, flip):
        build(_packed_boxes(boxes, flip, n, height, width, pin).to(images.device, non_blocking=True))
        return launch(images)

    if key is not None:
        if len(_AUGMENTED_PLANS) >= _MAX_PLANS:
            _AUGMENTED_PLANS.clear()
        _AUGMENTED_PLANS[key] = plan
    return plan


def _augmented_operator_dtype(x_dtype, out_dtype, acc):
    """The dtype the Triton separable_map reads its operators in: bf16 where it runs one bf16 part
    (it would round float32 operators to bf16 while preparing), else the accumulation dtype."""
    from .triton.separable_map import precision_parts

    resolved_out = out_dtype or (x_dtype if x_dtype.is_floating_point else acc)
    return torch.bfloat16 if precision_parts(x_dtype, resolved_out)[0] == 1 else acc


def _augmented_operator_buffers(n, height, width, size, out_size, operator_dtype, acc, device):
    """Fresh (rows, cols, row_v, col_v) for the operator kernel to write; v's are None when the
    rank-one term is absent."""
    oh, ow = out_size
    rows = torch.empty((n, 1, oh, height), dtype=operator_dtype, device=device)
    cols = torch.empty((n, 1, ow, width), dtype=operator_dtype, device=device)
    if not operators.has_rank_one_term(size):
        return rows, cols, None, None
    return rows, cols, torch.empty((n, height), dtype=acc, device=device), torch.empty((n, width), dtype=acc, device=device)


def _augmented_rank_one(x, size, out_size, acc, row_v, col_v):
    """The separable_map rank_one factors: the shared output-side u's, the per-sample v's (or None)."""
    if row_v is None:
        return None
    _, _, row_u, _, col_u, _ = operators.lowfreq_crop_operators_cached(
        tuple(x.shape[-2:]), tuple(size), tuple(out_size), acc, x.device
    )
    return row_u, row_v, col_u, col_v


def _augmented_operators_triton(x, size, out_size, boxes, flip, acc):
    """(rows, cols, rank-one factors) of checked boxes and flip, built by the Triton kernel into
    fresh tensors (autograd may save them), for the separable_map op."""
    from .triton.augmented_operators import prepare_augmented_operators

    n, _, height, width = x.shape
    rows, cols, row_v, col_v = _augmented_operator_buffers(n, height, width, size, out_size, acc, acc, x.device)
    row_lowfreq, col_lowfreq = operators.lowfreq_crop_axes_with_factor_rows_cached(
        (height, width), tuple(size), tuple(out_size), acc, x.device
    )
    packed = _packed_boxes(boxes, flip, n, height, width, x.device.type == "cuda")
    prepare_augmented_operators(row_lowfreq, col_lowfreq, rows, cols, row_v, col_v)(packed.to(x.device, non_blocking=True))
    rank_one = _augmented_rank_one(x, size, out_size, acc, row_v, col_v)
    return rows, cols, rank_one or (None,) * 4


def augmented_operators_torch(x, size, out_size, boxes, flip, acc):
    """(rows, cols, rank-one factors) of lowfreq_crop_augmented composed with torch ops.

    The traceable path (CPU, torch.compile, modes) and the reference of the Triton kernel: per
    axis the crop-resize matrices of the boxes (`operators.resize_operator`, in the accumulation
    dtype), mirrored where flip is set for the columns, multiplied into the lowfreq operators, whose
    rank-one factor v rides along as one more row. boxes and flip: checked CPU tensors.
    """
    height, width = x.shape[-2:]
    if _untraced_without_grad(x):  # cached operators, no op call and no clones (see lowfreq_crop)
        operator_set = operators.lowfreq_crop_operators_cached((height, width), tuple(size), tuple(out_size), acc, x.device)
    else:
        operator_set = torch.ops.effkernels.lowfreq_crop_operators([height, width], size, out_size, dtype=acc, device=x.device)
    rows, cols, row_u, row_v, col_u, col_v = operator_set
    boxes = boxes.to(x.device)
    crop_rows = operators.resize_operator(boxes[:, 2], height, height, boxes[:, 0], dtype=acc, device=x.device)
    crop_cols = operators.resize_operator(boxes[:, 3], width, width, boxes[:, 1], flip=flip, dtype=acc, device=x.device)
    if not operators.has_rank_one_term(size):
        return rows @ crop_rows[:, None], cols @ crop_cols[:, None], (None,) * 4
    rows_and_v = torch.cat([rows[0, 0], row_v], 0) @ crop_rows
    cols_and_v = torch.cat([cols[0, 0], col_v], 0) @ crop_cols
    return rows_and_v[:, None, :-1], cols_and_v[:, None, :-1], (row_u, rows_and_v[:, -1], col_u, cols_and_v[:, -1])


def _packed_boxes(boxes, flip, n, height, width, pin_memory):
    """Checked boxes and flip as one (N, 5) int32 CPU tensor (top, left, height, width, flip),
    pinned when asked, so that one non-blocking copy takes them to the device. A fresh pinned
    tensor per call: the caching host allocator keeps it until the copy has run."""
    boxes, flip = _check_boxes_and_flip(boxes, flip, n, height, width)
    packed = torch.empty((n, 5), dtype=torch.int32, pin_memory=pin_memory)  # augmented_operators.BOX_FIELDS
    return torch.cat([boxes, flip[:, None]], 1, out=packed)


# Box margins that must all be >= 0, as one integer product: `boxes @ _BOX_MARGINS + offsets` gives
# (top, left, height - 1, width - 1, H - top - height, W - left - width) per box.
_BOX_MARGINS = torch.tensor([[1, 0, 0, 0, -1, 0], [0, 1, 0, 0, 0, -1], [0, 0, 1, 0, -1, 0], [0, 0, 0, 1, 0, -1]])


@functools.lru_cache(maxsize=_MAX_PLANS)
def _box_margin_offsets(height, width):
    with torch.inference_mode(False):  # a first call under inference_mode must not cache an inference tensor
        return torch.tensor([0, 0, -1, -1, height, width])


def _check_boxes_and_flip(boxes, flip, n, height, width):
    """boxes (N, 4) integer and inside the image with positive sides, flip (N,) bool (None: the
    whole image, no flip), returned on the CPU. Few host ops: this runs on every call."""
    if boxes is None:
        boxes = torch.tensor([[0, 0, height, width]]).expand(n, 4)
    if not isinstance(boxes, torch.Tensor) or boxes.dtype.is_floating_point or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must be an integer Tensor of (top, left, height, width), got {boxes!r}")
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape (N, 4) = ({n}, 4), got {tuple(boxes.shape)}")
    if boxes.device.type != "cpu":  # callers should pass CPU tensors; this waits for the device
        boxes = boxes.cpu()
    margins = torch.addmm(_box_margin_offsets(height, width), boxes if boxes.dtype == torch.int64 else boxes.long(),
                          _BOX_MARGINS)
    if n and int(margins.min()) < 0:
        outside = (margins < 0).any(1)
        raise ValueError(f"boxes must lie inside the ({height}, {width}) image with positive sides, got {boxes[outside].tolist()}")
    if flip is None:
        flip = torch.zeros(n, dtype=torch.bool)
    if not isinstance(flip, torch.Tensor) or flip.dtype != torch.bool or flip.shape != (n,):
        raise TypeError(f"flip must be a bool Tensor of shape (N,) = ({n},), got {flip!r}")
    return boxes, flip if flip.device.type == "cpu" else flip.cpu()
