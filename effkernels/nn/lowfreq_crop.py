"""nn.LowFreqCrop: the low-frequency crop as a batch transform module."""
import math
import numbers

import torch

from .. import ops
from ..crop_boxes import check_scale_and_ratio


class LowFreqCrop(torch.nn.Module):
    """EfficientTrain's low-frequency crop as a batch transform on the device, one kernel launch.

    Use it right after `batch.to(device)`: it takes (N, C, H, W) images, uint8 or floating, keeps
    the centred `size` block of their spectrum (the curriculum's input size), optionally resizes
    to `out_size` and normalises with `mean`/`std`. With `random_resized_crop=True` and/or
    `hflip_prob > 0`, training mode also applies torchvision's RandomResizedCrop (resized back to
    the input size, `scale`/`ratio` as torchvision's defaults) and horizontal flip per sample,
    folded into the same operator matrices. Change `size` between curriculum stages by assigning it.
    """

    def __init__(
        self,
        size,
        out_size=None,
        mean=None,
        std=None,
        *,
        random_resized_crop: bool = False,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_prob: float = 0.0,
        out_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        scale, ratio = check_scale_and_ratio(scale, ratio)
        if not isinstance(hflip_prob, numbers.Real) or isinstance(hflip_prob, bool):
            raise TypeError(f"hflip_prob must be a number, got {hflip_prob!r}")
        if not (0.0 <= hflip_prob <= 1.0):
            raise ValueError(f"hflip_prob must lie in [0, 1], got {hflip_prob}")
        self.size = size
        self.out_size = out_size
        self.mean = mean
        self.std = std
        self.random_resized_crop = random_resized_crop
        self.scale = scale
        self.ratio = ratio
        self.hflip_prob = hflip_prob
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = dict(mean=self.mean, std=self.std, out_dtype=self.out_dtype)
        augment = self.training and (self.random_resized_crop or self.hflip_prob > 0)
        if not augment:
            return ops.lowfreq_crop(x, self.size, self.out_size, **kwargs)
        n, _, height, width = x.shape
        boxes = self.sample_boxes(n, height, width) if self.random_resized_crop else None
        flip = torch.rand(n) < self.hflip_prob
        return ops.lowfreq_crop_augmented(x, self.size, self.out_size, boxes=boxes, flip=flip, **kwargs)

    def sample_boxes(self, n: int, height: int, width: int, attempts: int = 10) -> torch.Tensor:
        """(n, 4) int64 (top, left, height, width) boxes, drawn as torchvision's RandomResizedCrop does."""
        area = height * width
        target_area = area * torch.empty(n, attempts, dtype=torch.float64).uniform_(*self.scale)
        log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = log_ratio.exp()
        box_w = (target_area * aspect).sqrt().round().long()
        box_h = (target_area / aspect).sqrt().round().long()
        fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
        first = fits.long().argmax(1, keepdim=True)
        box_h = box_h.gather(1, first).squeeze(1)
        box_w = box_w.gather(1, first).squeeze(1)
        # No attempt fits: torchvision's fallback, the largest centred box within the ratio range.
        fallback_h, fallback_w = self._fallback_box(height, width)
        found = fits.any(1)
        box_h = torch.where(found, box_h, fallback_h)
        box_w = torch.where(found, box_w, fallback_w)
        top = (torch.rand(n, dtype=torch.float64) * (height - box_h + 1)).long()
        left = (torch.rand(n, dtype=torch.float64) * (width - box_w + 1)).long()
        top = torch.where(found, top, (height - box_h) // 2)
        left = torch.where(found, left, (width - box_w) // 2)
        return torch.stack([top, left, box_h, box_w], 1)

    def _fallback_box(self, height: int, width: int) -> tuple[int, int]:
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            return int(round(width / self.ratio[0])), width
        if in_ratio > self.ratio[1]:
            return height, int(round(height * self.ratio[1]))
        return height, width

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, out_size={self.out_size}, random_resized_crop={self.random_resized_crop}, "
            f"hflip_prob={self.hflip_prob}"
        )
