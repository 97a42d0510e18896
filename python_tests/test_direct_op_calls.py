"""Direct `torch.ops.effkernels.*` calls with bad arguments raise a ValueError or TypeError naming
the argument on every device and kernel (C++ CPU, Triton, CUDA C++), before any memory is touched.

A kernel that trusted its caller here would read out of bounds or crash the process, so every
case below is one argument away from a valid call, on each device the machine has.
"""
import pytest
import torch

from conftest import HAS_CUDA, HAS_CUDA_CPP

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def elsewhere(device):
    """Another device for a misplaced argument: the dispatcher still picks `device`'s kernel when it
    is CUDA beside CPU; with no GPU, meta tensors reach the fake kernel's checks."""
    if device == "cuda":
        return "cpu"
    return "cuda" if HAS_CUDA else "meta"


def on(device, **tensors):
    return {name: t.to(device) if isinstance(t, torch.Tensor) else t for name, t in tensors.items()}


def separable_map_args(device):
    return on(
        device,
        x=torch.rand(2, 3, 5, 7),
        rows=torch.rand(1, 1, 4, 5),
        cols=torch.rand(1, 1, 6, 7),
        scale=torch.rand(3),
        shift=torch.rand(3),
        out_dtype=None,
        row_u=torch.rand(1, 4),  # the rank-one term's factors
        row_v=torch.rand(1, 5),
        col_u=torch.rand(1, 6),
        col_v=torch.rand(1, 7),
    )


RANK_ONE = ("row_u", "row_v", "col_u", "col_v")


SEPARABLE_MAP_CASES = [  # (argument, replacement given the valid args, error, message)
    ("x", lambda a: a["x"][0], ValueError, r"x must have shape \(N, C, H, W\)"),
    ("x", lambda a: a["x"].long(), TypeError, "x must be uint8"),
    ("rows", lambda a: a["rows"][0], ValueError, "rows must have shape"),
    ("rows", lambda a: a["rows"].double(), TypeError, "rows (and cols )?must be"),
    ("rows", lambda a: a["rows"].expand(3, -1, -1, -1), ValueError, "rows must hold 1 or N=2"),
    ("cols", lambda a: a["cols"][..., :-1], ValueError, "cols must have W=7 columns"),
    ("cols", lambda a: torch.cat([a["cols"], a["cols"]], 1), ValueError, "same K"),
    ("cols", lambda a: a["cols"].to(elsewhere(a["x"].device.type)), ValueError, "(rows and )?cols must be on"),
    ("scale", lambda a: a["scale"][:2], ValueError, r"scale must have shape \(C,\)"),
    ("shift", lambda a: a["shift"].double(), TypeError, "shift must be"),
    ("shift", lambda a: a["shift"].to(elsewhere(a["x"].device.type)), ValueError, "shift must be on"),
    ("out_dtype", lambda a: torch.int64, TypeError, "out_dtype must be a floating dtype"),
    ("row_u", lambda a: None, ValueError, "must be given all together"),
    ("row_v", lambda a: a["row_v"].double(), TypeError, "row_v must be"),
    ("col_v", lambda a: a["col_v"][:, :-1], ValueError, "col_v must have shape"),
    ("col_u", lambda a: a["col_u"].to(elsewhere(a["x"].device.type)), ValueError, "col_u must be on"),
]


def separable_map_ops(device):
    """(op, whether it takes the rank-one factors)."""
    ops = [(torch.ops.effkernels.separable_map.default, True)]
    if device == "cuda" and HAS_CUDA_CPP:
        ops.append((torch.ops.effkernels.separable_map_cuda.default, False))
    return ops


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("argument,replace,error,match", SEPARABLE_MAP_CASES)
def test_separable_map_entry_points_check(device, argument, replace, error, match):
    for op, takes_rank_one in separable_map_ops(device):
        if argument in RANK_ONE and not takes_rank_one:
            continue
        args = separable_map_args(device)
        args[argument] = replace(args)
        if not takes_rank_one:
            args = {name: value for name, value in args.items() if name not in RANK_ONE}
        with pytest.raises(error, match=match):
            op(*args.values())


def dwconv_act_args(device):
    return on(device, h=torch.randn(2, 13, 6), grid_size=[3, 4], weight=torch.randn(6, 1, 3, 3), bias=torch.randn(6))


DWCONV_ACT_CASES = [  # (argument, replacement given the valid args, error, message)
    ("h", lambda a: a["h"][:, 1:], ValueError, "h must hold num_prefix_tokens"),
    ("h", lambda a: a["h"][0], ValueError, "h must have shape"),
    ("h", lambda a: a["h"].long(), TypeError, "h must be float16"),
    ("grid_size", lambda a: [0, 13], ValueError, "grid_size must be positive"),
    ("weight", lambda a: a["weight"][:4], ValueError, "weight must have shape"),
    ("weight", lambda a: a["weight"].double(), TypeError, "weight must be"),
    ("weight", lambda a: a["weight"].to(elsewhere(a["h"].device.type)), ValueError, "weight must be on"),
    ("bias", lambda a: a["bias"][:5], ValueError, "bias must have shape"),
    ("bias", lambda a: a["bias"].to(elsewhere(a["h"].device.type)), ValueError, "bias must be on"),
    ("num_prefix_tokens", lambda a: -1, ValueError, "num_prefix_tokens must be"),
    ("act", lambda a: "tanh", ValueError, "act must be one of"),
    ("pre_act", lambda a: "gelu", ValueError, "pre_act must be one of"),
    ("prefix", lambda a: "none", ValueError, "prefix must be 'mlp' or 'skip'"),
]
OPTIONS = dict(num_prefix_tokens=1, prefix="mlp", pre_act=None, act="gelu")


def dwconv_act_ops(device):
    ops = [(torch.ops.effkernels.dwconv_act.default, torch.ops.effkernels.dwconv_act_backward.default)]
    if device == "cuda" and HAS_CUDA_CPP:
        ops.append((torch.ops.effkernels.dwconv_act_cuda.default, torch.ops.effkernels.dwconv_act_backward_cuda.default))
    return ops


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("argument,replace,error,match", DWCONV_ACT_CASES)
def test_dwconv_act_entry_points_check(device, argument, replace, error, match):
    for forward, backward in dwconv_act_ops(device):
        args, options = dwconv_act_args(device), dict(OPTIONS)
        (args if argument in args else options)[argument] = replace({**args, **options})
        grad = torch.randn(2, 13, 6, device=device)
        with pytest.raises(error, match=match):
            forward(*args.values(), **options)
        with pytest.raises(error, match=match):
            backward(grad, *args.values(), **options)


GRAD_CASES = [  # the backward's own argument
    (lambda g: g[:, 1:], ValueError, "grad must have h's shape"),
    (lambda g: g.double(), TypeError, "grad must be"),
    (lambda g: g.to(elsewhere(g.device.type)), ValueError, "grad must be on"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("replace,error,match", GRAD_CASES)
def test_dwconv_act_backward_checks_grad(device, replace, error, match):
    for _, backward in dwconv_act_ops(device):
        grad = replace(torch.randn(2, 13, 6, device=device))
        with pytest.raises(error, match=match):
            backward(grad, *dwconv_act_args(device).values(), **OPTIONS)
