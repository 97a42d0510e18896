"""effkernels.augment against timm's AugmentOp (Pillow) image by image, and rand_augment's draws.

Each op runs through apply_op with explicit per-sample magnitude, sign and interpolation, and through
timm's AugmentOp(prob=1) with the same values (timm's sign coin patched to the test's choice).
"""
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment

from effkernels import augment

FILL = (124, 116, 104)
MAGNITUDES = (0.0, 2.5, 5.3, 7.77, 10.0)
EXACT = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd")
ENHANCE = ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")
WARPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# Warps: apply_op places samples exactly as Pillow does (double) but interpolates in float32 where
# Pillow uses double, so a value that Pillow truncates from just below an integer comes out one level
# higher. Measured: at most 1 level, on at most 6 % of the pixels (a translation by a near-integer
# number of pixels); no pixel off by more than 1.
WARP_MAX_FRACTION_OFF_BY_MORE_THAN_2 = 0.001
WARP_MAX_FRACTION_OFF = 0.1


def make_images(n, channels, height, width, seed):
    """Random uint8 images, each channel squeezed into its own random range (so autocontrast and
    equalize have work to do), the last image with one constant channel."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, channels, height, width), generator=g)
    lo = torch.randint(0, 120, (n, channels, 1, 1), generator=g)
    hi = torch.randint(135, 256, (n, channels, 1, 1), generator=g)
    images = lo + raw * (hi - lo) // 255
    images[-1, 0] = 77
    return images.to(torch.uint8)


@pytest.fixture(params=[(4, 3, 37, 29), (1, 3, 29, 37), (2, 1, 31, 23)], ids=["rgb4x37x29", "rgb1x29x37", "gray2x31x23"])
def images(request):
    return make_images(*request.param, seed=sum(request.param))


def fill_for(images):
    return FILL if images.shape[1] == 3 else (FILL[0],)


# The grids above check the torch stages against Pillow; the Triton kernels are checked against the
# torch stages (test_triton_kernels_equal_the_torch_stages, every op) and against Pillow with random
# per-sample parameters below (the Triton interpreter is too slow for the whole grid).
def timm_reference(images, name, magnitudes, negates, bicubics, monkeypatch):
    """timm's AugmentOp(name, prob=1, magnitude) per image, with the given sign and interpolation."""
    outputs = []
    for image, magnitude, negate, bicubic in zip(images, magnitudes, negates, bicubics):
        monkeypatch.setattr(auto_augment, "_randomly_negate", lambda v, negate=negate: -v if negate else v)
        hparams = dict(img_mean=fill_for(images), interpolation=Image.BICUBIC if bicubic else Image.BILINEAR)
        op = auto_augment.AugmentOp(name, prob=1.0, magnitude=float(magnitude), hparams=hparams)
        array = image.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if image.shape[0] == 1 else array, "L" if image.shape[0] == 1 else "RGB")
        result = np.asarray(op(pil)).reshape(array.shape)
        outputs.append(torch.from_numpy(result.copy()).permute(2, 0, 1))
    return torch.stack(outputs)


@pytest.fixture(params=["torch", "triton"])
def pixel_kernels(request, monkeypatch):
    """The device whose images go through the chosen pixel kernels: the whole-batch torch stages
    (CPU), or the Triton kernels (the GPU's; on a machine without one, CPU images under the Triton
    interpreter)."""
    return "cpu" if request.param == "torch" else triton_device(monkeypatch)


def triton_device(monkeypatch):
    """The device whose images go through the Triton kernels: the GPU, or the CPU under the interpreter."""
    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setattr(augment, "_uses_triton", lambda images: True)
    return "cpu"


def compare(images, name, magnitude, negate, bicubic, monkeypatch, device="cpu"):
    """|apply_op - timm| per element; magnitude, negate, bicubic: one value for all or (N,) tensors;
    apply_op runs on `device`."""
    n = images.shape[0]
    magnitudes = torch.full((n,), magnitude, dtype=torch.float64) if not torch.is_tensor(magnitude) else magnitude
    negates = torch.full((n,), negate) if not torch.is_tensor(negate) else negate
    bicubics = torch.full((n,), bicubic) if not torch.is_tensor(bicubic) else bicubic
    ours = augment.apply_op(images.to(device), name, magnitudes, negate=negates, bicubic=bicubics,
                            fill=fill_for(images)).cpu()
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    expected = timm_reference(images, name, magnitudes.tolist(), negates.tolist(), bicubics.tolist(), monkeypatch)
    return (ours.int() - expected.int()).abs()


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("name", EXACT)
def test_pointwise_ops_match_pillow_exactly(images, name, magnitude, monkeypatch):
    if name == "PosterizeIncreasing" and magnitude == 10:
        # 0 bits kept: Pillow >= 12 rejects it, older Pillow (and apply_op) give 0 everywhere.
        assert augment.apply_op(images, name, magnitude, fill=fill_for(images)).eq(0).all()
        return
    assert compare(images, name, magnitude, False, True, monkeypatch).max() == 0


@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("name", ENHANCE)
def test_enhance_ops_match_pillow(images, name, magnitude, negate, monkeypatch):
    # Pillow blends 8-bit values in float32 and truncates; apply_op repeats that (0 here with Pillow 13),
    # 1 level allows for a build that contracts the blend into a fused multiply-add.
    assert compare(images, name, magnitude, negate, True, monkeypatch).max() <= 1


@pytest.mark.parametrize("bicubic", [False, True], ids=["bilinear", "bicubic"])
@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("name", WARPS)
def test_warps_match_pillow_up_to_interpolation_edges(images, name, magnitude, negate, bicubic, monkeypatch):
    diff = compare(images, name, magnitude, negate, bicubic, monkeypatch)
    assert (diff > 2).float().mean() <= WARP_MAX_FRACTION_OFF_BY_MORE_THAN_2
    assert (diff > 0).float().mean() <= WARP_MAX_FRACTION_OFF


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize"])
def test_histogram_ops_on_few_levels(name, monkeypatch, pixel_kernels):
    # Few distinct values in many pixels: equalize's table runs past 255 at the top values (Pillow
    # clips it) and autocontrast stretches wide gaps.
    g = torch.Generator().manual_seed(11)
    levels = torch.randint(0, 256, (5, 3, 6), generator=g)
    pick = torch.randint(0, 6, (5, 3, 41 * 37), generator=g)
    images = levels.gather(2, pick).view(5, 3, 41, 37).to(torch.uint8)
    assert compare(images, name, 5.0, False, True, monkeypatch, pixel_kernels).max() == 0


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 2, 2), (2, 3, 1, 5), (2, 1, 5, 2), (2, 3, 3, 4)],
                         ids=["1x1", "2x2", "1x5", "gray5x2", "3x4"])
def test_every_op_on_images_smaller_than_the_smoothing_kernel(shape, monkeypatch, pixel_kernels):
    # Pillow returns an image less than 3 pixels high or wide unfiltered (every pixel is border);
    # the sharpness stage's 3x3 smoothing once failed there for every op of the batch.
    images = make_images(*shape, seed=sum(shape))
    magnitude = torch.tensor([3.3, 7.7], dtype=torch.float64)
    negate, bicubic = torch.tensor([False, True]), torch.tensor([True, False])
    for name in augment.OPS:
        diff = compare(images, name, magnitude, negate, bicubic, monkeypatch, pixel_kernels)
        assert diff.max() <= (0 if name in EXACT else 1), name


@pytest.mark.parametrize("name", augment.OPS)
def test_per_sample_parameters(name, monkeypatch, pixel_kernels):
    images = make_images(6, 3, 33, 27, seed=7)
    g = torch.Generator().manual_seed(3)
    magnitude = torch.rand(6, generator=g, dtype=torch.float64) * 10
    if name == "PosterizeIncreasing":
        magnitude = magnitude.clamp(max=9.99)
    negate = torch.rand(6, generator=g) < 0.5
    bicubic = torch.rand(6, generator=g) < 0.5
    diff = compare(images, name, magnitude, negate, bicubic, monkeypatch, pixel_kernels)
    if name in WARPS:
        assert (diff > 2).float().mean() <= WARP_MAX_FRACTION_OFF_BY_MORE_THAN_2
    else:
        assert diff.max() <= (1 if name in ENHANCE else 0)


def test_op_list_is_timms_increasing_set():
    assert list(augment.OPS) == auto_augment._RAND_INCREASING_TRANSFORMS


# ---------------------------------------------------------------------------------- rand_augment
def test_rand_augment_is_deterministic_for_a_generator():
    images = make_images(8, 3, 24, 20, seed=1)
    first = augment.rand_augment(images, 9, generator=torch.Generator().manual_seed(5))
    second = augment.rand_augment(images, 9, generator=torch.Generator().manual_seed(5))
    other = augment.rand_augment(images, 9, generator=torch.Generator().manual_seed(6))
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_rand_augment_is_apply_op_with_its_draws():
    # The batched slots (every stage on the whole batch, each image taking its op's result) against
    # apply_op image by image, op after op, with the draws rand_augment made.
    images = make_images(24, 3, 19, 23, seed=6)
    out = augment.rand_augment(images, 8, num_ops=3, prob=0.7, generator=torch.Generator().manual_seed(9))
    plan = augment._draw_plan(24, 3, 8.0, 0.7, 0.5, torch.Generator().manual_seed(9), images.device)
    for i, image in enumerate(images):
        expected = image[None]
        for op, magnitude, negate, bicubic in zip(*(draws[:, i].tolist() for draws in plan)):
            if op < len(augment.OPS):
                expected = augment.apply_op(expected, augment.OPS[op], magnitude, negate=negate, bicubic=bicubic)
        assert torch.equal(out[i], expected[0])


def test_rand_augment_leaves_a_quarter_unchanged():
    # prob 0.5, 2 ops: an image is untouched when both coins say skip (1/4), or, rarely at magnitude 9
    # on 24x24 noise, when its ops happen to change nothing. 800 images: one standard deviation 0.015.
    images = make_images(800, 3, 24, 24, seed=2)
    out = augment.rand_augment(images, 9, generator=torch.Generator().manual_seed(0))
    unchanged = (out == images).flatten(1).all(1).float().mean().item()
    assert 0.21 <= unchanged <= 0.29, unchanged
    assert torch.equal(augment.rand_augment(images, 9, prob=0.0), images)
    assert torch.equal(augment.rand_augment(images, 9, num_ops=0), images)


def test_rand_augment_draws_match_timm_statistics():
    n, magnitude = 20000, 9.7
    g = torch.Generator().manual_seed(0)
    drawn = augment._draw_magnitudes((n,), magnitude, 0.5, g, torch.device("cpu"))
    assert drawn.max() == 10 and drawn.min() >= 0  # clipped at timm's _LEVEL_DENOM
    assert (drawn == 10).float().mean().item() == pytest.approx(0.274, abs=0.02)  # P(N(9.7, 0.5) > 10)
    uniform = augment._draw_magnitudes((n,), magnitude, float("inf"), g, torch.device("cpu"))
    assert uniform.min() >= 0 and uniform.max() < magnitude and uniform.mean().item() == pytest.approx(4.85, abs=0.1)


def test_rand_augment_all_ops_at_prob_one():
    images = make_images(64, 3, 21, 19, seed=3)
    out = augment.rand_augment(images, 10, prob=1.0, num_ops=3, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out != images).flatten(1).any(1).float().mean() > 0.9


def test_rand_augment_reads_nothing_back_and_copies_nothing_in():
    # The GPU hot path must queue without host syncs: no .item()/bool() on a tensor (_local_scalar_dense)
    # and no tensor made from Python data (lift_fresh: a host-to-device copy, followed by a stream sync).
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    images = make_images(6, 3, 16, 14, seed=5)
    with Recorder() as recorder:
        augment.rand_augment(images, 7, prob=1.0, num_ops=3, generator=torch.Generator().manual_seed(0))
    assert "aten.gather" in recorder.ops  # the recorder sees the ops
    assert not recorder.ops & {"aten._local_scalar_dense", "aten.lift_fresh", "aten.item", "aten.nonzero"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu_and_never_syncs():
    images = make_images(16, 3, 37, 29, seed=8)
    g = torch.Generator().manual_seed(4)
    magnitude = torch.rand(16, generator=g, dtype=torch.float64) * 10
    negate, bicubic = torch.rand(16, generator=g) < 0.5, torch.rand(16, generator=g) < 0.5
    for name in augment.OPS:
        on_cpu = augment.apply_op(images, name, magnitude, negate=negate, bicubic=bicubic)
        on_gpu = augment.apply_op(images.cuda(), name, magnitude, negate=negate, bicubic=bicubic).cpu()
        diff = (on_gpu.int() - on_cpu.int()).abs()
        if name in WARPS:  # CUDA's float32 rounding (and cos/sin ulps) differ: a level here and there
            assert (diff > 1).float().mean() <= WARP_MAX_FRACTION_OFF_BY_MORE_THAN_2, name
        else:
            assert diff.max() == 0, name
    generator = torch.Generator("cuda").manual_seed(0)
    images = images.cuda()  # a copy from pageable host memory syncs by itself
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment.rand_augment(images, 9, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.dtype == torch.uint8


# ---------------------------------------------------------------------------------- Triton kernels
def test_kernel_op_ids_follow_OPS():
    from effkernels.triton import rand_augment as kernels

    for name, constant in (("Rotate", kernels._ROTATE), ("SolarizeAdd", kernels._SOLARIZE_ADD),
                           ("ColorIncreasing", kernels._COLOR), ("ContrastIncreasing", kernels._CONTRAST),
                           ("BrightnessIncreasing", kernels._BRIGHTNESS), ("SharpnessIncreasing", kernels._SHARPNESS),
                           ("ShearX", kernels._SHEAR_X), ("TranslateYRel", kernels._TRANSLATE_Y)):
        assert augment.OPS.index(name) == constant.value, name
    assert augment.OPS[kernels._SOLARIZE_ADD.value + 1 : kernels._SHARPNESS.value + 1] == augment._ENHANCE_OPS


@pytest.mark.parametrize("shape", [(3, 3, 37, 29), (2, 1, 31, 23), (2, 3, 97, 91)], ids=["rgb", "gray", "many-blocks"])
def test_image_stats_kernel_equals_torch(shape, monkeypatch):
    """Histograms, extremes and grayscale sums of the stats kernel (97×91: each program sums several
    blocks before its atomics) against the torch ops."""
    from effkernels.triton import rand_augment as kernels

    images = make_images(*shape, seed=12)
    expected = augment._image_stats(images)
    stats = kernels.image_stats(images.to(triton_device(monkeypatch))).cpu()
    assert torch.equal(stats[..., :256], expected.hist)
    assert torch.equal(255 - stats[..., 256:257], expected.lo) and torch.equal(stats[..., 257:258], expected.hi)
    assert torch.equal(stats[:, 0, 258], expected.gray_total)


def test_lookup_table_kernel_equals_torch(monkeypatch):
    """Every pointwise op's table from the kernel against augment._pointwise_lut: magnitudes on the
    grid where int(M / 10 * k) changes (0, 2.5, 5, 10, ...) and random ones, channels with one value
    (AutoContrast keeps them, Equalize's step is 0), two or three values, full histograms, and one
    whose Equalize step sits on a multiple of 255."""
    from effkernels.triton import rand_augment as kernels

    generator = torch.Generator().manual_seed(14)
    magnitudes = torch.cat([torch.tensor([0.0, 2.5, 5.0, 7.5, 10.0, 1 / 11 * 10, 6.4, 9.9999]),
                            torch.rand(40, generator=generator, dtype=torch.float64) * 10]).double()
    n = magnitudes.shape[0]
    images = make_images(n, 3, 23, 29, seed=15)  # 667 pixels: Equalize's step is 1 or 2
    images[0] = 77  # one value per channel
    images[1] = images[1] // 128 * 200  # two values
    images[2, 1] = torch.randint(0, 3, (23, 29), generator=generator, dtype=torch.uint8) + 250
    # Equalize's step at a boundary: 510 pixels below the top value, step 510 // 255 = 2 exactly.
    plane = torch.randint(0, 200, (23 * 29,), generator=generator, dtype=torch.uint8)
    plane[torch.randperm(23 * 29, generator=generator)[:157]] = 230
    images[3, 0] = plane.view(23, 29)
    pointwise = [augment.OPS.index(name) for name in ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing",
                                                       "SolarizeIncreasing", "SolarizeAdd")]
    for op in [torch.full((n,), i) for i in pointwise] + [torch.randint(0, len(augment.OPS) + 1, (n,), generator=generator)]:
        expected = augment._pointwise_lut(op, magnitudes, augment._image_stats(images))
        device = triton_device(monkeypatch)
        stats = kernels.image_stats(images.to(device))
        ours = kernels.lookup_tables(stats, op.to(device), magnitudes.to(device), 23 * 29).cpu()
        assert torch.equal(ours.long(), expected), augment.OPS[int(op[0])] if op.unique().numel() == 1 else "mixed"


def test_triton_kernels_equal_the_torch_stages(monkeypatch):
    """One op slot of 60 images with all 15 ops drawn: the Triton kernels against the torch stages,
    equal for the pointwise and enhance ops, warps a level off on a few pixels at most (float32
    rounding of the taps' blends)."""
    images = make_images(60, 3, 23, 19, seed=13)
    plan = [p[0] for p in augment._draw_plan(60, 1, 7.0, 1.0, 0.5, torch.Generator().manual_seed(2), images.device)]
    assert len(set(plan[0].tolist())) == len(augment.OPS)
    op, magnitude, negate, bicubic = plan
    parameters = augment._draw_parameters(op, magnitude, negate, 23, 19)
    expected = augment._apply_slot(images, op, magnitude, bicubic, FILL, *parameters)
    device = triton_device(monkeypatch)
    ours = augment._apply_slot(images.to(device), *(t.to(device) for t in (op, magnitude, bicubic)), FILL,
                               *(t.to(device) for t in parameters)).cpu()
    diff = (ours.int() - expected.int()).abs().flatten(1)
    warps = torch.tensor([augment.OPS[i] in WARPS for i in plan[0].tolist()])
    assert diff[~warps].max() == 0
    assert diff[warps].max() <= 1 and (diff[warps] > 0).float().mean() <= 0.01


def test_rand_augment_kernels_compile_for_hopper(sm90):
    """Both kernels as the GPU compiles them (sm_90, no GPU needed; perf/sm90.py compiles in processes
    without TRITON_INTERPRET): the apply kernel has no float32 FMA (Pillow rounds a blend's product
    before its sum, and the enhance ops must match exactly), no spills, and room for 4 programs per SM."""
    from effkernels.triton import rand_augment as kernels

    module = "effkernels.triton.rand_augment"
    apply_types = dict(images_ptr="*u8", out_ptr="*u8", op_ptr="*i64", lut_ptr="*u8", alpha_ptr="*fp32",
                       stats_ptr="*i64", coefficients_ptr="*fp64", bicubic_ptr="*i1", fill0="i32", fill1="i32",
                       fill2="i32", H="i32", W="i32")
    lut_types = dict(stats_ptr="*i64", op_ptr="*i64", magnitude_ptr="*fp64", lut_ptr="*u8", pixels="i32")
    jobs = []
    for channels in (3, 1):
        jobs.append((module, "_apply_slot_kernel", apply_types,
                     dict(C=channels, WIDTH=kernels.STATS_WIDTH, BLOCK=kernels.APPLY_BLOCK), (),
                     dict(num_warps=4, enable_fp_fusion=False)))
        jobs.append((module, "_image_stats_kernel", dict(images_ptr="*u8", stats_ptr="*i64", HW="i32", SPLIT="i32"),
                     dict(C=channels, WIDTH=kernels.STATS_WIDTH, BLOCK=kernels.STATS_BLOCK), (), dict(num_warps=4)))
        jobs.append((module, "_lookup_table_kernel", lut_types, dict(C=channels, WIDTH=kernels.STATS_WIDTH), (),
                     dict(num_warps=1, enable_fp_fusion=False)))
    for job, ptx in zip(jobs, sm90.in_workers(sm90.compile_named, jobs, 2)):
        registers, spills, _ = sm90.assemble(ptx)
        if job[1] == "_apply_slot_kernel":
            assert ptx.count("fma.rn.f32") == 0 and spills == 0 and sm90.programs_fit(registers, 4) >= 4, job[3]
        elif job[1] == "_image_stats_kernel":
            assert "atom" in ptx or "red." in ptx
        else:  # AutoContrast's double products are rounded before their sum, as torch rounds them
            assert ptx.count("fma.rn.f64") == 0 and spills == 0, job[3]


def test_rand_augment_grayscale():
    images = make_images(5, 1, 17, 15, seed=4)
    out = augment.rand_augment(images, 5, fill=(100,), generator=torch.Generator().manual_seed(2))
    assert out.shape == images.shape and out.dtype == torch.uint8


# ---------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("call, error, word", [
    (lambda x: augment.rand_augment(x.float(), 5), TypeError, "uint8"),
    (lambda x: augment.rand_augment(x[0], 5), ValueError, "shape"),
    (lambda x: augment.rand_augment(x[:, :2], 5), ValueError, "shape"),
    (lambda x: augment.rand_augment(x, 10.5), ValueError, "magnitude"),
    (lambda x: augment.rand_augment(x, -1), ValueError, "magnitude"),
    (lambda x: augment.rand_augment(x, "9"), TypeError, "magnitude"),
    (lambda x: augment.apply_op(x, "Rotate", torch.ones(2, dtype=torch.bool)), TypeError, "magnitude must be real"),
    (lambda x: augment.rand_augment(x, 5, num_ops=-1), ValueError, "num_ops"),
    (lambda x: augment.rand_augment(x, 5, num_ops=1.5), TypeError, "num_ops"),
    (lambda x: augment.rand_augment(x, 5, prob=1.5), ValueError, "prob"),
    (lambda x: augment.rand_augment(x, 5, prob=-0.1), ValueError, "prob"),
    (lambda x: augment.rand_augment(x, 5, magnitude_std=-1), ValueError, "magnitude_std"),
    (lambda x: augment.rand_augment(x, 5, fill=(1, 2)), ValueError, "fill"),
    (lambda x: augment.rand_augment(x, 5, fill=(1, 2, 300)), ValueError, "fill"),
    (lambda x: augment.apply_op(x, "Cutout", 5), ValueError, "name"),
    (lambda x: augment.apply_op(x, "Rotate", torch.tensor([1.0, 11.0])), ValueError, "magnitude"),
    (lambda x: augment.apply_op(x, "Rotate", torch.ones(3)), ValueError, "magnitude"),
    (lambda x: augment.apply_op(x, "Rotate", 5, negate=1), TypeError, "negate"),
    (lambda x: augment.apply_op(x, "Rotate", 5, bicubic=torch.ones(2)), ValueError, "bicubic"),
    (lambda x: augment.apply_op(x.tolist(), "Rotate", 5), TypeError, "images"),
])
def test_bad_arguments_raise(call, error, word):
    with pytest.raises(error, match=word):
        call(make_images(2, 3, 8, 8, seed=0))
