"""The training input pipeline on the device: ImageFolder files (DeviceImageLoader) or an
in-memory uint8 image tensor (DeviceTensorLoader) in, normalised batches out.

Why: on an H100 a CPU data path (PIL decode, RandomResizedCrop, flip, timm RandAugment, 15
workers) delivered 2,830 img/s while a DeiT-S step takes 7,850 img/s at 224 px and 31,400 at
96 px, and nvJPEG decoded 16,600 img/s. So here the CPU threads only read file bytes and the
device does the rest, in EfficientTrain++'s order:

  read (threads, prefetching) -> decode a batch of JPEGs on the device (image_decode)
  -> RandomResizedCrop + flip + resize to out_size, one separable_map launch (resized_crop)
  -> RandAugment at out_size (augment.rand_augment)
  -> the stage's low-frequency crop + normalisation + cast, one launch (lowfreq_crop)

A background thread makes the batches `ready_ahead` ahead of the training loop, on CUDA on a
stream of its own (effkernels.prefetch), so that this work overlaps the training steps.

The stage (band size, RandAugment magnitude, replay factor) is set with `set_stage` between
batches, without rebuilding the loader (batches made ahead under the old stage are made again),
or a whole curriculum is given at once to `stages()`, whose thread then makes each stage's first
batches ahead of it too.
Replay reuses each decoded batch `replay` times with fresh boxes, flips and RandAugment draws
(EfficientTrain++ replays low-resolution stages, where the step is cheap and decoding would be the
bottleneck; preset EFFICIENTTRAIN_PP_REPLAY).

Determinism: the epoch order and the per-sample seeds are effkernels.data.EpochOrder's (a seeded
shuffle, sharded across ranks in whole batches); a sample's box and flip come from its seed and
the replay round (crop_boxes); the RandAugment generator is seeded per delivered batch from (seed,
epoch, rank, decoded batch, round). So batch t of an epoch is the same whether the epoch started
at 0 or was resumed at `start_batch=t`, on any number of reader threads, on CPU or GPU alike
(bit-identical only on the same device: the kernels differ).
"""
import collections
import itertools
import logging
import math
import numbers
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from . import augment, image_decode
from .checks import check_int
from .crop_boxes import DRAWS, check_scale_and_ratio, counter_uniforms, mix_seed, sample_boxes
from .data import EpochOrder, image_folder_classes, image_folder_samples
from .ops import lowfreq_crop
from .prefetch import PrefetchedBatches, indexed_device
from .resized_crop import pad_images, resized_crop_flip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientTrain++'s replay factor for each of its 10 equal-compute stages (low resolution first).
EFFICIENTTRAIN_PP_REPLAY = (4, 4, 2, 2, 2, 2, 1, 1, 1, 1)
PIL_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb warning threshold (Image.MAX_IMAGE_PIXELS)

logger = logging.getLogger(__name__)


class _DeviceLoader:
    """What the device loaders share: argument checks, the curriculum stage, the epoch order with
    replay, and the device transforms of a decoded batch. A subclass names its images (`length`,
    `classes`) and turns a batch of EpochOrder's (index, seed) pairs into (padded uint8 images on
    the device, their (h, w) sizes, labels, the number of images decoded) in `_decoded_batches`."""

    def __init__(self, length: int, batch_size: int, source: str, *, device, out_size, size, magnitude, rand_augment,
                 replay, scale, ratio, flip_prob, dtype, mean, std, seed, rank, world_size, ready_ahead):
        for name, value, low in (("batch_size", batch_size, 1), ("out_size", out_size, 1), ("seed", seed, 0),
                                 ("world_size", world_size, 1), ("ready_ahead", ready_ahead, 0)):
            check_int(name, value, low)
        check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank must be < world_size={world_size}, got {rank}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if not isinstance(flip_prob, numbers.Real) or not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be a number in [0, 1], got {flip_prob!r}")
        for name, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, (tuple, list)) and len(values) == 3
                    and all(isinstance(v, numbers.Real) for v in values)):
                raise TypeError(f"{name} must be three numbers (R, G, B), got {values!r}")
        if any(v == 0 for v in std):
            raise ValueError(f"std must be non-zero, got {std!r}")
        if length < batch_size * world_size:
            raise ValueError(f"batch_size × world_size = {batch_size * world_size} exceeds the {length} images {source}")
        self.scale, self.ratio = check_scale_and_ratio(scale, ratio)
        self.device = indexed_device(device)
        self.length, self.batch_size, self.out_size, self.dtype = length, batch_size, out_size, dtype
        self.flip_prob, self.rand_augment = float(flip_prob), bool(rand_augment)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self.seed, self.rank, self.world_size, self.ready_ahead = seed, rank, world_size, ready_ahead
        self.size = self._checked_size(out_size if size is None else size)
        self.magnitude, self.replay = _checked_magnitude(magnitude), _checked_replay(replay)
        self.stats = {"images_decoded": 0, "images_delivered": 0, "files_skipped": 0, "batches_dropped": 0,
                      "replay": self.replay}
        self._live_epochs = weakref.WeakSet()  # the epoch iterators a stage change must restart

    def set_stage(self, *, size=None, magnitude=None, replay=None) -> None:
        """Set the curriculum stage; None keeps a setting. size: the band (output) size, 1..out_size;
        magnitude: RandAugment's, in [0, 10]; both apply from the next batch of the iterators that
        epoch() and epochs() made. replay: decoded-batch reuse factor >= 1, applies from the next
        `epoch()` or `epochs()` call (it fixes the epoch's batch count)."""
        size = self.size if size is None else self._checked_size(size)
        magnitude = self.magnitude if magnitude is None else _checked_magnitude(magnitude)
        replay = self.replay if replay is None else _checked_replay(replay)
        changed = (size, magnitude) != (self.size, self.magnitude)
        self.size, self.magnitude, self.replay = size, magnitude, replay
        if changed:
            for batches in list(self._live_epochs):
                batches._restart()

    def _checked_size(self, size):
        check_int("size", size, 1)
        if size > self.out_size:
            raise ValueError(f"size must be <= out_size={self.out_size}, got {size}")
        return size

    def batches_per_epoch(self) -> int:
        """Batches an epoch yields on this rank at the current replay factor."""
        return self.batches_per_epoch_decoded() * self.replay

    def epoch(self, epoch: int, start_batch: int = 0) -> "EpochBatches":
        """An iterator over epoch `epoch`'s batches start_batch, start_batch + 1, ... (the batch
        index counts delivered batches, replays included, as a training loop counts steps)."""
        return self._following_stage(epoch, start_batch, through_epochs=False)

    def epochs(self, first_epoch: int, start_batch: int = 0) -> "EpochBatches":
        """An iterator that starts as `epoch(first_epoch, start_batch)` does and runs on into the
        epochs after it, without end (close it): its background thread makes the next epoch's first
        batches while the training loop still takes the last ones of this one, where a fresh
        `epoch()` per epoch would leave the device waiting for them. `position` says where it is."""
        return self._following_stage(first_epoch, start_batch, through_epochs=True)

    def stages(self, epoch: int, start_batch: int, plan) -> "EpochBatches":
        """An iterator over a curriculum's batches: for each (batches, size, magnitude, replay) of
        `plan` in turn, that many batches at that stage, from batch start_batch of `epoch` on
        (counted at the first stage's replay factor), on through the epochs, ending after the last
        stage. Its background thread makes each stage's first batches while the training loop still
        takes the last ones of the stage before (a fresh iterator per stage would leave the device
        waiting for them). A stage whose replay factor differs from the one before starts at the
        next decoded batch (replayed_position). The loader's own stage (set_stage) is left alone."""
        stages = [_checked_stage_plan(entry, self) for entry in plan]
        if not stages:
            raise ValueError("plan must hold at least one (batches, size, magnitude, replay) stage")
        self._check_position(epoch, start_batch, stages[0][1].replay)
        return EpochBatches(self, (epoch, start_batch), lambda position: self._deliver_stages(position, stages))

    def _following_stage(self, epoch, start_batch, through_epochs):
        """An EpochBatches under the loader's stage, made again from its position when set_stage
        changes the stage."""
        self._check_position(epoch, start_batch, self.replay)
        replay = self.replay
        batches = EpochBatches(self, (epoch, start_batch), lambda position: self._deliver(
            position, _Stage(self.size, self.magnitude, replay), through_epochs))
        self._live_epochs.add(batches)
        return batches

    def _check_position(self, epoch, start_batch, replay):
        check_int("epoch", epoch, 0)
        check_int("start_batch", start_batch, 0)
        per_epoch = self.batches_per_epoch_decoded() * replay
        if start_batch > per_epoch:
            raise ValueError(f"start_batch must be <= {per_epoch}, the batches per epoch, got {start_batch}")

    def _deliver_stages(self, position, stages):
        """The batches of `stages` ((batches, _Stage) pairs) in turn from `position` on, as
        _deliver's; the replay factor's changes carried over by replayed_position."""
        replay = stages[0][1].replay
        for count, stage in stages:
            if stage.replay != replay:
                epoch, batch = position
                position, replay = (epoch, replayed_position(batch, replay, stage.replay)), stage.replay
            batches = self._deliver(position, stage, through_epochs=True)
            try:
                for made in itertools.islice(batches, count):
                    position = made.position
                    yield made
            finally:
                batches.close()

    def _deliver(self, position, stage, through_epochs):
        """A generator of the batches from `position` (epoch, batch) on under `stage`, to the
        epoch's end or (through_epochs) on through the next epochs: _Made batches."""
        epoch, start_batch = position
        replay = stage.replay
        per_epoch = self.batches_per_epoch_decoded() * replay
        decoded_batches = self._decoded_batches(self._decoding_plan(epoch, start_batch // replay, through_epochs))
        generator = torch.Generator(device=self.device)  # this generator's own: several may run at once
        first_round = start_batch % replay
        try:
            for planned, decoded in decoded_batches:
                rounds, first_round = range(first_round, replay), 0
                if decoded is None:
                    continue
                padded, sizes, labels, count = decoded
                seeds = [seed for _, seed in planned.items]
                for replay_round in rounds:
                    generator.manual_seed(mix_seed(self.seed, planned.epoch, self.rank, planned.index, replay_round))
                    images, labels_out = self._augment(padded, sizes, labels, seeds, replay_round, stage, generator)
                    after = planned.index * replay + replay_round + 1
                    position = (planned.epoch, after) if after < per_epoch else (planned.epoch + 1, 0)
                    yield _Made(images, labels_out, count, position, replay)
                    count = 0  # counted with the first batch made from this decoding
        finally:
            decoded_batches.close()

    def batches_per_epoch_decoded(self) -> int:
        """Decoded batches per epoch on this rank (batches_per_epoch() without replay)."""
        return self.length // self.world_size // self.batch_size

    def _decoding_plan(self, epoch, first_decoded, through_epochs):
        """EpochOrder's batches from decoded batch `first_decoded` of `epoch` on, one _PlannedBatch
        each, to the epoch's end or on through the next epochs."""
        while True:
            items = EpochOrder(self.length, self.batch_size, seed=self.seed, epoch=epoch, rank=self.rank,
                               world_size=self.world_size, start_batch=first_decoded).items
            for offset, start in enumerate(range(0, len(items), self.batch_size)):
                yield _PlannedBatch(epoch, first_decoded + offset, items[start : start + self.batch_size])
            if not through_epochs:
                return
            epoch, first_decoded = epoch + 1, 0

    def _decoded_batches(self, plan):
        """A generator of (planned batch, its (padded images, sizes, labels, images decoded), or None
        for a batch to drop), for each _PlannedBatch of the iterator `plan`, taken from it lazily."""
        raise NotImplementedError

    def _augment(self, padded, sizes, labels, seeds, replay_round, stage, generator):
        """One delivered batch: boxes and flips drawn on the host, sent with the labels in one
        copy; crop + flip + resize, RandAugment (drawing from `generator`), low-frequency crop +
        normalisation on the device."""
        heights, widths = zip(*sizes)
        boxes = sample_boxes(heights, widths, counter_uniforms(seeds, replay_round, DRAWS), self.scale, self.ratio,
                             self.flip_prob)
        host = torch.from_numpy(np.concatenate([boxes, np.asarray(labels, dtype=np.int64)[:, None]], 1))
        if self.device.type == "cuda":
            host = host.pin_memory()
        params = host.to(self.device, non_blocking=True)
        images = resized_crop_flip(padded, params[:, :5], self.out_size)
        if self.rand_augment:
            images = augment.rand_augment(images, stage.magnitude, generator=generator)
        out = lowfreq_crop(images, stage.size, mean=self.mean, std=self.std, out_dtype=self.dtype)
        return out, params[:, 5]


class _Stage(NamedTuple):
    """The settings a batch is made under: band size, RandAugment magnitude, replay factor."""
    size: int
    magnitude: float
    replay: int


class _Made(NamedTuple):
    """A batch as the producer hands it over: the images decoded for it (0 for a replay of a
    decoding already made), the position after it and the replay factor it was made under."""
    images: torch.Tensor
    labels: torch.Tensor
    decoded: int
    position: tuple
    replay: int


class _PlannedBatch(NamedTuple):
    """A batch to decode: its epoch, its index among the epoch's decoded batches on this rank, and
    its EpochOrder (index, seed) items."""
    epoch: int
    index: int
    items: list


class EpochBatches:
    """What `epoch()`, `epochs()` and `stages()` return: an iterator over (images, labels) batches
    from a position on, made `loader.ready_ahead` batches ahead on a background thread (0: on the
    caller's thread, at each `next`). `position`: (epoch, batch) of the next batch, where a resumed
    run would start. Close it (`close()`, or use it in a `with` block) when leaving it before its end."""

    def __init__(self, loader: "_DeviceLoader", position: tuple, make_source):
        self._loader, self._make_source = loader, make_source  # make_source(position): a _Made generator
        self.position = position
        self._closed = False
        self._open()

    def _open(self):
        loader = self._loader
        batches = self._make_source(self.position)
        self._batches = PrefetchedBatches(batches, loader.device, loader.ready_ahead) if loader.ready_ahead else batches

    def __iter__(self):
        return self

    def __next__(self):
        try:
            made = next(self._batches)
        except StopIteration:
            self._closed = True  # the end: nothing left to make again
            raise
        self.position = made.position
        stats = self._loader.stats
        stats["images_decoded"] += made.decoded
        stats["images_delivered"] += len(made.labels)
        stats["replay"] = made.replay
        return made.images, made.labels

    def _restart(self) -> None:
        """Drop the batches made ahead; make them again from `position` (set_stage's change)."""
        if not self._closed:
            self._batches.close()
            self._open()

    def close(self) -> None:
        self._closed = True
        self._batches.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class DeviceImageLoader(_DeviceLoader):
    """Iterate `loader.epoch(e)` in place of a DataLoader: (images, labels) on `device`.

    images: (batch_size, 3, size, size) in `dtype`, normalised with mean/std; labels: (batch_size,)
    int64, ImageFolder's indices (sorted class folder names). An epoch yields
    `batches_per_epoch()` batches: this rank's whole batches of the shuffled files, each delivered
    `replay` times. Files that cannot be decoded are reported once each and their batch slots
    filled with other images of the same batch (the shape stays static); a batch with no readable
    file is dropped with a warning. `stats` counts the images delivered and those decoded for them
    (fewer under replay), the files skipped, batches dropped, and the replay factor in force.

    Arguments: root, an ImageFolder-style folder; out_size, the RandomResizedCrop output (pixels);
    size, the low-frequency crop's band = the output size (default out_size); magnitude, the
    RandAugment magnitude (rand_augment=False turns it off); scale, ratio, flip_prob as torchvision's
    RandomResizedCrop and RandomHorizontalFlip; workers, reader threads; prefetch, batches whose
    files are read ahead; ready_ahead, delivered batches made ahead by a background thread (on CUDA
    on a stream of its own; 0: each batch is made on the caller's thread when asked); max_side, the
    longer side images are shrunk to before cropping (None: never), since the largest image of a
    batch sets the padded size, memory and work of the whole batch (512 keeps ImageNet's typical
    500×375 files intact, and a box of scale >= 0.35 of a 512 px image still spans ~300 px, more
    than the 224 px output); max_pixels, the size above which a file is skipped; decoder, the JPEG
    decoder: "torchvision" (torchvision.io.decode_jpeg, nvJPEG's CUDA decoder on a GPU) or
    "nvimgcodec" (nvImageCodec, which uses the GPU's hardware JPEG decoder where there is one; the
    package nvidia-nvimgcodec-cu13, `pip install effkernels[nvimgcodec]`). Both give the same
    images on a CPU (libjpeg-turbo); on a GPU their IDCTs may differ by a level or two.

        loader = DeviceImageLoader("imagenet/train", 256, device="cuda", scale=(0.35, 1), seed=0,
                                   rank=rank, world_size=world_size)
        for epoch in range(epochs):
            loader.set_stage(size=96, magnitude=5, replay=4)  # e.g. EfficientTrain++'s first stage
            with loader.epoch(epoch, start_batch=resumed_batch if epoch == first else 0) as batches:
                for images, labels in batches:
                    loss = criterion(model(images), labels)

        # or a curriculum in one iterator, (steps, size, magnitude, replay) per stage:
        with loader.stages(0, 0, [(5000, 96, 0, 4), (5000, 96, 1, 4), (1800, 160, 2, 2)]) as batches:
            for images, labels in batches:
                ...
    """

    def __init__(self, root, batch_size: int, *, device="cuda", out_size: int = 224, size=None, magnitude=9,
                 rand_augment: bool = True, replay: int = 1, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 flip_prob: float = 0.5, dtype=torch.bfloat16, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 4, prefetch: int = 2, ready_ahead: int = 2,
                 max_side=512, max_pixels: int = PIL_MAX_PIXELS, decoder: str = "torchvision"):
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path, got {type(root).__name__}")
        if not os.path.isdir(root):
            raise ValueError(f"root must be a folder of class sub-folders, got {os.fspath(root)!r}")
        for name, value in (("workers", workers), ("prefetch", prefetch), ("max_pixels", max_pixels)):
            check_int(name, value, 1)
        if max_side is not None:
            check_int("max_side", max_side, 1)
        self.classes, self.class_to_idx = image_folder_classes(root)
        self.samples = image_folder_samples(root, self.class_to_idx)
        super().__init__(len(self.samples), batch_size, f"under {os.fspath(root)!r}", device=device,
                         out_size=out_size, size=size, magnitude=magnitude, rand_augment=rand_augment, replay=replay,
                         scale=scale, ratio=ratio, flip_prob=flip_prob, dtype=dtype, mean=mean, std=std, seed=seed,
                         rank=rank, world_size=world_size, ready_ahead=ready_ahead)
        self.workers, self.prefetch, self.max_side, self.max_pixels = workers, prefetch, max_side, max_pixels
        self.skip_log = image_decode.SkipLog()
        self.decoder = decoder
        self._jpeg_decoder = image_decode.jpeg_decoder(decoder, self.device, cpu_threads=workers)

    def _decoded_batches(self, plan):
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="effkernels-reader")
        try:
            pending = collections.deque((planned, self._submit(pool, planned.items))
                                        for planned in itertools.islice(plan, self.prefetch))
            while pending:
                planned, futures = pending.popleft()
                files = [future.result() for future in futures]
                pending.extend((following, self._submit(pool, following.items))
                               for following in itertools.islice(plan, 1))
                yield planned, self._decode(planned.items, files)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, pool, batch):
        pin = self.device.type == "cuda"
        return [pool.submit(image_decode.read_image_file, self.samples[index][0], self.skip_log, self.max_pixels, pin)
                for index, _ in batch]

    def _decode(self, batch, files):
        """(padded images, sizes, labels, images decoded) of a batch's files; bad files' slots take
        good images of the batch in turn; None for a batch without a single good file."""
        jpegs = [f for f in files if f is not None and f.jpeg is not None]
        decoded = iter(image_decode.decode_jpeg_batch(jpegs, self._jpeg_decoder, self.skip_log, self.max_pixels))
        images = [None if f is None else (next(decoded) if f.jpeg is not None else f.image) for f in files]
        good = [slot for slot, image in enumerate(images) if image is not None]
        self.stats["files_skipped"] = len(self.skip_log)
        if not good:
            self.stats["batches_dropped"] += 1
            logger.warning("dropping a batch of %d files: none could be decoded", len(files))
            return None
        sources = [slot if images[slot] is not None else good[slot % len(good)] for slot in range(len(files))]
        padded, sizes = pad_images([images[s] for s in sources], self.device, self.max_side)
        self._jpeg_decoder.done_with(images)
        labels = [self.samples[batch[s][0]][1] for s in sources]
        return padded, sizes, labels, len(good)


class DeviceTensorLoader(_DeviceLoader):
    """DeviceImageLoader for images already in memory: a uint8 (N, 3, H, W) tensor and its labels.

    The same epochs, stages, replay, per-sample seeds, sharding and device transforms (crop + flip +
    resize, RandAugment, low-frequency crop + normalisation + cast) as DeviceImageLoader: the images
    are simply not files. They are copied to `device` once, so each batch is one gather there and
    nothing of it passes through the CPU: for datasets that fit the device's memory (the training
    script's embedded set, CIFAR-sized sets). labels: (N,) integer class indices; classes: their
    names (default "0", "1", ...). Other arguments as DeviceImageLoader's.
    """

    def __init__(self, images, labels, batch_size: int, *, classes=None, device="cuda", out_size: int = 224,
                 size=None, magnitude=9, rand_augment: bool = True, replay: int = 1, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), flip_prob: float = 0.5, dtype=torch.bfloat16, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, seed: int = 0, rank: int = 0, world_size: int = 1, ready_ahead: int = 2):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 Tensor, got {getattr(images, 'dtype', type(images).__name__)}")
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] == 0 or images.shape[3] == 0:
            raise ValueError(f"images must have shape (N, 3, H, W) with H, W >= 1, got {tuple(images.shape)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
                or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer Tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), one per image, got {tuple(labels.shape)}")
        labels = labels.to("cpu", torch.int64)
        if len(labels) and labels.min() < 0:
            raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
        count = int(labels.max()) + 1 if len(labels) else 0
        if classes is None:
            classes = [str(i) for i in range(count)]
        elif not isinstance(classes, (list, tuple)):
            raise TypeError(f"classes must be a list of names, got {type(classes).__name__}")
        elif len(classes) < count:
            raise ValueError(f"classes must name all {count} labels, got {len(classes)} names")
        super().__init__(len(labels), batch_size, "given", device=device, out_size=out_size, size=size,
                         magnitude=magnitude, rand_augment=rand_augment, replay=replay, scale=scale, ratio=ratio,
                         flip_prob=flip_prob, dtype=dtype, mean=mean, std=std, seed=seed, rank=rank,
                         world_size=world_size, ready_ahead=ready_ahead)
        self.classes, self.labels = list(classes), labels.tolist()
        self.images = images.to(self.device)

    def _decoded_batches(self, plan):
        sizes = [tuple(self.images.shape[2:])] * self.batch_size
        for planned in plan:
            indices = torch.tensor([index for index, _ in planned.items])
            if self.device.type == "cuda":
                indices = indices.pin_memory()
            yield planned, (self.images.index_select(0, indices.to(self.device, non_blocking=True)), sizes,
                            [self.labels[index] for index, _ in planned.items], len(planned.items))


def _checked_magnitude(magnitude):
    if not isinstance(magnitude, numbers.Real) or isinstance(magnitude, bool):
        raise TypeError(f"magnitude must be a number, got {type(magnitude).__name__}")
    if not 0 <= magnitude <= 10:
        raise ValueError(f"magnitude must lie in [0, 10], got {magnitude!r}")
    return magnitude


def _checked_replay(replay):
    check_int("replay", replay, 1)
    return replay


def _checked_stage_plan(entry, loader):
    """One (batches, size, magnitude, replay) entry of a stages() plan, checked: (batches, _Stage)."""
    if not (isinstance(entry, (tuple, list)) and len(entry) == 4):
        raise TypeError(f"plan entries must be (batches, size, magnitude, replay), got {entry!r}")
    batches, size, magnitude, replay = entry
    check_int("batches", batches, 1)
    return batches, _Stage(loader._checked_size(size), _checked_magnitude(magnitude), _checked_replay(replay))


def replayed_position(batch: int, old_replay: int, new_replay: int) -> int:
    """An epoch position (delivered batches) carried over a change of replay factor: the next
    decoded batch starts at once, under the new factor."""
    return math.ceil(batch / old_replay) * new_replay
