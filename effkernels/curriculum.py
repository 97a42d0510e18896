"""Training curricula: which input size and RandAugment magnitude to use at each point of a run.

A `Schedule` is a list of stages over training progress in [0, 1]. For EfficientTrain++ progress is
the fraction of the total compute spent (not of epochs): low-resolution stages are cheaper, so
they take more steps for the same share. For the ViT-24h image-size curriculum progress is the
fraction of epochs, as published.
"""
import math
from dataclasses import dataclass

REFERENCE_SIZE = 224  # the presets' sizes are for 224 px training

# EfficientTrain++ (TPAMI 2024), Table "input size per stage": 10 equal compute stages.
EFFICIENTTRAIN_PP_SIZES = {
    "deit_tiny": [96, 96, 160, 160, 160, 160, 192, 192, 224, 224],
    "deit_small": [96, 96, 160, 160, 160, 160, 192, 192, 224, 224],
    "deit_base": [96, 96, 160, 160, 160, 160, 192, 192, 224, 224],
    "swin": [96, 96, 160, 160, 160, 160, 224, 224, 224, 224],
    "resnet": [96, 96, 160, 160, 160, 160, 224, 224, 224, 224],
    "convnext": [160, 160, 160, 160, 160, 160, 224, 224, 224, 224],
}


@dataclass(frozen=True)
class Stage:
    start: float  # progress at which the stage begins, in [0, 1)
    end: float  # progress at which it ends, in (0, 1]
    size: int  # input size (square, px)
    magnitude: int  # RandAugment magnitude


@dataclass(frozen=True)
class Schedule:
    """Stages covering progress [0, 1]; `unit` is what progress measures: "compute" or "epochs"."""

    stages: tuple[Stage, ...]
    unit: str = "compute"

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a schedule needs at least one stage")
        if self.unit not in ("compute", "epochs"):
            raise ValueError(f"unit must be 'compute' or 'epochs', got {self.unit!r}")
        if self.stages[0].start != 0 or self.stages[-1].end != 1:
            raise ValueError("the stages must cover progress from 0 to 1")
        for before, after in zip(self.stages, self.stages[1:]):
            if before.end != after.start:
                raise ValueError(f"stages must be contiguous, got {before} then {after}")
        for stage in self.stages:
            if not stage.start < stage.end:
                raise ValueError(f"a stage must have start < end, got {stage}")
            if stage.size < 1 or stage.magnitude < 0:
                raise ValueError(f"a stage needs size >= 1 and magnitude >= 0, got {stage}")

    def index(self, fraction: float) -> int:
        """The stage in force at `fraction` (the later one at a boundary)."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        for i, stage in enumerate(self.stages):
            if fraction < stage.end:
                return i
        return len(self.stages) - 1

    def at(self, fraction: float) -> tuple[int, int]:
        """(size, magnitude) at progress `fraction` ∈ [0, 1]."""
        stage = self.stages[self.index(fraction)]
        return stage.size, stage.magnitude

    def scaled(self, final_size: int, multiple: int = 1) -> "Schedule":
        """The same schedule for `final_size` training instead of 224 px: every size scaled by
        final_size / 224 and rounded to a multiple of `multiple` (a ViT's patch size), at least one."""
        def scale(size):
            return max(multiple, round(size * final_size / REFERENCE_SIZE / multiple) * multiple)
        stages = tuple(Stage(s.start, s.end, scale(s.size), s.magnitude) for s in self.stages)
        return Schedule(_merge(stages), self.unit)


def _merge(stages):
    """Join neighbouring stages with the same size and magnitude."""
    merged = [stages[0]]
    for stage in stages[1:]:
        last = merged[-1]
        if (stage.size, stage.magnitude) == (last.size, last.magnitude):
            merged[-1] = Stage(last.start, stage.end, last.size, last.magnitude)
        else:
            merged.append(stage)
    return tuple(merged)


def efficienttrain_pp(preset: str) -> Schedule:
    """EfficientTrain++ as published: 10 equal compute stages, magnitude m = 0..9, sizes by preset
    ("deit_tiny", "deit_small", "deit_base", "swin", "resnet", "convnext")."""
    if preset not in EFFICIENTTRAIN_PP_SIZES:
        raise ValueError(f"preset must be one of {sorted(EFFICIENTTRAIN_PP_SIZES)}, got {preset!r}")
    sizes = EFFICIENTTRAIN_PP_SIZES[preset]
    return Schedule(tuple(Stage(i / 10, (i + 1) / 10, size, i) for i, size in enumerate(sizes)))


def vit24h(total_epochs: int, *, final_size: int = 224, start: int = 32, step: int = 32, every: int = 5,
           magnitude: int = 9) -> Schedule:
    """The ViT-24h image-size curriculum: `start` px, + `step` px every `every` epochs, up to
    `final_size` (the published best: 32, +32 every 5 epochs, 224 from epoch 30 on), over
    `total_epochs` epochs, at a fixed RandAugment magnitude."""
    if total_epochs < 1 or every < 1 or step < 1 or not 1 <= start <= final_size:
        raise ValueError("vit24h needs total_epochs >= 1, every >= 1, step >= 1 and 1 <= start <= final_size")
    stages, epoch, size = [], 0, start
    while epoch < total_epochs:
        end = total_epochs if size >= final_size else min(total_epochs, epoch + every)
        stages.append(Stage(epoch / total_epochs, end / total_epochs, min(size, final_size), magnitude))
        epoch, size = end, size + step
    return Schedule(_merge(tuple(stages)), unit="epochs")


def custom(points, unit: str = "compute") -> Schedule:
    """A user schedule from [(start_fraction, size, magnitude), ...], the first starting at 0."""
    points = sorted(points)
    ends = [p[0] for p in points[1:]] + [1.0]
    return Schedule(tuple(Stage(float(f), float(end), int(size), int(m)) for (f, size, m), end in zip(points, ends)), unit)


def warmup_cosine(fraction: float, warmup: float = 0.05) -> float:
    """The learning-rate multiplier at progress `fraction`: linear warmup, then cosine to zero."""
    if fraction < warmup:
        return (fraction + 1e-8) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warmup) / max(1e-8, 1 - warmup))))
