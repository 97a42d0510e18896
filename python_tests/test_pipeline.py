"""effkernels.pipeline: the device input pipeline, on CPU (and on CUDA when there is one).

Tiny image folders written per module; every test runs the real code path (threaded reads, the
batched decode_jpeg call, one separable_map for crop + flip + resize, RandAugment, lowfreq_crop).
"""
import importlib.util
import io
import logging
import math
import os
import threading
import time
import types

import numpy as np
import pytest
import torch
import torchvision.transforms.transforms as tv_transforms
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

import effkernels
from effkernels import augment, crop_boxes, image_decode
from effkernels.crop_boxes import DRAWS, counter_uniforms, mix_seed, sample_boxes
from effkernels.curriculum import EFFICIENTTRAIN_PP_SIZES
from effkernels.data import EpochOrder
from effkernels.pipeline import EFFICIENTTRAIN_PP_REPLAY, DeviceImageLoader, DeviceTensorLoader, replayed_position
from effkernels.resized_crop import pad_images, resized_crop_flip

from conftest import HAS_CUDA

HAS_NVIMGCODEC = importlib.util.find_spec("nvidia.nvimgcodec") is not None  # CI installs it (requirements.txt)

CLASSES = ("ant", "bee", "cat")
# Identity folder: flat PNGs whose colour encodes the file, so a delivered image names its file.
IDENTITY = dict(out_size=16, size=16, rand_augment=False, scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=(0, 0, 0),
                std=(1, 1, 1), dtype=torch.float32, device="cpu", workers=2)


def _jpeg_bytes(array, mode=None, **options):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def _textured(rng, height, width):
    """A smooth colour field plus noise: an image whose crops, flips and augmentations all show."""
    yy, xx = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 2 * np.pi, 3)
    field = np.stack([np.sin(yy / (3 + c) + xx / (5 + 2 * c) + phase[c]) for c in range(3)], -1)
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(128 + 90 * field + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def textured_root(tmp_path_factory):
    """3 classes × 8 JPEGs of assorted sizes (portrait, landscape, square)."""
    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir()
        for i in range(8):
            height, width = rng.integers(24, 56, 2)
            (root / name / f"{i}.jpg").write_bytes(_jpeg_bytes(_textured(rng, height, width)))
    return str(root)


def _identity_colour(file_id):
    return np.array([40 + 8 * (file_id // 24), 40 + 8 * (file_id % 24), 200], dtype=np.uint8)


@pytest.fixture(scope="module")
def identity_root(tmp_path_factory):
    """3 classes × 8 flat 20×20 PNGs (lossless), file k coloured _identity_colour(k)."""
    root = tmp_path_factory.mktemp("identity")
    for label, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(8):
            colour = _identity_colour(label * 8 + i)
            Image.fromarray(np.broadcast_to(colour, (20, 20, 3)).copy()).save(root / name / f"{i}.png")
    return str(root)


def _file_ids(images):
    """The file ids of identity-folder images delivered with IDENTITY settings (values in [0, 1])."""
    colour = (images.mean((2, 3)) * 255).round().long()
    return ((colour[:, 0] - 40) // 8 * 24 + (colour[:, 1] - 40) // 8).tolist()


def _collect(loader, epoch=0, start_batch=0):
    return [(x.clone(), y.clone()) for x, y in loader.epoch(epoch, start_batch)]


# ------------------------------------------------------------------------------------ crop boxes
class _ScriptedTorch(types.SimpleNamespace):
    """Stands in for `torch` inside torchvision's get_params: its uniform_ and randint calls are
    answered from one row of our uniforms, attempt by attempt, as sample_boxes reads them."""

    def __init__(self, row):
        super().__init__(log=torch.log, tensor=torch.tensor, exp=torch.exp)
        self.row, self.uniform_calls, self.randint_calls = row, 0, 0

    def empty(self, *size):
        def uniform_(low, high):
            call = self.uniform_calls
            self.uniform_calls += 1
            column = (crop_boxes.AREA_DRAWS if call % 2 == 0 else crop_boxes.RATIO_DRAWS).start + call // 2
            return torch.tensor(float(low) + (float(high) - float(low)) * self.row[column], dtype=torch.float64)

        return types.SimpleNamespace(uniform_=uniform_)

    def randint(self, low, high, size):
        column = (crop_boxes.TOP_DRAW, crop_boxes.LEFT_DRAW)[self.randint_calls]
        self.randint_calls += 1
        return torch.tensor([low + math.floor(self.row[column] * (high - low))])


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.35, 1.0), (3 / 4, 4 / 3)),
                                         ((0.9, 1.0), (0.5, 0.6))])
def test_boxes_follow_torchvision_get_params(monkeypatch, scale, ratio):
    """torchvision's own get_params, fed the same draws, picks the same box for every sample,
    through the attempts and the fallback (the central crop, clamped to either ratio bound)."""
    rng = np.random.default_rng(1)
    count = 600
    heights = rng.integers(1, 90, count)
    widths = np.where(np.arange(count) % 3 == 0, rng.integers(1, 9, count), rng.integers(1, 90, count))
    uniforms = counter_uniforms(np.arange(count), 0, DRAWS)
    ours = sample_boxes(heights, widths, uniforms, scale, ratio)
    fallbacks = 0
    for n in range(count):
        scripted = _ScriptedTorch(uniforms[n])
        monkeypatch.setattr(tv_transforms, "torch", scripted)
        theirs = tv_transforms.RandomResizedCrop.get_params(torch.empty(3, heights[n], widths[n]), scale, ratio)
        assert tuple(ours[n, :4]) == theirs, (n, heights[n], widths[n])
        fallbacks += scripted.randint_calls == 0
    assert 0 < fallbacks < count
    assert ((ours[:, 4] == 0) | (ours[:, 4] == 1)).all() and 0.4 < ours[:, 4].mean() < 0.6


def test_counter_uniforms_depend_on_seed_and_stream_only():
    seeds = np.array([5, 2**62 + 3, 17, 5], dtype=np.uint64)
    u = counter_uniforms(seeds, 0, DRAWS)
    assert u.shape == (4, DRAWS) and ((u >= 0) & (u < 1)).all()
    np.testing.assert_array_equal(u[0], u[3])  # same seed, same draws, wherever it sits in a batch
    np.testing.assert_array_equal(counter_uniforms(seeds[2:3], 0, DRAWS)[0], u[2])
    assert not np.array_equal(counter_uniforms(seeds, 1, DRAWS), u)  # a new replay round draws anew
    many = counter_uniforms(np.arange(4000), 0, 8)
    assert abs(many.mean() - 0.5) < 0.01 and abs(np.corrcoef(many[:, 0], many[:, 1])[0, 1]) < 0.05
    assert mix_seed(1, 2, 3) != mix_seed(3, 2, 1) and 0 <= mix_seed(2**70, -1) < 2**63


# -------------------------------------------------------------------- crop + flip + resize map
@pytest.mark.cuda_emulated  # without a GPU, backend "cuda" runs the CUDA C++ kernel emulated
@pytest.mark.parametrize("out_size", [16, 40])
def test_resized_crop_flip_matches_torchvision(out_size, backend):
    """One separable_map over the padded batch = torchvision's resized_crop(antialias) + hflip on
    each image, within a level or two (downscaled and upscaled boxes, portrait and landscape
    images), on each separable_map kernel."""
    rng = np.random.default_rng(2)
    images = [torch.from_numpy(_textured(rng, *rng.integers(9, 70, 2))).permute(2, 0, 1).contiguous()
              for _ in range(12)]
    padded, sizes = pad_images(images, torch.device(backend))
    assert padded.shape == (12, 3, max(h for h, _ in sizes), max(w for _, w in sizes))
    heights, widths = zip(*sizes)
    boxes = sample_boxes(heights, widths, counter_uniforms(np.arange(12), 0, DRAWS), (0.08, 1.0), (3 / 4, 4 / 3))
    out = resized_crop_flip(padded, torch.from_numpy(boxes).to(backend), out_size).cpu()
    assert out.dtype == torch.uint8 and out.shape == (12, 3, out_size, out_size)
    assert 0 < boxes[:, 4].sum() < 12
    for image, box, result in zip(images, boxes.tolist(), out):
        top, left, height, width, flip = box
        expected = TF.resized_crop(image, top, left, height, width, [out_size, out_size], antialias=True)
        expected = TF.hflip(expected) if flip else expected
        difference = (result.int() - expected.int()).abs()
        assert difference.max() <= 2 and difference.float().mean() < 0.35


def test_pad_images_shrinks_images_over_max_side():
    tall = torch.randint(0, 256, (3, 100, 50), dtype=torch.uint8)
    small = torch.randint(0, 256, (3, 10, 30), dtype=torch.uint8)
    padded, sizes = pad_images([tall, small], torch.device("cpu"), max_side=40)
    assert sizes == [(40, 20), (10, 30)] and padded.shape == (2, 3, 40, 30)
    torch.testing.assert_close(padded[1, :, :10, :30], small)
    assert padded[1, :, 10:].eq(0).all() and padded[0, :, :, 20:].eq(0).all()
    expected = TF.resize(tall, [40, 20], antialias=True)
    assert (padded[0, :, :, :20].int() - expected.int()).abs().max() <= 1


def test_pad_kernel_matches_the_copies(triton_device):
    """The GPU's one-launch padding (the Triton kernel; without a GPU under the interpreter) equals
    the per-image copies into a zeroed batch: portrait, landscape and repeated images, 1 and 3
    channels, rows wider than the kernel's column block."""
    from effkernels.triton.pad_images import BLOCK, pad_into_batch

    generator = torch.Generator().manual_seed(3)
    for channels in (3, 1):
        shapes = [(17, 9), (5, BLOCK + 7), (12, 30), (1, 1)]
        images = [torch.randint(0, 256, (channels, *shape), dtype=torch.uint8, generator=generator) for shape in shapes]
        images.append(images[0])  # a bad file's slot takes another image of the batch
        padded = pad_into_batch([image.to(triton_device) for image in images], 19, BLOCK + 9).cpu()
        assert padded.shape == (5, channels, 19, BLOCK + 9)
        for slot, image in zip(padded, images):
            expected = torch.zeros_like(slot)
            expected[:, : image.shape[1], : image.shape[2]] = image
            assert torch.equal(slot, expected)


def test_pad_kernel_compiles_for_hopper(sm90):
    """The padding kernel as the GPU compiles it (sm_90; perf/sm90.py compiles without the interpreter)."""
    from effkernels.triton.pad_images import BLOCK

    types = dict(flat_ptr="*u8", layout_ptr="*i64", out_ptr="*u8", H="i32", W="i32")
    job = ("effkernels.triton.pad_images", "_pad_kernel", types, dict(C=3, BLOCK=BLOCK), (), dict(num_warps=2))
    registers, spills, _ = sm90.assemble(sm90.in_workers(sm90.compile_named, [job], 1)[0])
    assert spills == 0 and registers <= 64


# ------------------------------------------------------------------------- odd and bad files
@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """(root, {name: (path, expected (H, W) or None for a file that must be skipped)}, the RGB array);
    the files lie in root's one class folder."""
    root = tmp_path_factory.mktemp("odd")
    folder = root / "only"
    folder.mkdir()
    rng = np.random.default_rng(3)
    rgb = _textured(rng, 30, 41)
    good = _jpeg_bytes(rgb)
    rgba = np.dstack([rgb, np.full((30, 41, 1), 128, np.uint8)])
    files = {
        "good.jpg": (good, (30, 41)),
        "progressive.jpg": (_jpeg_bytes(rgb, progressive=True), (30, 41)),
        "gray.jpg": (_jpeg_bytes(rgb[..., 0]), (30, 41)),
        "cmyk.jpg": (_jpeg_bytes(rgb, mode="CMYK"), (30, 41)),
        "rgba.png": (None, (30, 41)),
        "image.bmp": (None, (30, 41)),
        "png_named.jpg": (None, (30, 41)),
        "empty.jpg": (b"", None),
        "truncated.jpg": (good[: len(good) // 2], None),
        "text.jpg": (b"this is not an image\n" * 20, None),
        "huge.png": (None, None),
    }
    for name, (data, _) in files.items():
        path = folder / name
        if name == "rgba.png":
            Image.fromarray(rgba).save(path)
        elif name == "image.bmp":
            Image.fromarray(rgb).save(path)
        elif name == "png_named.jpg":
            Image.fromarray(rgb).save(path, format="PNG")
        elif name == "huge.png":
            Image.fromarray(np.zeros((300, 400), np.uint8)).save(path)  # over the max_pixels used below
        else:
            path.write_bytes(data)
    return str(root), {name: (str(folder / name), size) for name, (_, size) in files.items()}, rgb


MAX_PIXELS = 100_000


def _read_and_decode(files, decoder):
    skip_log = image_decode.SkipLog()
    read = {name: image_decode.read_image_file(path, skip_log, MAX_PIXELS, False) for name, (path, _) in files.items()}
    jpegs = [name for name, r in read.items() if r is not None and r.jpeg is not None]
    jpeg_decoder = image_decode.jpeg_decoder(decoder, torch.device("cpu"))
    decoded = dict(zip(jpegs, image_decode.decode_jpeg_batch([read[n] for n in jpegs], jpeg_decoder, skip_log,
                                                             MAX_PIXELS)))
    images = {name: decoded[name] if name in decoded else (r.image if r is not None else None)
              for name, r in read.items()}
    return images, read, skip_log


@pytest.mark.parametrize("decoder", image_decode.JPEG_DECODERS)
def test_odd_files_decode_or_skip_with_one_warning_each(odd_files, caplog, decoder):
    _, files, rgb = odd_files
    with caplog.at_level(logging.WARNING, logger="effkernels.image_decode"):
        images, read, skip_log = _read_and_decode(files, decoder)
        _read_and_decode(files, decoder)  # a second pass over the same paths (a new log) warns again, once
    for name, (path, size) in files.items():
        if size is None:
            assert images[name] is None, name
            continue
        assert images[name].dtype == torch.uint8 and images[name].shape == (3, *size), name
        pil = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)  # Pillow as the oracle
        assert (images[name].float() - pil.float()).abs().mean() < 0.5, name
    # Only the sequential colour JPEGs (and the truncated one, whose header is intact) take the batched route.
    assert sorted(n for n, r in read.items() if r is not None and r.jpeg is not None) == ["good.jpg", "truncated.jpg"]
    assert images["rgba.png"].permute(1, 2, 0).numpy().tolist() == rgb.tolist()  # PNG: lossless, alpha dropped
    assert torch.equal(images["gray.jpg"][0], images["gray.jpg"][1])  # grayscale expanded to 3 channels
    skipped = [name for name, (_, size) in files.items() if size is None]
    assert len(skip_log) == len(skipped) and all(files[name][0] in skip_log for name in skipped)
    messages = [r.getMessage() for r in caplog.records]
    for name in skipped:
        assert sum(files[name][0] in m for m in messages) == 2, name


@pytest.mark.parametrize("decoder", image_decode.JPEG_DECODERS)
def test_loader_survives_a_folder_of_odd_files(odd_files, caplog, decoder):
    root, files, _ = odd_files
    count, skipped = len(files), sum(size is None for _, size in files.values())
    loader = DeviceImageLoader(root, count, out_size=16, device="cpu", dtype=torch.float32, max_pixels=MAX_PIXELS,
                               workers=2, decoder=decoder)
    with caplog.at_level(logging.WARNING, logger="effkernels.image_decode"):
        for epoch in range(2):
            (images, labels), = loader.epoch(epoch)  # bad files' slots hold good images of the batch
            assert images.shape == (count, 3, 16, 16) and torch.isfinite(images).all() and labels.eq(0).all()
    assert loader.stats["files_skipped"] == skipped
    assert sum("skipping image" in r.getMessage() for r in caplog.records) == skipped  # once per file, not per epoch
    assert loader.stats["images_delivered"] == 2 * count and loader.stats["images_decoded"] == 2 * (count - skipped)


def test_a_batch_of_only_bad_files_is_dropped(tmp_path):
    (tmp_path / "x").mkdir()
    for i in range(2):
        (tmp_path / "x" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    loader = DeviceImageLoader(str(tmp_path), 2, out_size=8, device="cpu", workers=1)
    assert list(loader.epoch(0)) == []
    assert loader.stats["batches_dropped"] == 1 and loader.stats["files_skipped"] == 2


def _saved(image, format_, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=format_, **options)
    return buffer.getvalue()


def _rare_files():
    """name: (bytes, the image the reader must give, None for a file it must skip, and whether the
    file takes the batched JPEG route). Legal but rare JPEG headers, formats whose size only
    decoding tells, and JPEGs broken before their frame header."""
    rgb = _textured(np.random.default_rng(5), 20, 30)
    good = _jpeg_bytes(rgb)
    good_image = decode_image(torch.frombuffer(bytearray(good), dtype=torch.uint8), mode=ImageReadMode.RGB)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    gif = _saved(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first_frame = torch.from_numpy(np.array(Image.open(io.BytesIO(gif)).convert("RGB"))).permute(2, 0, 1)
    sof = good.index(b"\xff\xc0")
    return {
        "fill_bytes.jpg": (good[:2] + b"\xff\xff" + good[2:], good_image, True),  # 0xFF fill before a marker
        "restart_marker.jpg": (good[:2] + b"\xff\xd0" + good[2:], good_image, True),  # a standalone marker
        "scan_first.jpg": (b"\xff\xd8\xff\xda\x00\x08" + bytes(20), None, False),  # no frame header at all
        "cut_in_frame_header.jpg": (good[: sof + 6], None, False),
        # Stray bytes where a marker must be: the walk gives up, the CPU decoder skips them.
        "stray_bytes.jpg": (good[:2] + b"\xff\xe0\x00\x04\x00\x00\x12\x34" + good[2:], good_image, False),
        "animated.gif": (gif, first_frame, False),
        "gray16.png": (_saved(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
                       torch.from_numpy(rgb[..., 0]).expand(3, -1, -1), False),  # scaled to 8 bits, not clipped
        # Over MAX_PIXELS, which only decoding tells for a BMP.
        "big.bmp": (_saved(Image.fromarray(np.zeros((400, 300, 3), np.uint8)), "BMP"), None, False),
    }


@pytest.mark.parametrize("name", sorted(_rare_files()))
def test_rare_and_damaged_headers_take_the_right_route(tmp_path, caplog, name):
    data, expected, batched = _rare_files()[name]
    path = tmp_path / name
    path.write_bytes(data)
    skip_log = image_decode.SkipLog()
    with caplog.at_level(logging.WARNING, logger="effkernels.image_decode"):
        read = image_decode.read_image_file(str(path), skip_log, MAX_PIXELS, False)
        if read is not None and read.jpeg is not None:
            decoder = image_decode.jpeg_decoder("torchvision", torch.device("cpu"))
            image, = image_decode.decode_jpeg_batch([read], decoder, skip_log, MAX_PIXELS)
        else:
            image = None if read is None else read.image
    assert (read is not None and read.jpeg is not None) == batched
    if expected is None:
        assert image is None and str(path) in skip_log
        assert [str(path) in r.getMessage() for r in caplog.records] == [True]
    else:
        assert image is not None and image.dtype == torch.uint8 and torch.equal(image, expected)
        assert len(skip_log) == 0


def test_files_gone_or_unreadable_after_listing_are_skipped(textured_root, tmp_path, caplog):
    """A file deleted, or replaced by a directory, between the folder's listing and its reading (a
    long run over a live folder): reported once, left out; the epoch goes on."""
    import shutil

    root = tmp_path / "live"
    shutil.copytree(textured_root, root)
    loader = DeviceImageLoader(str(root), 4, out_size=16, device="cpu", dtype=torch.float32, workers=2)
    (root / CLASSES[0] / "0.jpg").unlink()
    (root / CLASSES[1] / "0.jpg").unlink()
    (root / CLASSES[1] / "0.jpg").mkdir()
    with caplog.at_level(logging.WARNING, logger="effkernels.image_decode"):
        batches = list(loader.epoch(0))
    assert sum(len(labels) for _, labels in batches) == 24 and all(torch.isfinite(x).all() for x, _ in batches)
    assert loader.stats["files_skipped"] == 2
    unreadable = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(unreadable) == 2 and any("0.jpg" in m and CLASSES[0] in m for m in unreadable)


# ----------------------------------------------------------------- what the loader delivers
def test_batch_equals_the_pipeline_stages_composed(textured_root):
    """A delivered batch = EpochOrder's files, decoded, sample_boxes' crops (resized_crop_flip),
    rand_augment with the per-batch seed, lowfreq_crop + normalisation: nothing else, in this order."""
    kwargs = dict(out_size=24, size=12, magnitude=7, scale=(0.35, 1.0), seed=11, dtype=torch.float32, device="cpu")
    loader = DeviceImageLoader(textured_root, 4, **kwargs)
    images, labels = next(iter(loader.epoch(2, start_batch=1)))
    batch = EpochOrder(24, 4, seed=11, epoch=2).items[4:8]
    decoded = [decode_image(loader.samples[i][0], mode=ImageReadMode.RGB) for i, _ in batch]
    padded, sizes = pad_images(decoded, torch.device("cpu"))
    heights, widths = zip(*sizes)
    uniforms = counter_uniforms([s for _, s in batch], 0, DRAWS)
    boxes = sample_boxes(heights, widths, uniforms, (0.35, 1.0), (3 / 4, 4 / 3))
    crops = resized_crop_flip(padded, torch.from_numpy(boxes), 24)
    generator = torch.Generator().manual_seed(mix_seed(11, 2, 0, 1, 0))
    crops = augment.rand_augment(crops, 7, generator=generator)
    expected = effkernels.lowfreq_crop(crops, 12, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                       out_dtype=torch.float32)
    assert labels.tolist() == [loader.samples[i][1] for i, _ in batch]
    torch.testing.assert_close(images, expected, rtol=0, atol=0)


def test_nvimgcodec_delivers_what_torchvision_does(textured_root):
    """On a CPU both JPEG decoders are libjpeg-turbo: the same batches, bit for bit."""
    make = lambda decoder: DeviceImageLoader(textured_root, 4, out_size=24, size=16, seed=2, device="cpu",
                                             dtype=torch.float32, workers=2, decoder=decoder)
    for (x1, y1), (x2, y2) in zip(_collect(make("torchvision")), _collect(make("nvimgcodec")), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_classes_and_labels_follow_image_folder(textured_root):
    from torchvision.datasets import ImageFolder

    loader = DeviceImageLoader(textured_root, 4, out_size=8, device="cpu")
    reference = ImageFolder(textured_root)
    assert loader.classes == reference.classes and loader.samples == reference.samples


def test_hidden_files_and_folders_are_no_data_and_an_empty_class_keeps_its_label(textured_root, tmp_path, caplog):
    """What editors, notebooks and copies from a Mac leave in a dataset folder: hidden folders
    (.ipynb_checkpoints) are no classes and hidden files ("._0.jpg") no samples, in the device
    loader and the CPU path's ImageFolder alike; a class folder with no image keeps its label
    (train and val agree on labels) and is reported."""
    import shutil

    from effkernels import data
    from torchvision.datasets import ImageFolder

    root = tmp_path / "data"
    shutil.copytree(textured_root, root)
    (root / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / CLASSES[0] / "0.jpg", root / ".ipynb_checkpoints" / "0-checkpoint.jpg")
    (root / CLASSES[0] / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / CLASSES[0] / "1.jpg", root / CLASSES[0] / ".ipynb_checkpoints" / "1-checkpoint.jpg")
    (root / CLASSES[1] / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "dog").mkdir()
    with caplog.at_level(logging.WARNING, logger="effkernels.data"):
        loader = DeviceImageLoader(str(root), 4, out_size=8, device="cpu")
        folder = data.image_folder(str(root))
    expected = ImageFolder(textured_root)  # the same data as before the clutter
    assert loader.classes == folder.classes == [*CLASSES, "dog"]
    relative = [(os.path.relpath(path, root), label) for path, label in loader.samples]
    assert relative == [(os.path.relpath(path, textured_root), label) for path, label in expected.samples]
    assert folder.samples == loader.samples
    assert [r.getMessage().count("holds no image: label 3") for r in caplog.records] == [1, 1]
    (root / "dog").rmdir()
    (root / ".git").mkdir()
    for name in CLASSES:
        shutil.rmtree(root / name)
    with pytest.raises(ValueError, match="root must hold class sub-folders, got none"):
        DeviceImageLoader(str(root), 4, out_size=8, device="cpu")


def test_same_seed_same_batches_other_seed_differs(textured_root):
    make = lambda seed: DeviceImageLoader(textured_root, 4, out_size=24, size=16, seed=seed, device="cpu", workers=3,
                                          dtype=torch.bfloat16)
    first, second, other = _collect(make(5)), _collect(make(5)), _collect(make(6))
    assert len(first) == 6 and first[0][0].dtype == torch.bfloat16 and first[0][0].shape == (4, 3, 16, 16)
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not any(torch.equal(x1, x3) for (x1, _), (x3, _) in zip(first, other))
    assert not torch.equal(first[0][0], _collect(make(5), epoch=1)[0][0])  # epochs differ too


@pytest.mark.parametrize("replay,start_batch", [(1, 3), (2, 3), (2, 4)])
def test_resume_yields_the_tail_of_a_full_run(textured_root, replay, start_batch):
    loader = DeviceImageLoader(textured_root, 4, out_size=24, size=12, replay=replay, seed=3, device="cpu")
    full = _collect(loader, epoch=1)
    resumed = _collect(DeviceImageLoader(textured_root, 4, out_size=24, size=12, replay=replay, seed=3, device="cpu"),
                       epoch=1, start_batch=start_batch)
    assert len(full) == loader.batches_per_epoch() == 6 * replay and len(resumed) == len(full) - start_batch
    for (x1, y1), (x2, y2) in zip(full[start_batch:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("replay,start_batch", [(1, 0), (2, 3), (2, 12)])
def test_epochs_run_on_as_the_epochs_one_after_another(textured_root, replay, start_batch):
    """epochs(e, b) delivers what epoch(e, b), epoch(e + 1), ... do, and `position` says where a
    resumed run would start: (e, b) within an epoch, (e + 1, 0) after its last batch."""
    make = lambda: DeviceImageLoader(textured_root, 4, out_size=24, size=12, replay=replay, seed=8, device="cpu",
                                     dtype=torch.float32, workers=2)
    per_epoch = make().batches_per_epoch()
    expected = _collect(make(), 1, start_batch) + _collect(make(), 2) + _collect(make(), 3)[:2]
    with make().epochs(1, start_batch) as batches:
        assert batches.position == (1, start_batch)
        got, positions = [], []
        for _ in range(len(expected)):
            got.append(next(batches))
            positions.append(batches.position)
    assert len(got) == 2 * per_epoch - start_batch + 2
    for (x1, y1), (x2, y2) in zip(expected, got, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    after = lambda epoch, batch: (epoch, batch + 1) if batch + 1 < per_epoch else (epoch + 1, 0)
    delivered = [(1, b) for b in range(start_batch, per_epoch)] + [(2, b) for b in range(per_epoch)] + [(3, 0), (3, 1)]
    assert positions == [after(*position) for position in delivered]


def test_epochs_make_the_next_epoch_ahead_of_its_first_batch(textured_root):
    """The background thread crosses an epoch's end while the consumer still takes its last batches."""
    loader = DeviceImageLoader(textured_root, 4, out_size=24, size=12, device="cpu", workers=2, ready_ahead=2)
    made, augment_batch = [], loader._augment
    loader._augment = lambda *args: (made.append(None), augment_batch(*args))[1]
    with loader.epochs(0) as batches:
        for _ in range(loader.batches_per_epoch()):
            next(batches)
        deadline = time.monotonic() + 30
        while len(made) <= loader.batches_per_epoch() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batches.position == (1, 0) and len(made) > loader.batches_per_epoch()


def test_stages_deliver_what_an_iterator_per_stage_does(textured_root):
    """stages(e, b, plan) = for each stage, set_stage and epochs() from where the stage before
    stopped (a replay change carried over by replayed_position), that stage's count of batches;
    then it ends."""
    make = lambda: DeviceImageLoader(textured_root, 4, out_size=24, seed=6, device="cpu", dtype=torch.float32,
                                     workers=2)
    plan = [(3, 24, 0, 2), (5, 12, 5, 2), (4, 16, 9, 1), (7, 20, 2, 3)]
    expected, positions, position, replay = [], [], (1, 1), 2
    per_stage = make()
    for count, size, magnitude, stage_replay in plan:
        if stage_replay != replay:
            position, replay = (position[0], replayed_position(position[1], replay, stage_replay)), stage_replay
        per_stage.set_stage(size=size, magnitude=magnitude, replay=stage_replay)
        with per_stage.epochs(*position) as batches:
            for _ in range(count):
                expected.append(next(batches))
                positions.append(batches.position)
            position = batches.position
    loader = make()
    with loader.stages(1, 1, plan) as batches:
        got = []
        for images, labels in batches:
            got.append((images, labels))
            assert batches.position == positions[len(got) - 1]
    assert len(got) == sum(count for count, *_ in plan) and loader.stats["replay"] == 3
    for (x1, y1), (x2, y2) in zip(expected, got, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert (loader.size, loader.magnitude, loader.replay) == (24, 9, 1)  # the loader's own stage is left alone


def test_stages_make_the_next_stage_ahead_of_its_first_batch(textured_root):
    loader = DeviceImageLoader(textured_root, 4, out_size=24, device="cpu", workers=2, ready_ahead=2)
    made, augment_batch = [], loader._augment
    loader._augment = lambda *args: (made.append(args[-2].size), augment_batch(*args))[1]
    with loader.stages(0, 0, [(2, 24, 3, 1), (3, 12, 6, 2)]) as batches:
        next(batches), next(batches)
        deadline = time.monotonic() + 30
        while 12 not in made and time.monotonic() < deadline:
            time.sleep(0.01)
        assert made[:2] == [24, 24] and 12 in made  # the second stage's first batches, before they are asked for


def test_a_dropped_batch_still_moves_the_position(tmp_path):
    (tmp_path / "x").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        (tmp_path / "x" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
        (tmp_path / "x" / f"good{i}.jpg").write_bytes(_jpeg_bytes(_textured(rng, 20, 30)))
    paths = sorted(str(p) for p in (tmp_path / "x").iterdir())
    # A seed whose epoch 0 puts the two bad files in its first batch of 2.
    seed = next(s for s in range(100) if {paths[i] for i, _ in EpochOrder(4, 2, seed=s, epoch=0).items[:2]}
                == {p for p in paths if "bad" in p})
    loader = DeviceImageLoader(str(tmp_path), 2, out_size=8, device="cpu", workers=1, seed=seed)
    with loader.epochs(0) as batches:
        next(batches)  # epoch 0's second batch: its first was dropped
        assert batches.position == (1, 0) and loader.stats["batches_dropped"] == 1


def test_ranks_see_disjoint_samples_covering_the_epoch(identity_root):
    per_rank = []
    for rank in range(3):
        loader = DeviceImageLoader(identity_root, 4, rank=rank, world_size=3, seed=9, **IDENTITY)
        ids = [i for images, _ in loader.epoch(4) for i in _file_ids(images)]
        assert len(ids) == 8 == loader.batches_per_epoch() * 4
        per_rank.append(ids)
    all_ids = [i for ids in per_rank for i in ids]
    assert sorted(all_ids) == list(range(24))  # disjoint, and together the whole epoch
    single = DeviceImageLoader(identity_root, 4, seed=9, **IDENTITY)
    batches = list(single.epoch(4))
    assert sorted(i for images, _ in batches for i in _file_ids(images)) == list(range(24))
    assert all(labels.tolist() == [i // 8 for i in _file_ids(images)] for images, labels in batches)


def test_replay_reuses_each_decoded_batch_with_fresh_augmentation(textured_root, identity_root):
    assert len(EFFICIENTTRAIN_PP_REPLAY) == len(EFFICIENTTRAIN_PP_SIZES["deit_small"])
    identity = DeviceImageLoader(identity_root, 4, replay=3, **IDENTITY)
    batches = list(identity.epoch(0))
    assert len(batches) == 18 == identity.batches_per_epoch()
    for decoded in range(6):
        rounds = [_file_ids(images) for images, _ in batches[3 * decoded : 3 * decoded + 3]]
        assert rounds[0] == rounds[1] == rounds[2]
    assert identity.stats["images_delivered"] == 3 * identity.stats["images_decoded"] == 72
    assert identity.stats["replay"] == 3

    def rounds(**kwargs):
        loader = DeviceImageLoader(textured_root, 4, out_size=24, replay=2, device="cpu", dtype=torch.float32, **kwargs)
        batches = list(loader.epoch(0))
        assert all(torch.equal(first[1], second[1]) for first, second in zip(batches[0::2], batches[1::2]))
        return [torch.equal(first[0], second[0]) for first, second in zip(batches[0::2], batches[1::2])]

    assert not any(rounds())  # new boxes, flips and RandAugment draws
    whole_image = dict(scale=(1.0, 1.0), ratio=(0.1, 10.0), flip_prob=0.0)
    assert not any(rounds(**whole_image))  # RandAugment alone differs between rounds
    assert all(rounds(**whole_image, rand_augment=False))


def test_stage_changes_take_effect_at_the_next_batch(textured_root):
    loader = DeviceImageLoader(textured_root, 4, out_size=24, size=24, magnitude=0, seed=1, device="cpu",
                               dtype=torch.float32)
    batches = loader.epoch(0)
    assert next(batches)[0].shape[-2:] == (24, 24)
    loader.set_stage(size=12)
    assert next(batches)[0].shape[-2:] == (12, 12)
    mild = DeviceImageLoader(textured_root, 4, out_size=24, magnitude=0, seed=1, device="cpu", dtype=torch.float32)
    strong = DeviceImageLoader(textured_root, 4, out_size=24, magnitude=0, seed=1, device="cpu", dtype=torch.float32)
    strong.set_stage(magnitude=10)
    plain = DeviceImageLoader(textured_root, 4, out_size=24, rand_augment=False, seed=1, device="cpu",
                              dtype=torch.float32)
    (x_mild, _), (x_strong, _), (x_plain, _) = (next(iter(l.epoch(0))) for l in (mild, strong, plain))
    # At magnitude 10 the geometric and colour ops move pixels much further from the plain crops.
    assert (x_strong - x_plain).abs().mean() > 1.5 * (x_mild - x_plain).abs().mean() > 0
    loader.set_stage(replay=2)
    assert loader.batches_per_epoch() == 12 and loader.size == 12 and loader.magnitude == 0


def test_batches_made_ahead_equal_batches_made_when_asked(textured_root):
    """ready_ahead (a background thread making batches ahead) changes when a batch is made, never
    what it holds: the same batches with replay, across a mid-epoch stage change (the batches made
    ahead under the old stage are made again) and an early close, with the same counts."""
    def run(ready_ahead):
        loader = DeviceImageLoader(textured_root, 4, out_size=24, size=24, magnitude=3, replay=2, seed=4,
                                   device="cpu", dtype=torch.float32, workers=2, ready_ahead=ready_ahead)
        with loader.epoch(1, start_batch=1) as batches:
            got = [next(batches) for _ in range(4)]
            loader.set_stage(size=12, magnitude=8)
            got += [next(batches) for _ in range(3)]
        return got, dict(loader.stats)

    on_demand, on_demand_stats = run(0)
    assert [x.shape[-1] for x, _ in on_demand] == [24] * 4 + [12] * 3
    for ready_ahead in (1, 3):
        made_ahead, stats = run(ready_ahead)
        for (x1, y1), (x2, y2) in zip(on_demand, made_ahead, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
        # Decoded: batches 0-3 (the stage change decodes batch 2 again for its second round).
        assert stats == on_demand_stats == dict(on_demand_stats, images_delivered=28, images_decoded=20)
    assert not [t for t in threading.enumerate() if t.name == "effkernels-prefetch"]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.skipif(not HAS_NVIMGCODEC, reason="nvImageCodec is not installed (the GPU image: make gpu-wheels, carry wheels/)")
def test_jpeg_decoders_agree_on_cuda(textured_root):
    """nvImageCodec (hardware decoder first) and torchvision (nvJPEG's CUDA decoder) on the GPU: the
    same images up to IDCT rounding, ready on the caller's stream; nvImageCodec's buffers are held
    until the kernels that read them have run."""
    files = [image_decode.read_image_file(path, image_decode.SkipLog(), MAX_PIXELS, True)
             for path, _ in DeviceImageLoader(textured_root, 4, out_size=8, device="cpu").samples]
    device = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        nvimgcodec = image_decode.jpeg_decoder("nvimgcodec", device)
        decoded = image_decode.decode_jpeg_batch(files, nvimgcodec, image_decode.SkipLog(), MAX_PIXELS)
        sums = torch.stack([image.double().sum() for image in decoded])
        nvimgcodec.done_with(decoded)
    expected = image_decode.decode_jpeg_batch(files, image_decode.jpeg_decoder("torchvision", device),
                                              image_decode.SkipLog(), MAX_PIXELS)
    stream.synchronize()
    for image, reference in zip(decoded, expected, strict=True):
        assert image.device == device and image.dtype == torch.uint8 and image.shape == reference.shape
        assert (image.float() - reference.float()).abs().mean() < 1.0
    torch.testing.assert_close(sums, torch.stack([image.double().sum() for image in decoded]))
    nvimgcodec.done_with([])
    assert all(images is not decoded for _, images in nvimgcodec._held)  # their reads have run: let go


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.skipif(not HAS_NVIMGCODEC, reason="nvImageCodec is not installed (the GPU image: make gpu-wheels, carry wheels/)")
def test_loader_with_nvimgcodec_on_cuda(textured_root):
    settings = dict(out_size=32, size=16, device="cuda", rand_augment=False)  # RandAugment's thresholds: no rounding
    loader = DeviceImageLoader(textured_root, 8, decoder="nvimgcodec", **settings)
    reference = DeviceImageLoader(textured_root, 8, **settings)
    for (x1, y1), (x2, y2) in zip(loader.epoch(0), reference.epoch(0), strict=True):
        assert torch.equal(y1, y2) and (x1.float() - x2.float()).abs().mean() < 0.05


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("kwargs,error,name", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(batch_size=100), ValueError, "batch_size"),
    (dict(root=3), TypeError, "root"),
    (dict(root="/no/such/folder"), ValueError, "root"),
    (dict(out_size=-1), ValueError, "out_size"),
    (dict(size=30), ValueError, "size"),
    (dict(magnitude=11), ValueError, "magnitude"),
    (dict(magnitude="9"), TypeError, "magnitude"),
    (dict(replay=0), ValueError, "replay"),
    (dict(scale=(0.5, 0.2)), ValueError, "scale"),
    (dict(scale=(0.5, 2.0)), ValueError, "scale"),
    (dict(ratio=(1.0,)), TypeError, "ratio"),
    (dict(rank=2, world_size=2), ValueError, "rank"),
    (dict(world_size=0), ValueError, "world_size"),
    (dict(dtype=torch.int32), TypeError, "dtype"),
    (dict(mean=(0.5, 0.5)), TypeError, "mean"),
    (dict(std=(1, 0, 1)), ValueError, "std"),
    (dict(flip_prob=1.5), ValueError, "flip_prob"),
    (dict(workers=0), ValueError, "workers"),
    (dict(max_side=0), ValueError, "max_side"),
    (dict(ready_ahead=-1), ValueError, "ready_ahead"),
    (dict(ready_ahead=1.0), TypeError, "ready_ahead"),
    (dict(decoder="pil"), ValueError, "decoder"),
])
def test_bad_arguments_raise_naming_the_argument(textured_root, kwargs, error, name):
    arguments = dict(root=textured_root, batch_size=4, out_size=24, device="cpu") | kwargs
    with pytest.raises(error, match=name):
        DeviceImageLoader(**arguments)


@pytest.mark.parametrize("call,error,name", [
    (lambda l: l.set_stage(size=0), ValueError, "size"),
    (lambda l: l.set_stage(magnitude=-1), ValueError, "magnitude"),
    (lambda l: l.set_stage(replay=1.5), TypeError, "replay"),
    (lambda l: l.epoch(-1), ValueError, "epoch"),
    (lambda l: l.epoch(0, start_batch=7), ValueError, "start_batch"),
    (lambda l: l.epochs(-1), ValueError, "epoch"),
    (lambda l: l.epochs(0, start_batch=1.0), TypeError, "start_batch"),
    (lambda l: l.stages(0, 0, []), ValueError, "plan"),
    (lambda l: l.stages(0, 0, [(2, 24, 9)]), TypeError, "plan"),
    (lambda l: l.stages(0, 0, [(0, 24, 9, 1)]), ValueError, "batches"),
    (lambda l: l.stages(0, 0, [(2, 48, 9, 1)]), ValueError, "size"),
    (lambda l: l.stages(0, 0, [(2, 24, 11, 1)]), ValueError, "magnitude"),
    (lambda l: l.stages(0, 0, [(2, 24, 9, 0)]), ValueError, "replay"),
    (lambda l: l.stages(0, 13, [(2, 24, 9, 2)]), ValueError, "start_batch"),
])
def test_bad_stage_and_epoch_arguments(textured_root, call, error, name):
    loader = DeviceImageLoader(textured_root, 4, out_size=24, device="cpu")
    with pytest.raises(error, match=name):
        call(loader)
    assert loader.size == 24 and loader.magnitude == 9 and loader.replay == 1  # a rejected stage changes nothing


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_loader_on_cuda(textured_root):
    loader = DeviceImageLoader(textured_root, 8, out_size=32, size=16, replay=2, device="cuda", dtype=torch.bfloat16)
    batches = list(loader.epoch(0))
    assert len(batches) == loader.batches_per_epoch() == 6
    for images, labels in batches:
        assert images.device.type == "cuda" and images.dtype == torch.bfloat16 and images.shape == (8, 3, 16, 16)
        assert labels.device.type == "cuda" and labels.dtype == torch.int64 and torch.isfinite(images.float()).all()
    cpu = DeviceImageLoader(textured_root, 8, out_size=32, size=16, replay=2, device="cpu", dtype=torch.float32,
                            rand_augment=False)
    gpu = DeviceImageLoader(textured_root, 8, out_size=32, size=16, replay=2, device="cuda", dtype=torch.float32,
                            rand_augment=False)
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(cpu.epoch(1), gpu.epoch(1)):  # nvJPEG vs libjpeg: a level or two
        assert torch.equal(y_cpu, y_gpu.cpu()) and (x_cpu - x_gpu.cpu()).abs().mean() < 0.05
    # A curriculum in one iterator, made ahead on the producer's stream across stage and epoch ends.
    plan = [(4, 16, 0, 2), (9, 24, 0, 1)]
    with gpu.stages(0, 0, plan) as batches:
        shapes = [images.shape[-1] for images, _ in batches]
    assert shapes == [16] * 4 + [24] * 9 and batches.position == (3, 2)  # 3 decoded batches an epoch


# ------------------------------------------------------------------ images already in memory
@pytest.fixture(scope="module")
def tensor_and_folder(tmp_path_factory):
    """The same 3 classes × 8 textured 20×28 images as a uint8 tensor (class by class, in file name
    order: ImageFolder's order) and as a folder of lossless PNGs."""
    root = tmp_path_factory.mktemp("tensor_and_folder")
    rng = np.random.default_rng(4)
    images = []
    for name in CLASSES:
        (root / name).mkdir()
        for i in range(8):
            array = _textured(rng, 20, 28)
            Image.fromarray(array).save(root / name / f"{i}.png")
            images.append(torch.from_numpy(array).permute(2, 0, 1))
    labels = torch.arange(len(CLASSES)).repeat_interleave(8)
    return torch.stack(images), labels, str(root)


@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_tensor_loader_delivers_what_the_file_loader_does(tensor_and_folder, rank, world_size):
    """Same images, same settings: the same batches, bit for bit, from the same epoch order, seeds,
    boxes, flips and RandAugment draws; resumed mid-epoch and mid-replay too."""
    images, labels, root = tensor_and_folder
    settings = dict(out_size=16, size=12, magnitude=6, replay=2, scale=(0.35, 1.0), seed=7, rank=rank,
                    world_size=world_size, dtype=torch.float32, device="cpu")
    from_files = _collect(DeviceImageLoader(root, 3, **settings), epoch=1)
    in_memory = DeviceTensorLoader(images, labels, 3, classes=list(CLASSES), **settings)
    assert in_memory.classes == list(CLASSES) and in_memory.batches_per_epoch() == len(from_files)
    for start_batch in (0, 3):
        delivered = _collect(in_memory, epoch=1, start_batch=start_batch)
        assert len(delivered) == len(from_files) - start_batch
        for (x_file, y_file), (x_tensor, y_tensor) in zip(from_files[start_batch:], delivered):
            assert torch.equal(y_file, y_tensor)
            torch.testing.assert_close(x_tensor, x_file, rtol=0, atol=0)
        if start_batch == 0:
            assert in_memory.stats["images_delivered"] == 2 * in_memory.stats["images_decoded"] == 3 * len(delivered)


def test_tensor_loader_default_classes_and_image_device(tensor_and_folder):
    images, labels, _ = tensor_and_folder
    loader = DeviceTensorLoader(images, labels.to(torch.int32), 4, out_size=8, device="cpu")
    assert loader.classes == ["0", "1", "2"] and loader.images.device.type == "cpu"
    x, y = next(iter(loader.epoch(0)))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.bfloat16 and y.dtype == torch.int64


def test_tensor_loader_takes_numpy_integers_as_python_ones(tensor_and_folder):
    # A NumPy replay factor or seed once overflowed the seed hash in the producer thread.
    images, labels, _ = tensor_and_folder
    settings = dict(out_size=8, size=6, device="cpu", ready_ahead=0)
    python = DeviceTensorLoader(images, labels, 4, seed=7, replay=2, **settings)
    numpy = DeviceTensorLoader(images, labels, np.int64(4), seed=np.int64(7), replay=np.int64(2), **settings)
    for (x1, y1), (x2, y2) in zip(python.epoch(1), numpy.epoch(np.int64(1))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert mix_seed(np.int64(-3), np.uint64(2**63 + 5)) == mix_seed(-3, 2**63 + 5)


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(images=np.zeros((4, 3, 8, 8), np.uint8)), TypeError, "images"),
    (dict(images=torch.zeros(24, 3, 8, 8)), TypeError, "images"),
    (dict(images=torch.zeros(24, 1, 8, 8, dtype=torch.uint8)), ValueError, "images"),
    (dict(images=torch.zeros(24, 3, 0, 8, dtype=torch.uint8)), ValueError, "images"),
    (dict(labels=torch.zeros(24)), TypeError, "labels"),
    (dict(labels=[0] * 24), TypeError, "labels"),
    (dict(labels=torch.zeros(23, dtype=torch.int64)), ValueError, "labels"),
    (dict(labels=torch.full((24,), -1)), ValueError, "labels"),
    (dict(classes="ant"), TypeError, "classes"),
    (dict(classes=["ant", "bee"]), ValueError, "classes"),
    (dict(batch_size=25), ValueError, "batch_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(size=20), ValueError, "size"),
    (dict(magnitude=-0.5), ValueError, "magnitude"),
    (dict(std=(1, 1, 0)), ValueError, "std"),
    (dict(device="gpu0"), ValueError, "device"),
    (dict(device=1.5), ValueError, "device"),
])
def test_tensor_loader_bad_arguments_raise_naming_the_argument(tensor_and_folder, kwargs, error, name):
    images, labels, _ = tensor_and_folder
    arguments = dict(images=images, labels=labels, batch_size=4, out_size=16, device="cpu") | kwargs
    with pytest.raises(error, match=name):
        DeviceTensorLoader(**arguments)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_tensor_loader_on_cuda(tensor_and_folder):
    images, labels, _ = tensor_and_folder
    settings = dict(out_size=16, size=12, replay=2, rand_augment=False, dtype=torch.float32)
    cpu = DeviceTensorLoader(images, labels, 4, device="cpu", **settings)
    gpu = DeviceTensorLoader(images, labels, 4, device="cuda", **settings)
    assert gpu.images.device.type == "cuda"
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(cpu.epoch(0), gpu.epoch(0)):  # other kernels: rounding only
        assert x_gpu.device.type == "cuda" and torch.equal(y_cpu, y_gpu.cpu())
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, rtol=0, atol=0.05)


def test_benchmark_script_runs_and_writes_results(tmp_path):
    """perf/bench_pipeline.py end to end in a tiny configuration (its figures are no speed claim)."""
    import json
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "perf"))
    import bench_pipeline

    bench_pipeline.main(["--device", "cpu", "--files", "20", "--batch", "4", "--sizes", "16", "--out-size", "24",
                         "--replay", "2", "--warmup", "1", "--batches", "2", "--workers", "1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "pipeline.json").read_text())
    assert [row["decoder"] for row in results["rows"]] == list(image_decode.JPEG_DECODERS)  # both installed here
    for row in results["rows"]:
        assert row["size"] == 16 and row["replay"] == 2
        assert all(row[key] > 0 for key in ("pipeline img/s", "pipeline+replay img/s", "DataLoader img/s",
                                            "pipeline CPU ms/batch", "pipeline+replay CPU ms/batch"))
    assert results["meta"]["timed batches"] == 2 and (tmp_path / "pipeline.png").stat().st_size > 1000


def test_benchmark_script_reports_a_failing_decoder_and_goes_on(tmp_path, monkeypatch):
    import json
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "perf"))
    import bench_pipeline

    working = bench_pipeline.pipeline_batches

    def failing_nvimgcodec(root, args, device, size, replay, decoder):
        if decoder == "nvimgcodec":
            raise RuntimeError("no hardware decoder here")
        return working(root, args, device, size, replay, decoder)

    monkeypatch.setattr(bench_pipeline, "pipeline_batches", failing_nvimgcodec)
    with pytest.raises(SystemExit, match="some entries failed"):
        bench_pipeline.main(["--device", "cpu", "--files", "20", "--batch", "4", "--sizes", "16", "24",
                             "--out-size", "24", "--warmup", "1", "--batches", "1", "--workers", "1",
                             "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "pipeline.json").read_text())["rows"]
    assert [(row["size"], row["decoder"]) for row in rows] == [(16, "torchvision"), (16, "nvimgcodec"),
                                                               (24, "torchvision"), (24, "nvimgcodec")]
    assert [row.get("error") for row in rows] == [None, "RuntimeError: no hardware decoder here"] * 2
    assert all(row["pipeline img/s"] > 0 for row in rows[::2])
