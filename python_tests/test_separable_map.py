"""effkernels::separable_map against its reference, on every backend; gradients and registration."""
import pytest
import torch

import effkernels
from effkernels import reference
from conftest import TOLERANCE, relative_error

pytestmark = pytest.mark.cuda_emulated  # without a GPU, backend "cuda" runs the CUDA C++ kernel emulated

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
        (dict(cols=lambda c: c[..., :-1]), ValueError, "cols must have W=7 columns"),
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


def random_rank_one(n, oh, h, ow, w, per_sample, dtype, device):
    """(row_u, row_v, col_u, col_v), each factor shared or per sample as `per_sample` (4 bools) says."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return tuple(
        torch.randn(n if each else 1, length, dtype=acc, device=device) / length**0.25
        for each, length in zip(per_sample, (oh, h, ow, w))
    )


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("dtype, out_dtype", [
    (torch.uint8, None), (torch.uint8, torch.bfloat16), (torch.bfloat16, None), (torch.float32, None),
    (torch.float16, torch.float32), (torch.float64, None),
])
def test_rank_one_term_matches_reference(backend, shape, dtype, out_dtype):
    n, c, h, w, k, oh, ow, per_sample = shape
    x, rows, cols, scale, shift = random_operands(*shape, dtype, backend)
    rank_one = random_rank_one(n, oh, h, ow, w, (per_sample, True, False, per_sample), dtype, backend)
    out = effkernels.separable_map(x, rows, cols, scale, shift, out_dtype, rank_one=rank_one)
    expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64, rank_one=rank_one)
    assert relative_error(out, expected) < TOLERANCE[out.dtype]


def test_rank_one_term_is_one_more_dense_term():
    x, rows, cols, scale, shift = random_operands(2, 3, 9, 8, 1, 5, 6, True, torch.float64, "cpu")
    row_u, row_v, col_u, col_v = random_rank_one(2, 5, 9, 6, 8, (True, False, False, True), torch.float64, "cpu")
    dense_rows = torch.cat([rows, (row_u[:, :, None] * row_v[:, None, :])[:, None]], 1)
    dense_cols = torch.cat([cols.expand(2, -1, -1, -1), (col_u[:, :, None] * col_v[:, None, :]).expand(2, -1, -1)[:, None]], 1)
    out = effkernels.separable_map(x, rows, cols, scale, shift, rank_one=(row_u, row_v, col_u, col_v))
    torch.testing.assert_close(out, effkernels.separable_map(x, dense_rows, dense_cols, scale, shift), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True])
def test_rank_one_gradients_match_reference(backend, per_sample):
    operands = list(random_operands(2, 3, 10, 9, 1, 6, 7, per_sample, torch.float32, backend))
    factors = random_rank_one(2, 6, 10, 7, 9, (per_sample, not per_sample, True, False), torch.float32, backend)
    leaves = [t.clone().requires_grad_() for t in operands + list(factors)]
    grad_out = torch.randn(2, 3, 6, 7, device=backend)
    effkernels.separable_map(*leaves[:5], rank_one=leaves[5:]).backward(grad_out)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    reference.separable_map(*ref_leaves[:5], rank_one=ref_leaves[5:]).backward(grad_out.double())
    names = ["x", "rows", "cols", "scale", "shift", "row_u", "row_v", "col_u", "col_v"]
    for name, leaf, ref in zip(names, leaves, ref_leaves):
        # grad_scale sums grad * out over 84 random-sign products per channel: the Triton kernel's
        # bf16 hi + lo error (~1e-5 of the summed magnitudes) grows by that cancellation.
        assert relative_error(leaf.grad, ref.grad) < (5e-5 if name == "scale" else 1e-5), name


def test_rank_one_gradcheck_float64():
    operands = random_operands(2, 2, 5, 4, 1, 3, 6, False, torch.float64, "cpu")
    factors = random_rank_one(2, 3, 5, 6, 4, (False, True, True, False), torch.float64, "cpu")
    leaves = tuple(t.requires_grad_() for t in operands + factors)

    def fn(*tensors):
        return effkernels.separable_map(*tensors[:5], rank_one=tensors[5:])

    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


def test_rank_one_opcheck_and_compile():
    x, rows, cols, scale, shift = random_operands(2, 3, 8, 7, 1, 5, 6, True, torch.float32, "cpu")
    factors = random_rank_one(2, 5, 8, 6, 7, (True, False, True, False), torch.float32, "cpu")
    torch.library.opcheck(torch.ops.effkernels.separable_map, (x.requires_grad_(), rows, cols, scale, shift, None, *factors))
    compiled = torch.compile(lambda *t: effkernels.separable_map(*t[:5], rank_one=t[5:]), fullgraph=True)
    out = compiled(x, rows, cols, scale, shift, *factors)
    expected = reference.separable_map(x.detach(), rows, cols, scale, shift, rank_one=factors)
    assert relative_error(out, expected) < 1e-5


@pytest.mark.parametrize(
    "factors, error, match",
    [
        (lambda f: f[:3], TypeError, "rank_one must be None or four Tensors"),
        (lambda f: (f[0][:, :-1], *f[1:]), ValueError, r"row_u must have shape \(1 or N=2, 5\)"),
        (lambda f: (f[0], f[1].expand(3, -1), *f[2:]), ValueError, "row_v must have shape"),
        (lambda f: (*f[:3], f[3].double()), TypeError, "col_v must be torch.float32"),
    ],
)
def test_bad_rank_one_raises_clear_errors(factors, error, match):
    args = _bad()
    rank_one = factors(random_rank_one(2, 5, 8, 6, 7, (False,) * 4, torch.float32, "cpu"))
    with pytest.raises(error, match=match):
        effkernels.separable_map(**args, rank_one=rank_one)


def test_direct_op_call_checks_rank_one_in_cpp():
    args = _bad()
    row_u, row_v, col_u, col_v = random_rank_one(2, 5, 8, 6, 7, (False,) * 4, torch.float32, "cpu")
    with pytest.raises(ValueError, match="all together"):
        torch.ops.effkernels.separable_map(*args.values(), row_u, row_v, None, None)
    with pytest.raises(ValueError, match=r"col_v must have shape \(1 or N, 7\)"):
        torch.ops.effkernels.separable_map(*args.values(), row_u, row_v, col_u, col_v[:, :3])


def reflection_symmetric(operator):
    """operator + its DFT reflection A[-m, -n]: it commutes with the reflection."""
    out_len, in_len = operator.shape[-2:]
    rows = (-torch.arange(out_len)) % out_len
    cols = (-torch.arange(in_len)) % in_len
    return operator + operator[..., rows, :][..., cols]


@pytest.mark.parametrize("h, w, oh, ow", [(16, 16, 8, 8), (17, 12, 9, 5), (9, 33, 4, 3), (12, 10, 14, 11)])
@pytest.mark.parametrize("dtype, out_dtype", [(torch.uint8, torch.bfloat16), (torch.float32, None), (torch.float64, None)])
def test_reflection_symmetric_operators_take_the_folded_cpu_path(h, w, oh, ow, dtype, out_dtype):
    """Shared K = 1 operators that commute with the DFT reflection (lowfreq_crop without a resize)
    run folded on the CPU, half the multiply-adds: same map, with and without the rank-one term."""
    x, rows, cols, scale, shift = random_operands(2, 3, h, w, 1, oh, ow, False, dtype, "cpu")
    rows, cols = reflection_symmetric(rows), reflection_symmetric(cols)
    factors = random_rank_one(2, oh, h, ow, w, (False, True, False, True), dtype, "cpu")
    for rank_one in (None, factors):
        out = effkernels.separable_map(x, rows, cols, scale, shift, out_dtype, rank_one=rank_one)
        expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64, rank_one=rank_one)
        assert relative_error(out, expected) < TOLERANCE[out.dtype]


def test_cuda_cpp_route_folds_the_rank_one_term_into_a_dense_term():
    """The CUDA C++ kernel knows no rank-one term: effkernels.ops appends it as one more K-term."""
    x, rows, cols, scale, shift = random_operands(2, 3, 9, 8, 2, 5, 6, False, torch.float64, "cpu")
    row_u, row_v, col_u, col_v = random_rank_one(2, 5, 9, 6, 8, (False, True, True, False), torch.float64, "cpu")
    dense_rows = effkernels.ops._with_dense_term(rows, row_u, row_v)
    dense_cols = effkernels.ops._with_dense_term(cols, col_u, col_v)
    assert dense_rows.shape == (2, 3, 5, 9) and dense_cols.shape == (2, 3, 6, 8)
    expected = reference.separable_map(x, rows, cols, scale, shift, rank_one=(row_u, row_v, col_u, col_v))
    torch.testing.assert_close(effkernels.separable_map(x, dense_rows, dense_cols, scale, shift), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the Triton tests compile the kernel for real")
@pytest.mark.usefixtures("sm90")
def test_training_launches_compile_for_hopper_with_tensor_cores_and_pipelined_loads():
    """Without a GPU the interpreter never compiles the kernel: compile the default launch shapes of
    lowfreq_crop's training bands for sm_90 (perf/tune_separable_map.py --sm90, in processes without
    TRITON_INTERPRET). The dots must be wgmma and, for bf16 and float32 out alike, the width loop's
    loads cp.async, issued ahead of the dots (Triton does not pipeline a nested loop by itself); no
    register may spill inside the loops of the bf16 training path, float32 out and the input
    pipeline's crop (float16 out, per-sample support), every dot on wgmma, and the bf16 path at most
    8 bytes around them, its width loop kept short; the float64 path (a GPU build without the CUDA
    C++ kernels runs it) must compile."""
    import tune_separable_map

    reports = tune_separable_map.main(["--sm90", "--bands", "96", "160", "--jobs", "2"])
    assert [(r["band"], r["x"], r["out"]) for r in reports] == [
        (band, x, out) for band in (96, 160) for x, out in (("uint8", "bfloat16"), ("uint8", "float32"),
                                                            ("float64", "float64"))] + [("crop", "uint8", "float16")]
    for report in reports:
        if report["x"] == "float64":  # IEEE float64 dots: compiles (it did not before out_dtype was given)
            assert report["mma_sync"] > 0, report
        else:
            assert report["wgmma"] > 0 and report["cp_async"] > 0 and report["mma_sync"] == 0, report
            assert report["loop_spills"] == 0, report
        if report["out"] == "bfloat16":  # Triton 3.6 spills 8 bytes around the loops at band 96, 3.8 none
            assert report["spill_bytes"] <= 8, report
            # The rank-one sum on the tensor cores: 215-246 instructions per warp (3.8 / 3.6); on the
            # CUDA cores it made the width loop 303-320.
            assert report["hot_loop"] <= 260, report


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("operators", ["mean-preserving", "random"])
def test_float32_output_where_the_shift_cancels(backend, dtype, operators):
    """Planes near the value the affine sends to 0 (normalisation): the output is much smaller than
    the sums behind it, and the Triton kernel centres x to keep float32 accuracy there."""
    x, rows, cols, scale, _ = random_operands(2, 3, 9, 33, 2, 3, 2, True, dtype, backend)
    if dtype != torch.uint8:
        x = (x.float() * 0.05 + 3).to(dtype)
    if operators == "mean-preserving":  # as crops, resizes and low-pass filters: rows sum to 1
        rows, cols = rows.abs() / rows.abs().sum((1, 3), keepdim=True), cols.abs() / cols.abs().sum((1, 3), keepdim=True)
    unshifted = reference.separable_map(x, rows, cols, scale, None, torch.float64)
    shift = -unshifted.mean((0, 2, 3)).to(scale.dtype)
    out = effkernels.separable_map(x, rows, cols, scale, shift, out_dtype=torch.float32)
    expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64)
    assert relative_error(out, expected) < TOLERANCE[torch.float32]


def _boxed_operands(dtype, out_dtype, device):
    """Per-sample operators (K = 2) and rank-one factors that are zero outside a random box per sample,
    with the boxes as separable_map's `support`; boxes start off block boundaries and end before H, W."""
    n, c, h, w, oh, ow = 3, 2, 70, 150, 9, 20
    x, rows, cols, scale, shift = random_operands(n, c, h, w, 2, oh, ow, True, dtype, device)
    generator = torch.Generator().manual_seed(5)
    top, left = torch.randint(0, 30, (n,), generator=generator), torch.randint(0, 80, (n,), generator=generator)
    height, width = torch.randint(5, 40, (n,), generator=generator), torch.randint(3, 70, (n,), generator=generator)
    inside_rows = (torch.arange(h) >= top[:, None]) & (torch.arange(h) < (top + height)[:, None])
    inside_cols = (torch.arange(w) >= left[:, None]) & (torch.arange(w) < (left + width)[:, None])
    inside_rows, inside_cols = inside_rows.to(device), inside_cols.to(device)
    rows, cols = rows * inside_rows[:, None, None], cols * inside_cols[:, None, None]
    acc = rows.dtype
    row_u, col_u = torch.randn(1, oh, dtype=acc, device=device), torch.randn(1, ow, dtype=acc, device=device)
    row_v = torch.randn(n, h, dtype=acc, device=device) * inside_rows / h**0.5  # scaled as the operators, so
    col_v = torch.randn(n, w, dtype=acc, device=device) * inside_cols / w**0.5  # float16 output stays finite
    support = torch.stack([top, top + height, left, left + width], 1).to(torch.int32).to(device)
    return x, rows, cols, scale, shift, (row_u, row_v, col_u, col_v), support


@pytest.mark.parametrize("dtype,out_dtype", [(torch.uint8, torch.bfloat16), (torch.uint8, torch.float16),
                                             (torch.uint8, torch.float32), (torch.float32, torch.float32)])
def test_triton_kernel_skips_x_outside_each_samples_support(triton_device, dtype, out_dtype):
    """With per-sample input bounds the kernel reads only the blocks of x inside them: the same map,
    centring (float32 out with a shift) and the rank-one term included; bounds that cut off part of
    the operators change the result."""
    from effkernels.triton.separable_map import prepare_separable_map

    x, rows, cols, scale, shift, rank_one, support = _boxed_operands(dtype, out_dtype, triton_device)
    expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64, rank_one)
    out = prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one, support=support)(x)
    whole = prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one)(x)
    assert relative_error(out, expected) < TOLERANCE[out_dtype]
    assert relative_error(out, whole) < TOLERANCE[out_dtype] / 10
    cut = support.clone()
    cut[:, 3] = cut[:, 2] + 1  # one column of each box
    short = prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one, support=cut)(x)
    assert relative_error(short, expected) > 0.1


def test_boxed_separable_map_matches_the_op_and_checks_support(backend):
    x, rows, cols, _, _, _, support = _boxed_operands(torch.uint8, torch.float16, backend)
    out = effkernels.ops.boxed_separable_map(x, rows, cols, torch.float16, support)
    expected = reference.separable_map(x, rows, cols, None, None, torch.float64)
    assert out.dtype == torch.float16 and relative_error(out, expected) < TOLERANCE[torch.float16]
    for bad, error, match in [(support.tolist(), TypeError, "support must be an int32 Tensor"),
                              (support.long(), TypeError, "support must be an int32 Tensor"),
                              (support[:2], ValueError, r"support must have shape \(N, 4\) = \(3, 4\)"),
                              (support[:, :3], ValueError, "support must have shape")]:
        with pytest.raises(error, match=match):
            effkernels.ops.boxed_separable_map(x, rows, cols, torch.float16, bad)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block_m,tail_m", [(16, 16), (32, 16), (16, 32)])
def test_triton_kernel_tail_rows_match_the_reference(triton_device, block_m, tail_m, out_dtype):
    """A tile of BLOCK_M rows plus TAIL_M rows in a second accumulator (heights between powers of
    two): several row tiles, the last cut off inside its main and inside its tail rows, with K = 2,
    the rank-one term and centring (float32 out with a shift): the map of the reference."""
    from effkernels.triton.separable_map import prepare_separable_map

    for oh in (block_m + tail_m - 5, block_m + tail_m + block_m // 2 + 3):
        x, rows, cols, scale, shift = random_operands(2, 2, 21, 19, 2, oh, 9, True, torch.uint8, triton_device)
        rank_one = random_rank_one(2, oh, 21, 9, 19, (False, True, False, True), rows.dtype, triton_device)
        tiles = dict(BLOCK_M=block_m, TAIL_M=tail_m, BLOCK_N=16, BLOCK_H=16, BLOCK_W=16, num_warps=4)
        out = prepare_separable_map(x.shape, x.dtype, rows, cols, scale, shift, out_dtype, rank_one, tiles)(x)
        expected = reference.separable_map(x, rows, cols, scale, shift, torch.float64, rank_one)
        assert out.dtype == out_dtype and not out.isnan().any()
        assert relative_error(out, expected) < TOLERANCE[out_dtype]
