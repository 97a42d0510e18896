"""LocalFFN (ViT in 24 h): the public op, its argument checks, fake kernels, autograd and backend choice.

`local_ffn` = fc1 GEMM → `dwconv_act` (the fused pre-activation, token-grid depthwise 3×3 conv, bias
and activation) → fc2 GEMM. The GEMMs stay with cuBLAS/MKL; `dwconv_act` has a C++ CPU kernel
(csrc/cpu), a Triton kernel (effkernels/triton, the GPU default) and a CUDA C++ kernel (csrc/cuda,
`EFFKERNELS_BACKEND=cuda`). The spec is effkernels.reference.local_ffn.
"""
import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.utils.flop_counter import register_flop_formula

from .checks import check_tensor, integer
from .ops import FLOAT_DTYPES, gpu_backend, pair, untraced

ACTIVATIONS = ("hardswish", "gelu", "gelu_tanh", "relu")
PRE_ACTIVATIONS = (None, "relu", "hardswish")
PREFIX_MODES = ("mlp", "skip")


def local_ffn(
    x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
    *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish",
):
    """LocalFFN on a token sequence: `fc2(act(dwconv3x3(pre_act(fc1(x)))))`, the conv on the token grid.

    x: (B, P + H·W, D), P prefix (class/register) tokens first, then the (H, W) = grid_size grid
    row-major. fc1_weight (hidden, D), dw_weight (hidden, 1, 3, 3) as nn.Conv2d stores it, fc2_weight
    (out, hidden); biases may be None. pre_act ∈ {None, "relu", "hardswish"} acts on every token
    before the conv; act ∈ {"hardswish", "gelu", "gelu_tanh", "relu"} after it. Prefix tokens skip
    the conv: prefix="mlp" sends them through fc1 → pre_act → act → fc2, prefix="skip" gives them
    zeros (so a residual block leaves them unchanged, as the published ViT-24h code does).
    Differentiable in every tensor; under autocast the GEMMs run in the autocast dtype.
    An eager call on a plain tensor runs the op's body without the dispatcher (see `_run_dwconv_act`).
    """
    check_tensor("x", x)
    grid_size, num_prefix_tokens = pair(grid_size, "grid_size"), integer(num_prefix_tokens)
    local_ffn_body = _local_ffn_composite if untraced(x) else torch.ops.effkernels.local_ffn
    return local_ffn_body(
        x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
        num_prefix_tokens=num_prefix_tokens, prefix=prefix, pre_act=pre_act, act=act,
    )


def dwconv_act(h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    """The fused middle of local_ffn on h = fc1(x), token-major (B, P + H·W, hidden): the grid tokens
    get `act(dwconv3x3(pre_act(h)) + bias)`, prefix tokens `act(pre_act(h))` ("mlp") or 0 ("skip")."""
    grid_size, num_prefix_tokens = pair(grid_size, "grid_size"), integer(num_prefix_tokens)
    check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act)
    options = dict(num_prefix_tokens=num_prefix_tokens, prefix=prefix, pre_act=pre_act, act=act)
    return _run_dwconv_act(h, grid_size, weight, bias, options)


def _check_tensor(name, value, shape, like, optional=False, dtype_free=False):
    """value must be a Tensor of `shape` on like's device and, unless dtype_free, of like's dtype."""
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor{' or None' if optional else ''}, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    if not dtype_free and value.dtype != like.dtype:
        raise TypeError(f"{name} must be {like.dtype} like the input, got {value.dtype}")
    if value.device != like.device:
        raise ValueError(f"{name} must be on {like.device} like the input, got {value.device}")


def _check_options(grid_size, num_prefix_tokens, prefix, pre_act, act):
    height, width = grid_size
    if not (height >= 1 and width >= 1):
        raise ValueError(f"grid_size must be positive, got ({height}, {width})")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    if prefix not in PREFIX_MODES:
        raise ValueError(f"prefix must be 'mlp' or 'skip', got {prefix!r}")
    if pre_act not in PRE_ACTIVATIONS:
        raise ValueError(f"pre_act must be one of None, 'relu', 'hardswish', got {pre_act!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of 'hardswish', 'gelu', 'gelu_tanh', 'relu', got {act!r}")


def _check_tokens(name, x, grid_size, num_prefix_tokens):
    check_tensor(name, x)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, P + H*W, features), got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    expected = num_prefix_tokens + grid_size[0] * grid_size[1]
    if x.shape[1] != expected:
        raise ValueError(
            f"{name} must hold num_prefix_tokens + H*W = {num_prefix_tokens} + {grid_size[0]}*{grid_size[1]} "
            f"= {expected} tokens, got {x.shape[1]}"
        )


def check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act):
    """Raise TypeError/ValueError naming the argument when dwconv_act cannot run on these."""
    _check_options(grid_size, num_prefix_tokens, prefix, pre_act, act)
    _check_tokens("h", h, grid_size, num_prefix_tokens)
    hidden = h.shape[2]
    _check_tensor("weight", weight, (hidden, 1, 3, 3), h)
    _check_tensor("bias", bias, (hidden,), h, optional=True)


def check_dwconv_act_grad(grad, h):
    """The backward's upstream gradient must match h in shape, dtype and device."""
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"grad must be a Tensor, got {type(grad).__name__}")
    if grad.shape != h.shape:
        raise ValueError(f"grad must have h's shape {tuple(h.shape)}, got {tuple(grad.shape)}")
    if grad.dtype != h.dtype:
        raise TypeError(f"grad must be {h.dtype} like h, got {grad.dtype}")
    if grad.device != h.device:
        raise ValueError(f"grad must be on {h.device} like h, got {grad.device}")


def check_local_ffn(x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
                    num_prefix_tokens, prefix, pre_act, act):
    """Raise TypeError/ValueError naming the argument when local_ffn cannot run on these."""
    _check_options(grid_size, num_prefix_tokens, prefix, pre_act, act)
    _check_tokens("x", x, grid_size, num_prefix_tokens)
    for name, weight, shape in (("fc1_weight", fc1_weight, f"(hidden, {x.shape[2]})"),
                                ("fc2_weight", fc2_weight, "(out, hidden)")):
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"{name} must be a {shape} Tensor, got {type(weight).__name__}")
        if weight.dim() != 2:
            raise ValueError(f"{name} must be a {shape} Tensor, got shape {tuple(weight.shape)}")
    hidden, out = fc1_weight.shape[0], fc2_weight.shape[0]
    # Under autocast the weights stay float32 while the GEMMs run in the autocast dtype.
    mixed = torch.is_autocast_enabled(x.device.type)
    for name, value, shape, optional in (
        ("fc1_weight", fc1_weight, (hidden, x.shape[2]), False),
        ("fc1_bias", fc1_bias, (hidden,), True),
        ("dw_weight", dw_weight, (hidden, 1, 3, 3), False),
        ("dw_bias", dw_bias, (hidden,), True),
        ("fc2_weight", fc2_weight, (out, hidden), False),
        ("fc2_bias", fc2_bias, (out,), True),
    ):
        _check_tensor(name, value, shape, x, optional=optional, dtype_free=mixed)


def _local_ffn_composite(x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
                         num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    check_local_ffn(x, grid_size, fc1_weight, fc1_bias, dw_weight, dw_bias, fc2_weight, fc2_bias,
                    num_prefix_tokens, prefix, pre_act, act)
    h = F.linear(x, fc1_weight, fc1_bias)
    options = dict(num_prefix_tokens=num_prefix_tokens, prefix=prefix, pre_act=pre_act, act=act)
    a = _run_dwconv_act(
        h, grid_size, dw_weight.to(h.dtype), None if dw_bias is None else dw_bias.to(h.dtype), options
    )
    y = F.linear(a, fc2_weight, fc2_bias)
    if prefix == "skip" and num_prefix_tokens > 0 and fc2_bias is not None:
        y[:, :num_prefix_tokens] = 0  # a is zero there; only fc2's bias is left to clear
    return y


torch.library.impl("effkernels::local_ffn", "CompositeImplicitAutograd", _local_ffn_composite)


def _run_dwconv_act(h, grid_size, weight, bias, options):
    """dwconv_act on checked arguments. An eager call on plain CPU or CUDA tensors that no tracer,
    mode or transform watches runs the device kernels directly, under `_DwconvAct` when
    autograd needs it: the dispatcher and the op's registered autograd cost more host time than the
    kernel launch (public dwconv_act with autograd on a 2-core CPU VM, 2026-11-23: 110 µs per call
    through the op, 49 µs this way). Everything else goes through the op, which torch.compile and
    FlopCounterMode see; profiler traces show the kernels, not the op."""
    device_type = h.device.type
    plain_weights = type(weight) is torch.Tensor and (bias is None or type(bias) is torch.Tensor)
    if not (device_type in _EAGER_DEVICE_TYPES and plain_weights and untraced(h)):
        return torch.ops.effkernels.dwconv_act(h, grid_size, weight, bias, **options)
    forward, backward = _device_kernels(device_type, gpu_backend("dwconv_act") if device_type == "cuda" else None)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _DwconvAct.apply(h, weight, bias, grid_size, options, forward, backward)
    return forward(h, grid_size, weight, bias, **options)


_EAGER_DEVICE_TYPES = ("cpu", "cuda")


@functools.cache
def _device_kernels(device_type, backend):
    """(forward, backward) kernels of dwconv_act for a device type and GPU backend, with the op's
    signature and no argument checks: the op's CPU kernel (by redispatch, so that a kernel
    registered over it, as the tests' Triton-on-CPU one, is honoured), the Triton launchers, or the
    CUDA C++ ops."""
    if device_type == "cpu":
        cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
        return (functools.partial(torch.ops.effkernels.dwconv_act.default.redispatch, cpu),
                functools.partial(torch.ops.effkernels.dwconv_act_backward.default.redispatch, cpu))
    if backend == "cuda":
        return torch.ops.effkernels.dwconv_act_cuda.default, torch.ops.effkernels.dwconv_act_backward_cuda.default
    from .triton.dwconv_act import dwconv_act_backward_triton, dwconv_act_triton  # triton: GPU machines only

    return dwconv_act_triton, dwconv_act_backward_triton


class _DwconvAct(torch.autograd.Function):
    """dwconv_act's autograd for the eager calls that bypass the op: what the op's registered
    autograd does (only h is kept; the backward kernel recomputes z), without the dispatcher."""

    @staticmethod
    def forward(ctx, h, weight, bias, grid_size, options, forward_kernel, backward_kernel):
        ctx.save_for_backward(h, weight, bias)
        ctx.grid_size, ctx.options, ctx.backward_kernel = grid_size, options, backward_kernel
        return forward_kernel(h, grid_size, weight, bias, **options)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        h, weight, bias = ctx.saved_tensors
        grad_h, grad_weight, grad_bias = ctx.backward_kernel(grad, h, ctx.grid_size, weight, bias, **ctx.options)
        return grad_h, grad_weight, grad_bias if bias is not None else None, None, None, None, None


@torch.library.register_fake("effkernels::dwconv_act")
def _dwconv_act_fake(h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act)
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@torch.library.register_fake("effkernels::dwconv_act_backward")
def _dwconv_act_backward_fake(grad, h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp",
                              pre_act=None, act="hardswish"):
    check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act)
    check_dwconv_act_grad(grad, h)
    return (
        torch.empty_like(h, memory_format=torch.contiguous_format),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
        weight.new_empty((weight.shape[0],)),
    )


def _dwconv_act_setup_context(ctx, inputs, keyword_only_inputs, output):
    h, grid_size, weight, bias = inputs
    # Only h is kept (the eager chain keeps h, the conv input, its output and more): z is
    # recomputed in the backward's first pass.
    ctx.save_for_backward(h, weight, bias)
    ctx.grid_size = grid_size
    ctx.options = keyword_only_inputs


def _dwconv_act_backward(ctx, grad):
    h, weight, bias = ctx.saved_tensors
    grad_h, grad_weight, grad_bias = torch.ops.effkernels.dwconv_act_backward(
        grad, h, ctx.grid_size, weight, bias, **ctx.options
    )
    return grad_h, None, grad_weight, grad_bias if bias is not None else None


torch.library.register_autograd(
    "effkernels::dwconv_act", _dwconv_act_backward, setup_context=_dwconv_act_setup_context
)


def _dwconv_act_gpu(h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
    check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act)
    forward, _ = _device_kernels("cuda", gpu_backend("dwconv_act"))
    return forward(h, grid_size, weight, bias, num_prefix_tokens=num_prefix_tokens, prefix=prefix, pre_act=pre_act,
                   act=act)


def _dwconv_act_backward_gpu(grad, h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp",
                             pre_act=None, act="hardswish"):
    check_dwconv_act(h, grid_size, weight, bias, num_prefix_tokens, prefix, pre_act, act)
    check_dwconv_act_grad(grad, h)
    _, backward = _device_kernels("cuda", gpu_backend("dwconv_act"))
    return backward(grad, h, grid_size, weight, bias, num_prefix_tokens=num_prefix_tokens, prefix=prefix,
                    pre_act=pre_act, act=act)


# Registered by call, not as decorators, so that the functions stay callable (tests call them directly).
torch.library.register_kernel("effkernels::dwconv_act", "cuda", _dwconv_act_gpu)
torch.library.register_kernel("effkernels::dwconv_act_backward", "cuda", _dwconv_act_backward_gpu)


# FlopCounterMode counts what the fused middle computes, so LocalFFN models report their true cost:
# 9 multiply-adds per grid element forward; backward recomputes the conv and runs its two adjoints.
@register_flop_formula(torch.ops.effkernels.dwconv_act)
def _dwconv_act_flops(h_shape, *args, out_shape=None, **kwargs):
    return 2 * 9 * h_shape[0] * h_shape[1] * h_shape[2]


@register_flop_formula(torch.ops.effkernels.dwconv_act_backward)
def _dwconv_act_backward_flops(grad_shape, *args, out_shape=None, **kwargs):
    return 3 * 2 * 9 * grad_shape[0] * grad_shape[1] * grad_shape[2]
