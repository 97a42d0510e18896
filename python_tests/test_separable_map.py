"""effkernels::separable_map against its reference, on every backend; gradients and registration."""
import pytest
import torch

import effkernels
from effkernels import reference
from conftest import TOLERANCE, relative_error

SHAPES = [  # (N, C, H, W, K, OH, OW, per-sample operators)
    (1, 1, 16, 16, 1, 16, 16, False),
    (2, 3, 19, 13, 2, 7, 11, True),
    (3, 2, 9, 33, 2, 20, 5, False),
    (1, 3, 40, 17, 1, 35, 18, True),
]


def random_operands(n, c, h, w, k, oh, ow, per_sample, dtype, device, affine=True):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, device=device)
    else:
        x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    batch = n if per_sample else 1
    rows = torch.randn(batch, k, oh, h, dtype=acc, device=device) / h**0.5
    cols = torch.randn(batch, k, ow, w, dtype=acc, device=device) / w**0.5
    scale = torch.randn(c, dtype=acc, device=device) if affine else None
    shift = torch.randn(c, dtype=acc, device=device) if affine else None
    return x, rows, cols, scale, shift


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_matches_reference(backend, shape, dtype):
    x, rows, cols, scale, shift = random_operands(*shape, dtype, backend, affine=shape[0] != 1)
    out = effkernels.separable_map(x, rows, cols, scale, shift)
    expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64)
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float32)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < TOLERANCE[out.dtype]


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_strided_inputs_and_operators(backend, layout):
    x, rows, cols, scale, shift = random_operands(2, 3, 12, 10, 2, 7, 9, True, torch.float32, backend)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":  # as the adjoint pass reads its operators
        rows = rows.transpose(-1, -2).contiguous().transpose(-1, -2)
        cols = cols.transpose(-1, -2).contiguous().transpose(-1, -2)
    else:
        x = torch.randn(2, 5, 14, 20, device=backend)[:, 1:4, 1:13, ::2]
    out = effkernels.separable_map(x, rows, cols, scale, shift)
    assert relative_error(out, reference.separable_map(x, rows, cols, scale, shift)) < 1e-5


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_out_dtype(backend, out_dtype):
    x, rows, cols, scale, shift = random_operands(2, 3, 11, 12, 1, 5, 6, False, torch.uint8, backend)
    out = effkernels.separable_map(x, rows, cols, scale, shift, out_dtype=out_dtype)
    assert out.dtype == out_dtype
    assert relative_error(out, reference.separable_map(x, rows, cols, scale, shift)) < TOLERANCE[out_dtype] + 1e-6


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("affine", ["scale and shift", "shift only", "none"])
def test_gradients_match_reference(backend, per_sample, affine):
    operands = list(random_operands(2, 3, 10, 9, 2, 6, 7, per_sample, torch.float32, backend))
    if affine != "scale and shift":
        operands[3] = None
    if affine == "none":
        operands[4] = None
    leaves = [t if t is None else t.clone().requires_grad_() for t in operands]
    grad_out = torch.randn(2, 3, 6, 7, device=backend)
    effkernels.separable_map(*leaves).backward(grad_out)
    ref_leaves = [t if t is None else t.detach().double().requires_grad_() for t in operands]
    reference.separable_map(*ref_leaves).backward(grad_out.double())
    for name, leaf, ref in zip(["x", "rows", "cols", "scale", "shift"], leaves, ref_leaves):
        if leaf is not None:
            assert relative_error(leaf.grad, ref.grad) < 1e-5, name


def test_gradcheck_float64():
    operands = random_operands(2, 2, 5, 4, 2, 3, 6, True, torch.float64, "cpu")
    leaves = tuple(t.requires_grad_() for t in operands)
    assert torch.autograd.gradcheck(effkernels.separable_map, leaves)
    assert torch.autograd.gradgradcheck(effkernels.separable_map, leaves)


def test_opcheck():
    for per_sample in (False, True):
        x, rows, cols, scale, shift = random_operands(2, 3, 8, 7, 2, 5, 6, per_sample, torch.float32, "cpu")
        torch.library.opcheck(torch.ops.effkernels.separable_map, (x.requires_grad_(), rows, cols, scale, shift, None))
        torch.library.opcheck(torch.ops.effkernels.separable_map, (x.detach().to(torch.uint8), rows, cols, None, None, torch.float16))


def test_compile_fullgraph_with_backward():
    x, rows, cols, scale, shift = random_operands(2, 3, 12, 11, 2, 6, 5, True, torch.float32, "cpu")
    x.requires_grad_()
    compiled = torch.compile(effkernels.separable_map, fullgraph=True)
    out = compiled(x, rows, cols, scale, shift)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    effkernels.separable_map(x, rows, cols, scale, shift).sum().backward()
    assert relative_error(out, reference.separable_map(x.detach(), rows, cols, scale, shift)) < 1e-5
    assert relative_error(grad, x.grad) < 1e-5


def _bad(**changes):
    x, rows, cols, scale, shift = random_operands(2, 3, 8, 7, 1, 5, 6, False, torch.float32, "cpu")
    args = dict(x=x, rows=rows, cols=cols, scale=scale, shift=shift, out_dtype=None)
    for key, change in changes.items():
        args[key] = change(args[key])
    return args


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(x=lambda x: x[0]), ValueError, "x must have shape"),
        (dict(x=lambda x: x.to(torch.int32)), TypeError, "x must be uint8"),
        (dict(x=lambda x: x.tolist()), TypeError, "x must be a Tensor"),
        (dict(rows=lambda r: r[0]), ValueError, "rows must have shape"),
        (dict(rows=lambda r: r.double()), TypeError, "rows must be torch.float32"),
        (dict(cols=lambda c: c[..., :-1]), ValueError, "cols must have 7 columns"),
        (dict(cols=lambda c: c.expand(3, -1, -1, -1)), ValueError, "cols must hold 1 or N=2"),
        (dict(cols=lambda c: torch.cat([c, c], 1)), ValueError, "same K"),
        (dict(scale=lambda s: s[:2]), ValueError, r"scale must have shape \(C,\)"),
        (dict(shift=lambda s: s.double()), TypeError, "shift must be torch.float32"),
        (dict(out_dtype=lambda _: torch.int64), TypeError, "out_dtype must be a floating dtype"),
        (dict(rows=lambda r: r.to("meta")), ValueError, "rows must be on cpu"),
    ],
)
def test_bad_arguments_raise_clear_errors(changes, error, match):
    args = _bad(**changes)
    with pytest.raises(error, match=match):
        effkernels.separable_map(**args)


def test_direct_op_call_checks_in_cpp():
    args = _bad(cols=lambda c: c[..., :-1])
    with pytest.raises(ValueError, match="cols must have W=7 columns"):
        torch.ops.effkernels.separable_map(*args.values())
