"""Data for the training script: the embedded procedural dataset, ImageFolder that skips bad files,
and a resumable, rank-sharded epoch order whose samples carry their own augmentation seed.

The embedded set ("shapes and textures"): each image holds one shape (disc, square, triangle, ring)
filled with one of two fine textures (stripes or checks, 2-3 px period) on a noisy background, with
random colours, position, scale and texture phase. The class is (shape, texture): telling shapes
apart needs the low frequencies, telling textures apart needs the high ones, so a low-to-high
frequency curriculum has something to show. Deterministic for a given seed, made in a second.
"""
import contextlib
import logging
import math
import os
import random

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

logger = logging.getLogger(__name__)

SHAPES = ("disc", "square", "triangle", "ring")
TEXTURES = ("stripes", "checks")
CLASSES = [f"{shape}-{texture}" for shape in SHAPES for texture in TEXTURES]


def make_shapes_and_textures(count: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, 3, size, size) uint8, labels (count,) int64) of the embedded dataset."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(CLASSES), (count,), generator=g)
    shape, texture = labels // len(TEXTURES), labels % len(TEXTURES)

    def uniform(lo, hi, *shape_):
        return lo + (hi - lo) * torch.rand(*(shape_ or (count,)), generator=g)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]
    cy, cx = uniform(0.35, 0.65)[:, None, None], uniform(0.35, 0.65)[:, None, None]
    radius = uniform(0.18, 0.3)[:, None, None]
    dy, dx = y - cy, x - cx
    dist = (dy**2 + dx**2).sqrt()
    masks = torch.stack([
        dist < radius,
        (dy.abs() < radius * 0.85) & (dx.abs() < radius * 0.85),
        (dy < radius * 0.8) & (dy > -radius) & (dx.abs() < (dy + radius) * 0.6),
        (dist < radius) & (dist > radius * 0.55),
    ], 1)
    inside = masks[torch.arange(count), shape].float()

    period = uniform(2.0, 3.0)[:, None, None] / size
    phase_y, phase_x = uniform(0, 2 * math.pi)[:, None, None], uniform(0, 2 * math.pi)[:, None, None]
    angle = uniform(-0.4, 0.4)[:, None, None]
    u = (y * angle.cos() + x * angle.sin()) / period * 2 * math.pi
    v = (x * angle.cos() - y * angle.sin()) / period * 2 * math.pi
    stripes = (torch.sin(u + phase_y) > 0).float()
    checks = ((torch.sin(u + phase_y) > 0) ^ (torch.sin(v + phase_x) > 0)).float()
    pattern = torch.where((texture == 0)[:, None, None], stripes, checks)

    colour_a, colour_b = uniform(0.3, 1.0, count, 3), uniform(0.0, 0.5, count, 3)
    fill = pattern[:, None] * colour_a[..., None, None] + (1 - pattern[:, None]) * colour_b[..., None, None]
    background = uniform(0.1, 0.6, count, 3)[..., None, None] + 0.08 * torch.randn(count, 3, size, size, generator=g)
    image = inside[:, None] * fill + (1 - inside[:, None]) * background
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


class TensorImages(torch.utils.data.Dataset):
    """(uint8 CHW images, labels) served as PIL images through `transform`, like ImageFolder."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.classes = CLASSES

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return (self.transform(image) if self.transform else image), int(self.labels[index])


def image_folder_classes(root) -> tuple[list[str], dict[str, int]]:
    """ImageFolder's classes under root, its sorted sub-folder names, leaving out hidden folders
    (.ipynb_checkpoints, .Trash-1000, ...): they hold no class. ValueError if none is left."""
    root = os.fspath(root)
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(f"root must hold class sub-folders, got none in {root!r}")
    return classes, {name: index for index, name in enumerate(classes)}


def image_folder_samples(root, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """ImageFolder's (path, label) samples, leaving out hidden files and folders (macOS's "._x.jpg"
    companions are no images). A class folder with no image keeps its label and is reported once."""
    root = os.fspath(root)

    def visible_image(path):
        parts = os.path.relpath(path, root).split(os.sep)
        return has_file_allowed_extension(path, IMG_EXTENSIONS) and not any(part.startswith(".") for part in parts)

    samples = make_dataset(root, class_to_idx, is_valid_file=visible_image, allow_empty=True)
    found = {label for _, label in samples}
    for name, label in class_to_idx.items():
        if label not in found:
            logger.warning("class folder %s holds no image: label %d is never trained on",
                           os.path.join(root, name), label)
    return samples


def image_folder(root: str, transform=None):
    """torchvision ImageFolder over image_folder_classes and image_folder_samples, whose unreadable or
    corrupt files are reported once and skipped."""
    from torchvision.datasets import ImageFolder

    class SkippingImageFolder(ImageFolder):
        reported: set = set()

        def find_classes(self, directory):
            return image_folder_classes(directory)

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            return image_folder_samples(directory, class_to_idx)

        def __getitem__(self, index):
            for offset in range(len(self.samples)):
                path, target = self.samples[(index + offset) % len(self.samples)]
                try:
                    with open(path, "rb") as f:
                        image = Image.open(f).convert("RGB")
                except Exception as error:  # noqa: BLE001  (PIL raises many kinds for bad files)
                    if path not in self.reported:
                        self.reported.add(path)
                        logger.warning("skipping unreadable image %s (%s)", path, error)
                    continue
                return (self.transform(image) if self.transform else image), target
            raise RuntimeError(f"no readable image in {root}")

    return SkippingImageFolder(root, transform=transform)


class EpochOrder(torch.utils.data.Sampler):
    """This rank's (index, augmentation seed) pairs of epoch `epoch` (a seeded shuffle, the same on
    every rank), from batch `start_batch` on: a resumed run continues the interrupted epoch with the
    same data order and, through SeededSamples, the same augmentation."""

    def __init__(self, length, batch_size, *, seed, epoch, rank=0, world_size=1, start_batch=0):
        generator = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
        order = torch.randperm(length, generator=generator)
        sample_seeds = torch.randint(2**62, (length,), generator=generator)
        per_rank = length // world_size // batch_size * batch_size  # every rank gets whole, equal batches
        mine = slice(rank, rank + world_size * per_rank, world_size)
        first = start_batch * batch_size
        self.items = list(zip(order[mine].tolist(), sample_seeds[mine].tolist()))[first:]

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


class SeededSamples(torch.utils.data.Dataset):
    """`dataset` indexed by EpochOrder's (index, seed) pairs: each sample's random transforms (torch,
    `random` and numpy, which timm's RandAugment uses) draw from its own seed, so the augmentation
    is fixed by the run's seed alone, whatever the number of loader workers and across resumes."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with _global_rngs_seeded(seed):
            return self.dataset[index]


@contextlib.contextmanager
def _global_rngs_seeded(seed: int):
    """Seed the CPU RNGs that transforms use; in the main process (no loader workers) put them back
    after, since training draws from them too. torch.manual_seed would also seed every GPU: ~90 µs."""
    in_worker = torch.utils.data.get_worker_info() is not None
    saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    # torch's Mersenne Twister keeps the low 32 bits of a seed, and numpy's legacy one seeded with the
    # same 32 bits yields the same stream: give numpy the high bits, else crops and ops correlate.
    np.random.seed(seed >> 32)
    torch.default_generator.manual_seed(seed % 2**32)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def batches_per_epoch(length: int, batch_size: int, world_size: int) -> int:
    return length // world_size // batch_size
