"""effkernels::local_ffn and its fused middle dwconv_act against the reference, on every backend."""
import itertools

import numpy as np
import pytest
import torch

import effkernels
from effkernels import reference
from conftest import TOLERANCE, relative_error

pytestmark = pytest.mark.cuda_emulated  # without a GPU, backend "cuda" runs the CUDA C++ kernels emulated

LAYOUTS = [  # (batch, prefix tokens, grid, in features, hidden features)
    (1, 0, (4, 4), 8, 20),
    (2, 1, (7, 5), 6, 36),
    (3, 4, (3, 6), 5, 12),
    (2, 1, (1, 9), 4, 136),  # one grid row; hidden over one Triton channel block
]
OPTION_GRID = list(itertools.product([None, "relu", "hardswish"], effkernels.local_ffn_ops.ACTIVATIONS, ["mlp", "skip"]))


def random_ffn(batch, prefix_tokens, grid, features, hidden, dtype=torch.float64, device="cpu", biases=True):
    """(x, weights...) for local_ffn with values spread over every activation's interesting range."""
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    x = rand(batch, prefix_tokens + grid[0] * grid[1], features)
    weights = [
        rand(hidden, features, scale=features**-0.5 * 2),
        rand(hidden) if biases else None,
        rand(hidden, 1, 3, 3, scale=0.5),
        rand(hidden) if biases else None,
        rand(features + 3, hidden, scale=hidden**-0.5),
        rand(features + 3) if biases else None,
    ]
    return x, weights


def fwd_and_grads(fn, x, weights, grid, **options):
    leaves = [t.detach().requires_grad_() if t is not None else None for t in [x, *weights]]
    out = fn(leaves[0], grid, *leaves[1:], **options)
    # The same upstream gradient whatever out's dtype and device.
    grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inputs = [t for t in leaves if t is not None]
    return out, torch.autograd.grad(out, inputs, grad.to(out.dtype).to(out.device))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("biases", [True, False])
def test_matches_reference_float64(backend, layout, biases):
    batch, prefix_tokens, grid, features, hidden = layout
    x, weights = random_ffn(*layout, device=backend, biases=biases)
    options = dict(num_prefix_tokens=prefix_tokens, prefix="mlp", pre_act="hardswish", act="hardswish")
    out, grads = fwd_and_grads(effkernels.local_ffn, x, weights, grid, **options)
    expected, expected_grads = fwd_and_grads(reference.local_ffn, x, weights, grid, **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE[torch.float64]


@pytest.mark.parametrize("pre_act,act,prefix", OPTION_GRID)
def test_every_activation_and_prefix_mode(backend, pre_act, act, prefix):
    x, weights = random_ffn(2, 2, (3, 4), 5, 12, device=backend)
    options = dict(num_prefix_tokens=2, prefix=prefix, pre_act=pre_act, act=act)
    out, grads = fwd_and_grads(effkernels.local_ffn, x, weights, (3, 4), **options)
    expected, expected_grads = fwd_and_grads(reference.local_ffn, x, weights, (3, 4), **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < 1e-11


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_low_precision_against_float64(backend, dtype, act):
    # Smooth activations only: at h-swish's kinks (±3) a rounding of z flips the derivative by 0.5,
    # in the eager reference as much as here. The kinks are checked exactly in float64 above.
    layout = (2, 1, (5, 6), 16, 48)
    x, weights = random_ffn(*layout, dtype=dtype, device=backend)
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act="relu", act=act)
    out, grads = fwd_and_grads(effkernels.local_ffn, x, weights, (5, 6), **options)
    as64 = [w.double() if w is not None else None for w in weights]
    expected, expected_grads = fwd_and_grads(reference.local_ffn, x.double(), as64, (5, 6), **options)
    assert out.dtype == dtype
    assert relative_error(out, expected) < TOLERANCE[dtype]
    for got, want in zip(grads, expected_grads):
        assert got.dtype == dtype
        # Gradients chain three rounded GEMMs: allow a few roundings of the dtype.
        assert relative_error(got, want) < 3 * TOLERANCE[dtype]


def test_dwconv_act_alone_matches_reference(backend):
    h = torch.randn(2, 3 + 20, 24, dtype=torch.float64, device=backend)
    weight = torch.randn(24, 1, 3, 3, dtype=torch.float64, device=backend)
    bias = torch.randn(24, dtype=torch.float64, device=backend)
    options = dict(num_prefix_tokens=3, prefix="mlp", pre_act="relu", act="gelu_tanh")
    out = effkernels.dwconv_act(h, (4, 5), weight, bias, **options)
    expected = reference.dwconv_act(h, (4, 5), weight, bias, **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]


def test_gradcheck_float64():
    x, weights = random_ffn(2, 1, (3, 4), 3, 6)
    leaves = [x.requires_grad_()] + [w.requires_grad_() for w in weights]
    for options in (
        dict(num_prefix_tokens=1, prefix="mlp", pre_act="hardswish", act="hardswish"),
        dict(num_prefix_tokens=1, prefix="skip", pre_act=None, act="gelu"),
    ):
        assert torch.autograd.gradcheck(lambda *t: effkernels.local_ffn(t[0], (3, 4), *t[1:], **options), leaves)


def test_opcheck():
    h = torch.randn(2, 1 + 12, 10, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(10, dtype=torch.float64, requires_grad=True)
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act="relu", act="gelu")
    torch.library.opcheck(torch.ops.effkernels.dwconv_act, (h, [3, 4], weight, bias), options)
    grad = torch.randn(2, 13, 10, dtype=torch.float64)
    torch.library.opcheck(torch.ops.effkernels.dwconv_act_backward, (grad, h.detach(), [3, 4], weight.detach(), bias.detach()), options)
    x, weights = random_ffn(2, 1, (3, 4), 5, 10)
    torch.library.opcheck(torch.ops.effkernels.local_ffn, (x, [3, 4], *weights), dict(num_prefix_tokens=1, prefix="skip"))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_module_fullgraph(dynamic):
    torch.manual_seed(0)
    module = effkernels.nn.LocalFFN(8, 24, num_prefix_tokens=1, pre_act="hardswish", prefix="skip")
    compiled = torch.compile(module, fullgraph=True, dynamic=dynamic)
    for grid in ((4, 4), (3, 5)):
        x = torch.randn(2, 1 + grid[0] * grid[1], 8, requires_grad=True)
        out = compiled(x, grid)
        out.square().sum().backward()
        compiled_grads = [x.grad] + [p.grad.clone() for p in module.parameters()]
        module.zero_grad()
        x_eager = x.detach().requires_grad_()
        module(x_eager, grid).square().sum().backward()
        eager_grads = [x_eager.grad] + [p.grad for p in module.parameters()]
        module.zero_grad()
        assert relative_error(out, module(x, grid)) < 1e-6
        for got, want in zip(compiled_grads, eager_grads):
            assert relative_error(got, want) < 1e-5


def test_autocast_bfloat16_keeps_float32_weights():
    x, weights = random_ffn(2, 1, (4, 4), 16, 32, dtype=torch.float32)
    options = dict(num_prefix_tokens=1, prefix="mlp", act="gelu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = fwd_and_grads(effkernels.local_ffn, x, weights, (4, 4), **options)
    expected = reference.local_ffn(x.double(), (4, 4), *[w.double() for w in weights], **options)
    assert out.dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in grads)
    assert relative_error(out, expected) < TOLERANCE[torch.bfloat16]


def test_weight_grads_are_deterministic(backend):
    x, weights = random_ffn(3, 1, (6, 7), 8, 40, dtype=torch.float32, device=backend)
    first = fwd_and_grads(effkernels.local_ffn, x, weights, (6, 7), num_prefix_tokens=1)[1]
    second = fwd_and_grads(effkernels.local_ffn, x, weights, (6, 7), num_prefix_tokens=1)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def saved_bytes(fn):
    """Bytes of the distinct tensors autograd keeps for backward while fn() builds its graph."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("pre_act", [None, "hardswish"])
def test_keeps_no_more_for_backward_than_eager(pre_act, autocast):
    """Issue 13: the fused block keeps at most what the eager chain keeps, under bf16 autocast too."""
    x, weights = random_ffn(4, 1, (14, 14), 192, 768, dtype=torch.float32)
    x.requires_grad_()
    weights = [w.requires_grad_() for w in weights]
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act=pre_act, act="hardswish")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fused = saved_bytes(lambda: effkernels.local_ffn(x, (14, 14), *weights, **options))
        eager = saved_bytes(lambda: reference.local_ffn(x, (14, 14), *weights, **options))
    assert fused <= eager


def bad_call(**changes):
    x, weights = random_ffn(2, 1, (3, 4), 5, 10, dtype=torch.float32)
    names = ["fc1_weight", "fc1_bias", "dw_weight", "dw_bias", "fc2_weight", "fc2_bias"]
    args = dict(x=x, grid_size=(3, 4), **dict(zip(names, weights)))
    options = dict(num_prefix_tokens=1)
    for key, value in changes.items():
        (args if key in args else options)[key] = value
    return lambda: effkernels.local_ffn(*args.values(), **options)


@pytest.mark.parametrize(
    "changes,error,match",
    [
        (dict(grid_size=(4, 4)), ValueError, "x must hold num_prefix_tokens"),
        (dict(num_prefix_tokens=0), ValueError, "x must hold num_prefix_tokens"),
        (dict(num_prefix_tokens=-1), ValueError, "num_prefix_tokens must be"),
        (dict(fc1_weight=torch.randn(10, 6)), ValueError, "fc1_weight must have shape"),
        (dict(dw_weight=torch.randn(10, 3, 3)), ValueError, "dw_weight must have shape"),
        (dict(dw_bias=torch.randn(9)), ValueError, "dw_bias must have shape"),
        (dict(fc2_weight=torch.randn(8, 11)), ValueError, "fc2_weight must have shape"),
        (dict(fc1_weight=None), TypeError, r"fc1_weight must be a \(hidden, 5\) Tensor, got NoneType"),
        (dict(fc2_weight=torch.randn(8)), ValueError, r"fc2_weight must be a \(out, hidden\) Tensor, got shape \(8,\)"),
        (dict(dw_bias=[0.0] * 10), TypeError, "dw_bias must be a Tensor or None, got list"),
        (dict(fc2_bias=torch.randn(8, dtype=torch.float64)), TypeError, "fc2_bias must be torch.float32"),
        (dict(dw_weight=torch.randn(10, 1, 3, 3, dtype=torch.float16)), TypeError, "dw_weight must be"),
        (dict(fc1_bias=torch.randn(10, device="meta")), ValueError, "fc1_bias must be on cpu"),
        (dict(x=torch.randn(2, 13, 5).long()), TypeError, "x must be float16"),
        (dict(x=torch.randn(26, 5)), ValueError, "x must have shape"),
        (dict(x=[[0.5] * 5] * 13), TypeError, "x must be a Tensor, got list"),
        (dict(grid_size=(0, 4)), ValueError, "grid_size must be positive"),
        (dict(grid_size=(3, 4, 1)), TypeError, "grid_size must be an int or a pair"),
        (dict(act="silu"), ValueError, "act must be one of"),
        (dict(pre_act="gelu"), ValueError, "pre_act must be one of"),
        (dict(prefix="drop"), ValueError, "prefix must be 'mlp' or 'skip'"),
    ],
)
def test_bad_arguments_name_the_argument(changes, error, match):
    with pytest.raises(error, match=match):
        bad_call(**changes)()


def test_numpy_grid_and_prefix_count_work_as_python_ones():
    x, weights = random_ffn(2, 1, (3, 4), 5, 10, dtype=torch.float32)
    expected = effkernels.local_ffn(x, (3, 4), *weights, num_prefix_tokens=1)
    grid = np.array([3, 4])
    assert torch.equal(effkernels.local_ffn(x, grid, *weights, num_prefix_tokens=np.int64(1)), expected)
    h = torch.randn(2, 13, 10)
    assert torch.equal(effkernels.dwconv_act(h, (np.int32(3), np.int32(4)), weights[2], num_prefix_tokens=np.int64(1)),
                       effkernels.dwconv_act(h, (3, 4), weights[2], num_prefix_tokens=1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(h=torch.randn(2, 12, 4)), "h must hold num_prefix_tokens"),
        (dict(weight=torch.randn(4, 1, 3, 3)), "weight must have shape"),
        (dict(act="tanh"), "act must be one of"),
        (dict(pre_act="gelu"), "pre_act must be one of"),
        (dict(prefix="none"), "prefix must be 'mlp' or 'skip'"),
    ],
)
def test_cpp_kernels_check_direct_op_calls(kwargs, match):
    args = dict(h=torch.randn(2, 13, 6), grid_size=[3, 4], weight=torch.randn(6, 1, 3, 3), bias=None)
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act=None, act="gelu")
    for key, value in kwargs.items():
        (args if key in args else options)[key] = value
    with pytest.raises(ValueError, match=match):
        torch.ops.effkernels.dwconv_act.default._op(*args.values(), **options)
    with pytest.raises(ValueError, match=match):
        torch.ops.effkernels.dwconv_act_backward.default._op(torch.randn(2, 13, 6), *args.values(), **options)


def test_flop_counter_counts_the_fused_middle():
    from torch.utils.flop_counter import FlopCounterMode

    h = torch.randn(2, 1 + 12, 10, requires_grad=True)
    weight = torch.randn(10, 1, 3, 3, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        effkernels.dwconv_act(h, (3, 4), weight, num_prefix_tokens=1).sum().backward()
    assert counter.get_total_flops() == 4 * 2 * 9 * 2 * 13 * 10  # forward + a backward of three conv passes


# ------------------------------------------------------------------------------------------------
# dwconv_act alone (the op the Triton/CUDA/C++ kernels implement): forward and all three gradients
# ------------------------------------------------------------------------------------------------

DWCONV_LAYOUTS = [  # (batch, prefix tokens, (H, W), hidden)
    (1, 0, (3, 3), 8),  # batch 1, no prefix
    (3, 2, (5, 7), 20),  # odd, non-square, prefix > 1
    (2, 1, (1, 6), 136),  # one grid row; hidden over one channel block and not a multiple of it
    (2, 3, (6, 1), 17),  # one grid column
    (2, 1, (1, 1), 5),  # a single grid token
    (2, 1, (3, 35), 12),  # wider than a CUDA C++ CTA's columns: overlapping column tiles
]


def dwconv_fwd_and_grads(fn, h, weight, bias, grid, grad, **options):
    """fn's output and (grad_h, grad_weight[, grad_bias]) for upstream gradient `grad`."""
    leaves = [t.detach().requires_grad_() for t in (h, weight, bias) if t is not None]
    out = fn(leaves[0], grid, leaves[1], leaves[2] if bias is not None else None, **options)
    return out, torch.autograd.grad(out, leaves, grad.to(out.dtype))


def random_dwconv(batch, prefix_tokens, grid, hidden, device="cpu", dtype=torch.float64, biases=True):
    """(h, weight, bias, grad) with h spread over the activations' kinks and tails."""
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    tokens = prefix_tokens + grid[0] * grid[1]
    return rand(batch, tokens, hidden, scale=2.0), rand(hidden, 1, 3, 3, scale=0.5), \
        rand(hidden) if biases else None, rand(batch, tokens, hidden)


@pytest.mark.parametrize("layout", DWCONV_LAYOUTS)
@pytest.mark.parametrize("pre_act,act,prefix,biases", [
    ("hardswish", "hardswish", "skip", False), (None, "gelu", "mlp", True), ("relu", "gelu_tanh", "mlp", True),
    ("hardswish", "relu", "mlp", True),
])
def test_dwconv_act_matches_reference_float64(backend, layout, pre_act, act, prefix, biases):
    batch, prefix_tokens, grid, hidden = layout
    h, weight, bias, grad = random_dwconv(*layout, device=backend, biases=biases)
    options = dict(num_prefix_tokens=prefix_tokens, prefix=prefix, pre_act=pre_act, act=act)
    out, grads = dwconv_fwd_and_grads(effkernels.dwconv_act, h, weight, bias, grid, grad, **options)
    expected, expected_grads = dwconv_fwd_and_grads(reference.dwconv_act, h, weight, bias, grid, grad, **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE[torch.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dwconv_act_low_precision_against_float64(backend, dtype):
    # gelu: smooth, so a rounding of z cannot flip the derivative (see test_low_precision_against_float64).
    h, weight, bias, grad = random_dwconv(2, 2, (5, 6), 40, device=backend)
    options = dict(num_prefix_tokens=2, prefix="mlp", pre_act="relu", act="gelu")
    low = [t.to(dtype) for t in (h, weight, bias)]
    out, grads = dwconv_fwd_and_grads(effkernels.dwconv_act, *low, (5, 6), grad, **options)
    as64 = [t.double() for t in low]  # the same rounded inputs, in float64
    expected, expected_grads = dwconv_fwd_and_grads(reference.dwconv_act, *as64, (5, 6), grad.to(dtype).double(),
                                                    **options)
    assert out.dtype == dtype and relative_error(out, expected) < TOLERANCE[dtype]
    for got, want in zip(grads, expected_grads):
        assert got.dtype == dtype and relative_error(got, want) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dwconv_act_on_views_one_element_into_their_storage(backend, dtype):
    # Contiguous, but no address a multiple of 8 bytes: the vector accesses must not be taken.
    grid = (4, 5)
    h, weight, bias, grad = random_dwconv(2, 1, grid, 16, device=backend)

    def shifted(t):
        storage = torch.empty(t.numel() + 1, dtype=dtype, device=t.device)
        storage[1:] = t.to(dtype).flatten()
        return storage[1:].view(t.shape)

    low = [shifted(h), weight.to(dtype), bias.to(dtype)]
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act="relu", act="gelu")
    out, grads = dwconv_fwd_and_grads(effkernels.dwconv_act, *low, grid, shifted(grad), **options)
    as64 = [t.double() for t in low]
    expected, expected_grads = dwconv_fwd_and_grads(reference.dwconv_act, *as64, grid, shifted(grad).double(),
                                                    **options)
    assert relative_error(out, expected) < TOLERANCE[dtype]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE[dtype]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # Triton runs under the interpreter on the CPU


@pytest.mark.parametrize("width, tiles", [(3, {"BLOCK_W": 4}), (4, {"BLOCK_W": 4}), (9, {"BLOCK_W": 4}),
                                          (16, None), (33, None)])
def test_triton_column_strips_share_their_halo(width, tiles):
    """Grids wider than a program's column strip (BLOCK_W) are split into strips whose halos overlap;
    the backward's strip of 4 holds a grid 3 wide alone (its column roll wraps onto the zero column).
    By default the backward splits 16 columns into strips of 8 and 33 into strips of 16."""
    from effkernels.triton import dwconv_act as kernels

    h, weight, bias, grad = random_dwconv(3, 1, (3, width), 12, device=DEVICE)
    options = dict(num_prefix_tokens=1, prefix="mlp", pre_act="hardswish", act="gelu")
    out = kernels.dwconv_act_triton(h, (3, width), weight, bias, **options, tiles=tiles)
    grads = kernels.dwconv_act_backward_triton(grad, h, (3, width), weight, bias, **options, tiles=tiles)
    expected, expected_grads = dwconv_fwd_and_grads(reference.dwconv_act, h, weight, bias, (3, width), grad, **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE[torch.float64]


@pytest.mark.parametrize("tiles", [dict(BLOCK_C=16, num_warps=2, UNROLL=3),
                                   dict(BLOCK_W=4, BLOCK_C=64, UNROLL=1, programs_per_sm=1)])
def test_triton_launch_shapes_the_tuner_tries_compute_the_same(tiles):
    """perf/tune_dwconv_act.py times other launch shapes than the default: each gives the same results."""
    from effkernels.triton import dwconv_act as kernels

    h, weight, bias, grad = random_dwconv(3, 2, (3, 5), 40, device=DEVICE)
    options = dict(num_prefix_tokens=2, prefix="mlp", pre_act="relu", act="hardswish")
    out = kernels.dwconv_act_triton(h, (3, 5), weight, bias, **options, tiles=tiles)
    grads = kernels.dwconv_act_backward_triton(grad, h, (3, 5), weight, bias, **options, tiles=tiles)
    expected, expected_grads = dwconv_fwd_and_grads(reference.dwconv_act, h, weight, bias, (3, 5), grad, **options)
    assert relative_error(out, expected) < TOLERANCE[torch.float64]
    for got, want in zip(grads, expected_grads):
        assert relative_error(got, want) < TOLERANCE[torch.float64]
    with pytest.raises(ValueError, match="tiles"):
        kernels.dwconv_act_triton(h, (3, 5), weight, bias, **options, tiles={"BLOCK_K": 16})
    with pytest.raises(ValueError, match="BLOCK_W"):  # the backward's column roll needs a power of two ≥ 4
        kernels.dwconv_act_backward_triton(grad, h, (3, 5), weight, bias, **options, tiles={"BLOCK_W": 6})


def test_triton_host_path_launches_raw_kernels_in_eager(monkeypatch):
    """Eager calls launch the raw Triton kernels with cached launch metadata; wrap_triton (slow on the
    host) is used only while torch.compile traces."""
    from effkernels.triton import dwconv_act as kernels

    h, weight, bias, grad = random_dwconv(2, 1, (3, 4), 10, device=DEVICE, dtype=torch.float32)

    def no_wrap(kernel):
        raise AssertionError("wrap_triton in an eager call")

    monkeypatch.setattr(torch.library, "wrap_triton", no_wrap)
    kernels.launch_shape.cache_clear()
    for _ in range(2):
        kernels.dwconv_act_triton(h, (3, 4), weight, bias, num_prefix_tokens=1)
        kernels.dwconv_act_backward_triton(grad, h, (3, 4), weight, bias, num_prefix_tokens=1)
    assert kernels.launch_shape.cache_info().misses == 2 and kernels.launch_shape.cache_info().hits == 2

    wrapped = []
    monkeypatch.setattr(torch.library, "wrap_triton", lambda kernel: wrapped.append(kernel) or kernel)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    kernels.dwconv_act_triton(h, (3, 4), weight, bias, num_prefix_tokens=1)
    assert wrapped == [kernels._dwconv_act_fwd_kernel]


@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("needs_grad", ["h", "weights", "none"])
def test_eager_calls_skip_the_op_and_match_it(backend, biases, needs_grad):
    """An eager call runs the device kernels under its own autograd function, not through the op
    (whose dispatch costs more host time than the launch), with the op's results, bit for bit."""
    grid, options = (3, 4), dict(num_prefix_tokens=1, prefix="mlp", pre_act="relu", act="gelu")
    h, weight, bias, grad = random_dwconv(2, 1, grid, 20, device=backend, dtype=torch.float32, biases=biases)

    def run(fn):
        leaves = [t.detach().requires_grad_(needs_grad == "h" if i == 0 else needs_grad == "weights")
                  if t is not None else None for i, t in enumerate((h, weight, bias))]
        out = fn(leaves[0], grid, *leaves[1:], **options)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        return out, torch.autograd.grad(out, wanted, grad) if wanted else ()

    (eager, eager_grads), (through_op, op_grads) = run(effkernels.dwconv_act), run(torch.ops.effkernels.dwconv_act)
    if needs_grad == "none":
        assert eager.grad_fn is None
    else:
        assert type(eager.grad_fn).__name__ == "_DwconvActBackward"
        assert type(through_op.grad_fn).__name__ != "_DwconvActBackward"
    assert torch.equal(eager, through_op)
    assert len(eager_grads) == len(op_grads) and all(map(torch.equal, eager_grads, op_grads))


def test_flop_counter_fix_counts_the_depthwise_conv_once():
    """torch's FlopCounterMode counts a depthwise conv's weight gradient as a dense hidden×hidden conv;
    effkernels.flops.flop_counter counts it as the forward's multiply-adds. Pinned on the reference block."""
    from torch.utils.flop_counter import FlopCounterMode

    batch, prefix_tokens, (height, width), features, hidden = 2, 1, (3, 4), 5, 12
    x, weights = random_ffn(batch, prefix_tokens, (height, width), features, hidden)
    x.requires_grad_()
    weights = [w.requires_grad_() for w in weights]
    options = dict(num_prefix_tokens=prefix_tokens, prefix="mlp", pre_act="hardswish", act="hardswish")
    tokens, grid_tokens, out = batch * (prefix_tokens + height * width), batch * height * width, features + 3
    gemms = 3 * 2 * tokens * features * hidden + 3 * 2 * tokens * hidden * out  # fwd, grad_input, grad_weight
    conv = 2 * 9 * grid_tokens * hidden  # one pass of the depthwise 3×3 conv
    counts = {}
    for name, mode in (("torch", FlopCounterMode(display=False)),
                       ("fixed", effkernels.flops.flop_counter(display=False))):
        with mode:
            reference.local_ffn(x, (height, width), *weights, **options).sum().backward()
        counts[name] = mode.get_total_flops()
    assert counts["fixed"] == gemms + 3 * conv  # forward, grad_input, grad_weight
    assert counts["torch"] == gemms + 2 * conv + conv * hidden  # grad_weight as a dense conv


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU every Triton test compiles the kernels for real")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("act", ["gelu_tanh", "gelu"])
@pytest.mark.usefixtures("sm90")
def test_triton_kernels_compile_for_sm90_within_their_register_budget(dtype, act):
    """Without a GPU the interpreter never compiles the kernels: compile the default launch shapes for
    sm_90 (perf/tune_dwconv_act.py --sm90, in processes without TRITON_INTERPRET), with the costliest
    activations (gelu_tanh unrolled, erf-gelu not) and a bias, and check that no register spills inside
    their loops and at most 32 bytes around them (the GPU image's Triton 3.6 spills up to 16 there,
    Triton 3.8 none) and that PROGRAMS_PER_SM of them fit in an SM's 65,536 registers."""
    import tune_dwconv_act

    from effkernels.triton import dwconv_act as kernels

    reports = tune_dwconv_act.main(["--sm90", "--defaults-only", "--dtype", dtype, "--act", act, "--bias",
                                    "--grids", "6", "14", "--jobs", "2"])
    assert sorted(r["kind"] for r in reports) == ["backward"] * 2 + ["forward"] * 2, reports
    for report in reports:
        assert not tune_dwconv_act.spills_in_loops(report) and report["spill_bytes"] <= 32, report
        assert report["programs_fit"] >= kernels.PROGRAMS_PER_SM[getattr(torch, dtype)][report["kind"] == "backward"]
