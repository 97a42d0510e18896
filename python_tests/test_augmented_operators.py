"""lowfreq_crop_augmented's Triton operator builder and the GPU path that uses it.

Without a GPU the kernels run on CPU tensors under the interpreter (conftest sets TRITON_INTERPRET):
the `triton_path` fixture sends CPU calls down the path that CUDA calls take (cached plan, Triton
operator builder, Triton separable_map). The torch-ops composition is the reference of the builder;
effkernels.reference.lowfreq_crop_augmented (per-sample F.interpolate + torch.fft) that of the op.
"""

import re

import pytest
import torch

import effkernels
from effkernels import operators, ops, reference
from conftest import HAS_CUDA, TOLERANCE, relative_error

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]

CASES = [  # (N, H, W, size, out_size)
    (1, 12, 12, (6, 6), (6, 6)),  # batch 1, even bands: the rank-one factor rows
    (4, 13, 10, (7, 5), (7, 5)),  # H != W, odd bands
    (3, 11, 16, (6, 4), (9, 3)),  # even bands, resized up / down after the crop
    (5, 17, 9, (5, 8), (4, 8)),  # mixed parity: no rank-one term
]


@pytest.fixture
def device():
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def triton_path(monkeypatch, device):
    """lowfreq_crop_augmented on `device` takes the Triton path (on the CPU: under the interpreter)."""
    monkeypatch.setattr(ops, "_TRITON_OPERATOR_DEVICES", ("cuda", "cpu"))
    monkeypatch.setenv("EFFKERNELS_BACKEND", "triton")
    monkeypatch.setattr(ops, "_AUGMENTED_PLANS", {})
    if device == "cpu":  # float64 would pick the CUDA C++ separable_map when built (CI builds it): not on CPU tensors
        monkeypatch.setattr(ops, "_gpu_separable_map_kernel", lambda x_dtype: "triton")
    return device


def random_boxes(n, height, width, generator):
    """Fresh random boxes, with the extremes first: the whole image, a 1-pixel corner box, a full-height
    1-pixel-wide strip and a box touching the far borders."""
    extremes = [[0, 0, height, width], [height - 1, width - 1, 1, 1], [0, width // 2, height, 1],
                [1, 1, height - 1, width - 1]]
    boxes = []
    for _ in range(n):
        box_h = int(torch.randint(1, height + 1, (), generator=generator))
        box_w = int(torch.randint(1, width + 1, (), generator=generator))
        top = int(torch.randint(0, height - box_h + 1, (), generator=generator))
        left = int(torch.randint(0, width - box_w + 1, (), generator=generator))
        boxes.append([top, left, box_h, box_w])
    return torch.tensor((extremes + boxes)[:n] if n > 1 else boxes)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33])
def test_crop_resize_rows_have_at_most_two_adjacent_taps_in_the_gather_range(length):
    """The structure the kernel relies on, checked on operators.resize_operator itself: for every box
    size and offset, each row has one or two adjacent non-zeros (the identity for the whole axis), and
    every non-zero (i, j) lies in the kernel's integer row range of column j."""
    for box in range(1, length + 1):
        for offset in range(0, length - box + 1):
            crop = operators.resize_operator(box, length, length, offset)
            taps = crop != 0
            assert bool((taps.sum(1) >= 1).all()) and bool((taps.sum(1) <= 2).all())
            first = taps.int().argmax(1)
            assert bool(((taps.sum(1) == 1) | taps[torch.arange(length), (first + 1).clamp_max(length - 1)]).all())
            if box == length:
                assert torch.equal(crop, torch.eye(length, dtype=torch.float64))
            rows, cols = taps.nonzero().unbind(1)
            s = cols - offset
            assert bool(((2 * s - 1) * length <= (2 * rows + 1) * box).all())
            assert bool(((2 * rows + 1) * box <= (2 * s + 3) * length).all())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_builder_matches_torch_composition(device, case, dtype):
    n, height, width, size, out_size = case
    generator = torch.Generator().manual_seed(hash(case) % 2**31)
    boxes = random_boxes(n, height, width, generator)
    flip = torch.rand(n, generator=generator) < 0.5
    flip[0] = n > 1  # some flipped, some not, whatever the draw
    x = torch.rand(n, 3, height, width, dtype=dtype, device=device)
    ours = ops._augmented_operators_triton(x, list(size), list(out_size), boxes, flip, dtype)
    expected = ops.augmented_operators_torch(x.double().cpu(), list(size), list(out_size), boxes, flip, torch.float64)
    rows, cols, (row_u, row_v, col_u, col_v) = ours
    assert rows.shape == (n, 1, out_size[0], height) and cols.shape == (n, 1, out_size[1], width)
    assert rows.dtype == cols.dtype == dtype
    tolerance = 1e-14 if dtype == torch.float64 else 2e-7
    for name, actual, reference_value in zip(("rows", "cols"), (rows, cols), expected[:2]):
        assert relative_error(actual.cpu(), reference_value) < tolerance, name
    assert (row_v is None) == (not operators.has_rank_one_term(size))
    if row_v is not None:
        for name, actual, reference_value in zip(("row_v", "col_v"), (row_v, col_v), expected[2][1::2]):
            assert actual.dtype == dtype and actual.shape == reference_value.shape
            assert relative_error(actual.cpu(), reference_value) < tolerance, name
        assert row_u.shape == (1, out_size[0]) and col_u.shape == (1, out_size[1])


@pytest.mark.parametrize("case", CASES)
def test_augmented_triton_path_matches_reference_in_float64(triton_path, case):
    n, height, width, size, out_size = case
    generator = torch.Generator().manual_seed(1 + hash(case) % 2**31)
    boxes, flip = random_boxes(n, height, width, generator), torch.rand(n, generator=generator) < 0.5
    x = torch.rand(n, 3, height, width, dtype=torch.float64)
    out = effkernels.lowfreq_crop_augmented(x.to(triton_path), size, out_size, boxes=boxes, flip=flip, mean=MEAN, std=STD)
    expected = reference.lowfreq_crop_augmented(x, size, out_size, boxes=boxes, flip=flip, mean=MEAN, std=STD)
    assert len(ops._AUGMENTED_PLANS) == 1
    assert out.dtype == torch.float64
    assert relative_error(out.cpu(), expected) < TOLERANCE[torch.float64]


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_plan_rebuilds_operators_for_each_call(triton_path, out_dtype, monkeypatch):
    """uint8 in, the training path: the plan is made once, each call's boxes and flips reach the
    operators (rewritten in the plan's buffers, bf16 ones for bf16 output), and no call composes
    operators in Python."""
    n, height, width = 3, 14, 11
    generator = torch.Generator().manual_seed(7)
    calls = []
    for _ in range(2):
        boxes, flip = random_boxes(n, height, width, generator), torch.rand(n, generator=generator) < 0.5
        calls.append((torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8), boxes, flip))
    outs = []
    for x, boxes, flip in calls:
        outs.append(effkernels.lowfreq_crop_augmented(x.to(triton_path), (8, 6), (7, 5), boxes=boxes, flip=~flip,
                                                      mean=MEAN, std=STD, out_dtype=out_dtype))
        monkeypatch.setattr(operators, "resize_operator", None)  # a second call must not build operators in Python
    assert len(ops._AUGMENTED_PLANS) == 1
    for out, (x, boxes, flip) in zip(outs, calls):
        expected = reference.lowfreq_crop_augmented(x, (8, 6), (7, 5), boxes=boxes, flip=~flip, mean=MEAN, std=STD,
                                                    out_dtype=torch.float64)
        assert out.dtype == out_dtype
        assert relative_error(out.cpu(), expected) < TOLERANCE[out_dtype]


def test_plan_defaults_to_whole_image_without_flip(triton_path):
    x = torch.rand(2, 3, 12, 9, dtype=torch.float64)
    out = effkernels.lowfreq_crop_augmented(x.to(triton_path), 5)
    assert relative_error(out.cpu(), reference.lowfreq_crop(x, 5)) < TOLERANCE[torch.float64]


def test_gradient_through_triton_built_operators(triton_path):
    """Autograd on: fresh Triton-built operators feed the separable_map op, whose backward saves them."""
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64, device=triton_path, requires_grad=True)
    boxes, flip = torch.tensor([[1, 2, 8, 7], [0, 0, 12, 10]]), torch.tensor([True, False])
    grad_out = torch.randn(2, 3, 6, 5, dtype=torch.float64, device=triton_path)
    out = effkernels.lowfreq_crop_augmented(x, 6, (6, 5), boxes=boxes, flip=flip)
    out.backward(grad_out)
    x64 = x.detach().cpu().requires_grad_()
    expected = reference.lowfreq_crop_augmented(x64, 6, (6, 5), boxes=boxes, flip=flip)
    expected.backward(grad_out.cpu())
    assert not ops._AUGMENTED_PLANS
    assert relative_error(out.detach().cpu(), expected) < TOLERANCE[torch.float64]
    assert relative_error(x.grad.cpu(), x64.grad) < TOLERANCE[torch.float64]


BAD_ARGUMENTS = [
    (dict(boxes=torch.tensor([[0, 0, 17, 16]] * 2)), ValueError, "boxes must lie inside"),
    (dict(boxes=torch.tensor([[0, 0, 0, 16]] * 2)), ValueError, "boxes must lie inside"),
    (dict(boxes=torch.tensor([[-1, 0, 4, 4], [0, 0, 4, 4]])), ValueError, r"boxes must lie inside .* got \[\[-1, 0, 4, 4\]\]"),
    (dict(boxes=torch.tensor([[0, 9, 4, 8], [0, 0, 4, 4]], dtype=torch.int16)), ValueError, "boxes must lie inside"),
    (dict(boxes=torch.tensor([[0, 0, 8, 8]])), ValueError, r"boxes must have shape \(N, 4\)"),
    (dict(boxes=torch.zeros(2, 4)), TypeError, "boxes must be an integer Tensor"),
    (dict(boxes=[[0, 0, 8, 8]] * 2), TypeError, "boxes must be an integer Tensor"),
    (dict(flip=torch.tensor([1, 0])), TypeError, "flip must be a bool Tensor"),
    (dict(flip=torch.tensor([True])), TypeError, "flip must be a bool Tensor"),
    (dict(mean=[0.5]), ValueError, "mean must have one value per channel"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_ARGUMENTS)
@pytest.mark.parametrize("path", ["torch ops", "triton plan"])
def test_bad_arguments_raise_the_same_errors_on_both_paths(request, path, kwargs, error, match):
    device = request.getfixturevalue("triton_path") if path == "triton plan" else "cpu"
    x = torch.rand(2, 3, 16, 16, device=device)
    effkernels.lowfreq_crop_augmented(x, 8)  # a plan made by a good call does not skip the box checks
    with pytest.raises(error, match=match):
        effkernels.lowfreq_crop_augmented(x, 8, **kwargs)


def test_builder_compiles_for_hopper_with_ieee_float64_weights(sm90):
    """The kernel as the GPU compiles it (sm_90 PTX, no GPU needed; perf/sm90.py compiles in processes
    without TRITON_INTERPRET): it compiles for every operator dtype, its float64 weight math divides
    with IEEE rounding (div.rn.f64: the box scale and the row normalisation, per axis) and is not
    contracted into FMAs, so the weights equal resize_operator's."""
    import triton.language as tl

    from effkernels.triton import augmented_operators

    pointers = dict(boxes_ptr="i32", row_lowfreq_ptr="acc", col_lowfreq_ptr="acc", row_v_ptr="acc", col_v_ptr="acc",
                    rows_ptr="op", cols_ptr="op")
    names = augmented_operators._augmented_operators_kernel.arg_names
    jobs = []
    for op, acc, acc_dtype in (("bf16", "fp32", tl.float32), ("fp32", "fp32", tl.float32),
                               ("fp64", "fp64", tl.float64)):
        types = {name: "*" + pointers[name].replace("acc", acc).replace("op", op) if name in pointers else "i32"
                 for name in names}
        constexprs = dict(HAS_V=True, ACC_DTYPE=acc_dtype, INTERPRETED=False, BLOCK_O=16, BLOCK_J=64)
        jobs.append(("effkernels.triton.augmented_operators", "_augmented_operators_kernel", types, constexprs, (),
                     augmented_operators.LAUNCH_OPTIONS))
    for ptx in sm90.in_workers(sm90.compile_named, jobs, 2):
        # At least one division per axis for the scale and one for the normalisation (Triton 3.6
        # duplicates the code around the loop: more of them there), every one IEEE, no FMA.
        divisions = re.findall(r"\b(?:div|rcp)\.[\w.]*f64\b", ptx)
        assert len(divisions) >= 4 and set(divisions) == {"div.rn.f64"} and "fma.rn.f64" not in ptx, divisions
