"""effkernels.lowfreq_crop against the torch.fft spec, on every backend."""
import numpy as np
import pytest
import torch

import effkernels
from effkernels import reference
from conftest import HAS_CUDA, TOLERANCE, relative_error

pytestmark = pytest.mark.cuda_emulated  # without a GPU, backend "cuda" runs the CUDA C++ kernel emulated

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

CASES = [  # (N, C, H, W, size, out_size)
    (1, 3, 16, 16, 8, None),  # even band, batch 1
    (2, 3, 16, 16, 7, None),  # odd band
    (2, 3, 17, 12, (8, 5), None),  # H != W, mixed parity
    (3, 1, 15, 20, (15, 20), None),  # band = input size: identity
    (2, 3, 24, 18, (10, 8), (16, 12)),  # upsample after the crop
    (2, 3, 32, 30, (20, 14), (9, 11)),  # downsample after the crop (antialiased)
    (1, 3, 9, 33, (4, 1), (3, 2)),
]


def random_images(n, c, h, w, dtype, device):
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, device=device)
    return torch.rand(n, c, h, w, device=device).to(dtype)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("normalise", [False, True])
def test_matches_fft_reference(backend, case, dtype, normalise):
    n, c, h, w, size, out_size = case
    x = random_images(n, c, h, w, dtype, backend)
    stats = dict(mean=MEAN[:c], std=STD[:c]) if normalise else {}
    out = effkernels.lowfreq_crop(x, size, out_size, **stats)
    expected = reference.lowfreq_crop(x, size, out_size, out_dtype=torch.float64, **stats)
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float32)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < TOLERANCE[out.dtype]


def test_identity_band_returns_the_input(backend):
    x = torch.rand(2, 3, 11, 14, device=backend)
    torch.testing.assert_close(effkernels.lowfreq_crop(x, (11, 14)), x, atol=1e-5, rtol=0)


def test_keeps_mean_intensity(backend):
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64, device=backend)
    out = effkernels.lowfreq_crop(x, 6)
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_non_contiguous_inputs(backend, layout):
    x = torch.randint(0, 256, (2, 3, 24, 40), dtype=torch.uint8, device=backend)
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x[..., 3:21, ::2]
    out = effkernels.lowfreq_crop(x, (8, 9), (12, 10), mean=MEAN, std=STD)
    expected = reference.lowfreq_crop(x, (8, 9), (12, 10), mean=MEAN, std=STD)
    assert relative_error(out, expected) < 1e-5


def test_gradient_is_the_adjoint(backend):
    x = torch.rand(2, 3, 14, 11, device=backend, requires_grad=True)
    grad_out = torch.randn(2, 3, 10, 7, device=backend)
    effkernels.lowfreq_crop(x, (6, 4), (10, 7), mean=MEAN, std=STD).backward(grad_out)
    x64 = x.detach().double().requires_grad_()
    reference.lowfreq_crop(x64, (6, 4), (10, 7), mean=MEAN, std=STD).backward(grad_out.double())
    assert relative_error(x.grad, x64.grad) < 1e-5


@pytest.mark.parametrize("size, out_size", [((4, 6), None), ((5, 4), (7, 3))])
def test_gradcheck_float64(size, out_size):
    x = torch.rand(2, 2, 8, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: effkernels.lowfreq_crop(t, size, out_size, mean=[0.5, 0.2], std=[0.3, 2.0]), (x,))


def test_opcheck():
    x = torch.rand(2, 3, 12, 10, requires_grad=True)
    torch.library.opcheck(torch.ops.effkernels.lowfreq_crop, (x, [6, 4], [8, 8], MEAN, STD, None))
    torch.library.opcheck(torch.ops.effkernels.lowfreq_crop_operators, ([12, 10], [6, 4], [8, 8]),
                          dict(dtype=torch.float32, device=torch.device("cpu")))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(dynamic):
    def transform(images, size):
        return effkernels.lowfreq_crop(images, size, mean=MEAN, std=STD) * 2

    compiled = torch.compile(transform, fullgraph=True, dynamic=dynamic)
    for shape, size in [((2, 3, 16, 16), 8), ((3, 3, 20, 18), 8), ((2, 3, 16, 16), 7)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
        expected = reference.lowfreq_crop(x, size, mean=MEAN, std=STD) * 2
        assert relative_error(compiled(x, size), expected) < 1e-5


def test_normalisation_constants_are_cached_per_device_and_safe_for_autograd():
    mean, std = (0.11, 0.22, 0.33), (0.44, 0.55, 0.66)  # values no other test uses: a fresh cache entry
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():  # the first call, the one that fills the cache
        effkernels.lowfreq_crop(x.detach(), 6, mean=mean, std=std)
    first = effkernels.ops.normalisation_affine(x, mean, std, torch.float64)
    assert all(a is b for a, b in zip(first, effkernels.ops.normalisation_affine(x, mean, std, torch.float64)))
    out = effkernels.lowfreq_crop(x, 6, mean=mean, std=std)
    out.sum().backward()  # saves the cached scale for backward: it must not be an inference tensor
    assert relative_error(out, reference.lowfreq_crop(x, 6, mean=mean, std=std)) < 1e-12


def test_autocast_keeps_float32_math():
    x = torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = effkernels.lowfreq_crop(x, 8, mean=MEAN, std=STD)
    assert out.dtype == torch.float32
    assert relative_error(out, reference.lowfreq_crop(x, 8, mean=MEAN, std=STD)) < 1e-5


def test_out_dtype():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = effkernels.lowfreq_crop(x, 8, out_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, reference.lowfreq_crop(x, 8)) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: effkernels.lowfreq_crop(x[0], 8), ValueError, "x must have shape"),
        (lambda x: effkernels.lowfreq_crop(x.tolist(), 8), TypeError, "x must be a Tensor, got list"),
        (lambda x: effkernels.lowfreq_crop_augmented(x.numpy(), 8), TypeError, "x must be a Tensor, got ndarray"),
        (lambda x: effkernels.lowfreq_crop(x.int(), 8), TypeError, "x must be uint8"),
        (lambda x: effkernels.lowfreq_crop(x, 0), ValueError, "size must lie in"),
        (lambda x: effkernels.lowfreq_crop(x, (8, 17)), ValueError, "size must lie in"),
        (lambda x: effkernels.lowfreq_crop(x, 8.0), TypeError, "size must be an int"),
        (lambda x: effkernels.lowfreq_crop(x, (8, 8, 8)), TypeError, "size must be an int"),
        (lambda x: effkernels.lowfreq_crop(x, 8, (0, 4)), ValueError, "out_size must be positive"),
        (lambda x: effkernels.lowfreq_crop(x, 8, "big"), TypeError, "out_size must be an int"),
        (lambda x: effkernels.lowfreq_crop(x, 8, mean=[0.5, 0.5]), ValueError, "mean must have one value per channel"),
        (lambda x: effkernels.lowfreq_crop(x, 8, std=[1.0, 0.0, 1.0]), ValueError, "std must be non-zero"),
        (lambda x: effkernels.lowfreq_crop(x, 8, std="abc"), TypeError, "std must be a sequence"),
        (lambda x: effkernels.lowfreq_crop(x, 8, out_dtype=torch.int8), TypeError, "out_dtype must be a floating"),
        (lambda x: torch.ops.effkernels.lowfreq_crop(x, [20, 4]), ValueError, "size must lie in"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize("op", [effkernels.lowfreq_crop, effkernels.lowfreq_crop_augmented])
@pytest.mark.parametrize(
    "size, out_size, mean",
    [
        (np.int64(8), np.int32(6), np.array([0.5, 0.4, 0.3])),
        ((np.int64(8), np.int64(8)), np.array([6, 6]), [np.float32(0.5), np.float32(0.4), np.float32(0.3)]),
        (torch.tensor(8), torch.tensor([6, 6]), torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64)),
    ],
)
def test_numpy_and_tensor_values_work_as_python_ones(op, size, out_size, mean):
    """Sizes and per-channel values from NumPy or torch (a schedule table, a config array) are the
    Python numbers they hold; np.float32 mean values are rounded to float32 on the way in."""
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    expected = op(x, 8, 6, mean=[float(v) for v in mean], std=(0.2, 0.2, 0.2))
    assert torch.equal(op(x, size, out_size, mean=mean, std=np.full(3, 0.2)), expected)


def test_numpy_arguments_reuse_the_cached_plan():
    from effkernels import ops

    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    ops._LOWFREQ_PLANS.clear()
    for _ in range(3):
        effkernels.lowfreq_crop(x, np.int64(8), np.array([6, 6]), mean=np.array([0.5, 0.4, 0.3]), std=(0.2,) * 3)
    assert len(ops._LOWFREQ_PLANS) == 1  # made once and kept
    effkernels.lowfreq_crop(x, 8, [6, 6], mean=np.array([0.5, 0.4, 0.3]), std=(0.2,) * 3)
    assert len(ops._LOWFREQ_PLANS) == 1  # the same plan as Python ints


@pytest.mark.parametrize("size", [True, np.float64(8.0), torch.tensor(8.0), np.array([8, 8, 8]),
                                  torch.tensor([[8, 8]])])
def test_sizes_that_are_not_integers_are_refused(size):
    with pytest.raises(TypeError, match="size must be an int or a pair of ints"):
        effkernels.lowfreq_crop(torch.rand(2, 3, 16, 16), size)


@pytest.mark.parametrize("in_size, band, out_size", [(16, 8, 8), (17, 6, 9), (15, 7, 7), (12, 12, 5), (9, 4, 11)])
def test_imaginary_part_is_rank_one(in_size, band, out_size):
    """Only the unpaired Nyquist frequency of an even band makes Im A non-zero: Im A = outer(u, v)."""
    from effkernels import operators

    _, imag = operators.lowfreq_axis_operator(in_size, band)
    u, v = operators.lowfreq_imag_factors(in_size, band)
    torch.testing.assert_close(torch.outer(u, v), imag, rtol=0, atol=1e-15)
    # Zero for odd bands, and for the full band, where the unpaired frequency is the real Nyquist one.
    assert (band % 2 == 1 or band == in_size) == bool((imag.abs() < 1e-15).all())
    rows, cols, row_u, row_v, col_u, col_v = operators.lowfreq_crop_axes((in_size, in_size), (band, band), (out_size, out_size))
    resize = operators.resize_operator(band, out_size, band) if out_size != band else torch.eye(band, dtype=torch.float64)
    torch.testing.assert_close(torch.outer(row_u[0], row_v[0]), -resize @ imag, rtol=0, atol=1e-15)
    assert rows.shape == (1, 1, out_size, in_size) and cols.shape == (1, 1, out_size, in_size)


def test_eager_calls_reuse_a_cached_plan():
    x = torch.randint(0, 256, (2, 3, 20, 18), dtype=torch.uint8)
    args = ((10, 8), (12, 9))
    kwargs = dict(mean=(0.1, 0.2, 0.3), std=[0.7, 0.8, 0.9], out_dtype=torch.float32)
    first = effkernels.lowfreq_crop(x, *args, **kwargs)
    key = effkernels.ops._plan_key(x, *args, kwargs["mean"], kwargs["std"], kwargs["out_dtype"])
    plan = effkernels.ops._LOWFREQ_PLANS[key]
    again = effkernels.lowfreq_crop(torch.randint(0, 256, (2, 3, 20, 18), dtype=torch.uint8), *args, **kwargs)
    assert effkernels.ops._LOWFREQ_PLANS[key] is plan
    assert relative_error(first, reference.lowfreq_crop(x, *args, **kwargs)) < 1e-5
    assert not torch.equal(first, again)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_each_stream_gets_its_own_plan():
    """A plan's operators are prepared on the stream of its first call (the bf16 rounding of the
    training path is a kernel there): a call on another stream, say the input pipeline's thread,
    gets a plan of its own rather than operators that its stream may read before they are written."""
    x = torch.randint(0, 256, (2, 3, 20, 18), dtype=torch.uint8, device="cuda")
    args = (8,)
    kwargs = dict(mean=(0.1, 0.2, 0.3), std=(0.7, 0.8, 0.9), out_dtype=torch.bfloat16)
    main = effkernels.lowfreq_crop(x, *args, **kwargs)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        key = effkernels.ops._plan_key(x, *args, None, kwargs["mean"], kwargs["std"], kwargs["out_dtype"])
        assert key not in effkernels.ops._LOWFREQ_PLANS
        other = effkernels.lowfreq_crop(x, *args, **kwargs)
        assert key in effkernels.ops._LOWFREQ_PLANS
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(other, main, rtol=0, atol=0)


def test_op_path_and_plan_path_agree():
    """Calls that autograd or a dispatch mode watches go through the op, others through the plan."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(2, 3, 16, 14)
    fast = effkernels.lowfreq_crop(x, (8, 6), mean=MEAN, std=STD)
    with FlopCounterMode(display=False):
        traced = effkernels.lowfreq_crop(x, (8, 6), mean=MEAN, std=STD)
    graded = effkernels.lowfreq_crop(x.clone().requires_grad_(), (8, 6), mean=MEAN, std=STD)
    assert graded.grad_fn is not None and fast.grad_fn is None
    torch.testing.assert_close(fast, traced, rtol=0, atol=0)
    torch.testing.assert_close(fast, graded.detach(), rtol=0, atol=0)


def test_plan_path_checks_arguments_on_first_use():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="size must lie in"):
        effkernels.lowfreq_crop(x, 17)
    with pytest.raises(TypeError, match="mean must be a sequence"):
        effkernels.lowfreq_crop(x, 8, mean=[0.1, "a", 0.2])


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_triton_precision_at_training_size(out_dtype, triton_device):
    """The Triton kernel's precision rule at a real size (uint8 224² -> 96, normalised): 3 bf16
    parts for float32 output give float32 accuracy, 1 part for bf16 output stays within bf16's."""
    x = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    out = effkernels.lowfreq_crop(x.to(triton_device), 96, mean=MEAN, std=STD, out_dtype=out_dtype).cpu()
    expected = reference.lowfreq_crop(x, 96, mean=MEAN, std=STD, out_dtype=torch.float64)
    assert relative_error(out, expected) < TOLERANCE[out_dtype]
