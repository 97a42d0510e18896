"""Where effkernels.train gets its batches: normalised, at the stage's size, on the training device.

Two sources with one interface, so that the training loop, its timing and its resume logic do not
care which one runs:
- `LoaderInput`: the CPU path. DataLoader workers decode with PIL, apply RandomResizedCrop, the
  flip and timm's RandAugment; the curriculum's shrink (lowfreq_crop, or antialiased resizing)
  then runs on the device.
- `DeviceInput` (the default on a GPU): effkernels.pipeline. With --data, DeviceImageLoader:
  threads read file bytes, and the device decodes, crops, flips, augments and low-passes. The
  embedded dataset goes to the device once and DeviceTensorLoader does the same from there. The
  CPU path fed an H100 2.8k img/s where a DeiT-S step eats 7.9k-31k.
Both draw every sample's augmentation from its own seed, so a resumed run sees the same data.
"""

import torch
import torch.nn.functional as F
from timm.data import rand_augment_transform
from torchvision import transforms

from . import data, nn as eff_nn
from .pipeline import EFFICIENTTRAIN_PP_REPLAY, DeviceImageLoader, DeviceTensorLoader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RANDOM_RESIZED_CROP_SCALE = (0.35, 1.0)  # EfficientTrain++'s DeiT recipe
REPLAY_PRESETS = {"none": None, "efficienttrain_pp": EFFICIENTTRAIN_PP_REPLAY}
EMBEDDED_TRAIN, EMBEDDED_VAL = 2400, 600


def embedded_split(img_size: int):
    """((train images, labels), (val images, labels)) of the embedded dataset at img_size px."""
    images, labels = data.make_shapes_and_textures(EMBEDDED_TRAIN + EMBEDDED_VAL, img_size, seed=1234)
    return (images[:EMBEDDED_TRAIN], labels[:EMBEDDED_TRAIN]), (images[EMBEDDED_TRAIN:], labels[EMBEDDED_TRAIN:])


class _EvalData:
    """The evaluation split and the full-size shrink both sources evaluate with."""

    def __init__(self, args, device, val_set):
        self.args, self.device, self.val_set = args, device, val_set
        self.lowfreq = eff_nn.LowFreqCrop(args.img_size, mean=MEAN, std=STD)
        self._mean, self._std = (torch.tensor(values, device=device)[:, None, None] for values in (MEAN, STD))
        self._eval_loader = None

    def shrink(self, images, size):
        """uint8 batch on the device → normalised float input at `size` (the curriculum's transform)."""
        if self.args.resize == "lowfreq":
            self.lowfreq.size = size
            return self.lowfreq(images)
        x = images.float() / 255
        if size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return (x - self._mean) / self._std

    def eval_batches(self):
        """(normalised images at the final size, labels on the CPU) of the evaluation split. Its
        workers start once and serve every evaluation of the run: each reads the same files every
        time, so an unreadable one is reported once, not once per evaluation."""
        if self._eval_loader is None:
            workers = self.args.workers
            self._eval_loader = torch.utils.data.DataLoader(self.val_set, 256, num_workers=workers,
                                                            persistent_workers=workers > 0)
        for images, labels in self._eval_loader:
            yield self.shrink(images.to(self.device), self.args.img_size), labels

    @staticmethod
    def eval_transform(size):
        return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])

    def replay_for(self, stage_index) -> int:
        return 1


class LoaderInput(_EvalData):
    """The CPU data path (see the module docstring)."""

    def __init__(self, args, device, rank, world):
        self.rank, self.world = rank, world
        self.rand_augment = _RandAugment()
        train_tf = transforms.Compose([
            transforms.RandomResizedCrop(args.img_size, scale=RANDOM_RESIZED_CROP_SCALE),
            transforms.RandomHorizontalFlip(), self.rand_augment, transforms.PILToTensor()])
        eval_tf = self.eval_transform(args.img_size)
        if args.data is None:
            train, val = embedded_split(args.img_size)
            self.train_set = data.TensorImages(*train, train_tf)
            val_set, self.num_classes = data.TensorImages(*val, eval_tf), len(data.CLASSES)
        else:
            self.train_set = data.image_folder(args.data, train_tf)
            val_set = val_folder(args.val_data, eval_tf, self.train_set.classes)
            self.num_classes = len(self.train_set.classes)
        super().__init__(args, device, val_set)

    def batches_per_epoch(self) -> int:
        return data.batches_per_epoch(len(self.train_set), self.args.batch_size, self.world)

    def batches(self, epoch, start_batch, plan):
        """This rank's batches from batch start_batch of `epoch` on, through the epochs, for each
        (batches, stage, stage index) of `plan` in turn that many at the stage's size and magnitude,
        shrunk on the device: (images, labels, (epoch, batch) of the next batch).

        One DataLoader serves the whole plan: its workers start once and keep making batches ahead
        across epoch ends and stage changes (each sample carries its stage's magnitude)."""
        a = self.args
        schedule = self._batch_schedule(epoch, start_batch, plan)
        per_epoch = self.batches_per_epoch()
        sampler = _ScheduledSamples(schedule, len(self.train_set), a.batch_size, seed=a.seed, rank=self.rank,
                                    world_size=self.world)
        # Its own generator: making the loader then draws nothing from the global RNG, which a resumed
        # run restores from the checkpoint.
        loader = torch.utils.data.DataLoader(_StagedSamples(self.train_set, self.rand_augment), a.batch_size,
                                             sampler=sampler, num_workers=a.workers, drop_last=True,
                                             pin_memory=self.device.type == "cuda",
                                             generator=torch.Generator().manual_seed(a.seed))
        made = iter(loader)
        try:
            for (stage, epoch, batch), (images, labels) in zip(schedule, made):
                position = _next_batch(epoch, batch, per_epoch)
                images = images.to(self.device, non_blocking=True)
                yield self.shrink(images, stage.size), labels.to(self.device, non_blocking=True), position
        finally:
            del made  # stops the workers now, not when the garbage collector gets to it

    def _batch_schedule(self, epoch, start_batch, plan):
        """[(stage, epoch, batch in that epoch)] of every batch the plan trains on, in order."""
        per_epoch = self.batches_per_epoch()
        schedule = []
        for count, stage, _ in plan:
            for _ in range(count):
                schedule.append((stage, epoch, start_batch))
                epoch, start_batch = _next_batch(epoch, start_batch, per_epoch)
        return schedule

    def summary(self) -> dict:
        return {"input": "DataLoader (CPU decode and augmentation)", "loader_workers": self.args.workers}


class DeviceInput(_EvalData):
    """The device pipeline (see the module docstring)."""

    def __init__(self, args, device, rank, world):
        self.replay = REPLAY_PRESETS[args.replay]
        settings = dict(device=device, out_size=args.img_size, scale=RANDOM_RESIZED_CROP_SCALE,
                        dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, mean=MEAN, std=STD,
                        seed=args.seed, rank=rank, world_size=world, ready_ahead=args.input_ahead)
        eval_tf = self.eval_transform(args.img_size)
        if args.data is None:
            train, val = embedded_split(args.img_size)
            self.loader = DeviceTensorLoader(*train, args.batch_size, classes=data.CLASSES, **settings)
            val_set = data.TensorImages(*val, eval_tf)
        else:
            self.loader = DeviceImageLoader(args.data, args.batch_size, workers=max(1, args.workers),
                                            decoder=args.decoder, **settings)
            val_set = val_folder(args.val_data, eval_tf, self.loader.classes)
        self.num_classes = len(self.loader.classes)
        super().__init__(args, device, val_set)

    def replay_for(self, stage_index) -> int:
        """EfficientTrain++'s replay factor of a stage (1 without --replay)."""
        return 1 if self.replay is None else self.replay[stage_index]

    def batches_per_epoch(self) -> int:
        """Decoded batches per epoch: the epoch's length without replay."""
        return self.loader.batches_per_epoch_decoded()

    def batches(self, epoch, start_batch, plan):
        """As LoaderInput.batches, start_batch counted at the first stage's replay factor; made ahead
        across epoch ends and stage changes too (loader.stages)."""
        stages = [(count, stage.size, stage.magnitude, self.replay_for(index)) for count, stage, index in plan]
        with self.loader.stages(epoch, start_batch, stages) as batches:
            for images, labels in batches:
                yield images, labels, batches.position

    def summary(self) -> dict:
        stats = self.loader.stats
        if self.args.data is None:
            source = {"input": "device pipeline (effkernels.pipeline), the embedded images in device memory"}
        else:
            source = {"input": "device pipeline (effkernels.pipeline)", "reader_threads": self.loader.workers,
                      "decoder": self.loader.decoder}
        return {**source, "batches_made_ahead": self.loader.ready_ahead, "replay": self.args.replay,
                "images_decoded": stats["images_decoded"], "images_delivered": stats["images_delivered"],
                "files_skipped": stats["files_skipped"]}


def val_folder(root, transform, classes):
    """--val-data's ImageFolder, None without it. Its classes must be --data's, by name: its labels
    would otherwise name other classes than the model was trained on."""
    if root is None:
        return None
    val_set = data.image_folder(root, transform)
    if val_set.classes != list(classes):
        missing, extra = sorted(set(classes) - set(val_set.classes)), sorted(set(val_set.classes) - set(classes))
        raise SystemExit(f"effkernels-train: error: --val-data's classes differ from --data's (missing: {missing}, "
                         f"extra: {extra}), so its labels would name other classes")
    return val_set


def check_replay_schedule(args, stages) -> str | None:
    """Why --replay cannot be used with this run, or None."""
    preset = REPLAY_PRESETS[args.replay]
    if preset is None:
        return None
    if args.input != "device":
        return "--replay needs --input device"
    if len(stages) != len(preset):
        return f"--replay {args.replay} needs a schedule of {len(preset)} stages, got {len(stages)}"
    return None


def make_input(args, device, rank, world):
    return (DeviceInput if args.input == "device" else LoaderInput)(args, device, rank, world)


def _next_batch(epoch, batch, per_epoch):
    """The (epoch, batch) position that follows batch `batch` of `epoch`."""
    return (epoch, batch + 1) if batch + 1 < per_epoch else (epoch + 1, 0)


class _ScheduledSamples(torch.utils.data.Sampler):
    """The (index, augmentation seed, magnitude) of every sample of a batch schedule
    (LoaderInput._batch_schedule): each batch as data.EpochOrder orders its epoch, with its stage's
    RandAugment magnitude."""

    def __init__(self, schedule, length, batch_size, *, seed, rank, world_size):
        self.schedule, self.length, self.batch_size = schedule, length, batch_size
        self.order = dict(seed=seed, rank=rank, world_size=world_size)

    def __iter__(self):
        ordered_epoch, items = None, []
        for stage, epoch, batch in self.schedule:
            if epoch != ordered_epoch:
                ordered_epoch, items = epoch, data.EpochOrder(self.length, self.batch_size, epoch=epoch, **self.order).items
            for index, seed in items[batch * self.batch_size:(batch + 1) * self.batch_size]:
                yield index, seed, stage.magnitude

    def __len__(self):
        return len(self.schedule) * self.batch_size


class _StagedSamples(data.SeededSamples):
    """SeededSamples whose items also carry the RandAugment magnitude to apply (in the worker that
    makes the sample, whose copy of the transform this sets)."""

    def __init__(self, dataset, rand_augment):
        super().__init__(dataset)
        self.rand_augment = rand_augment

    def __getitem__(self, item):
        index, seed, magnitude = item
        self.rand_augment.magnitude = magnitude
        return super().__getitem__((index, seed))


class _RandAugment:
    """timm's RandAugment (`rand-m{m}-mstd0.5-inc1`) whose magnitude the curriculum sets per stage."""

    def __init__(self):
        self.magnitude, self._ops = 0, {}

    def __call__(self, image):
        if self.magnitude not in self._ops:
            # magnitude_max 9.99: at 10 timm's increasing posterize keeps 0 bits, which Pillow 12+ rejects.
            hparams = {"img_mean": (124, 116, 104), "magnitude_max": 9.99}
            self._ops[self.magnitude] = rand_augment_transform(f"rand-m{self.magnitude}-mstd0.5-inc1", hparams)
        return self._ops[self.magnitude](image)
