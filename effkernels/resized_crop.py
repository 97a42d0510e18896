"""RandomResizedCrop + horizontal flip of a batch of variable-size images as one separable_map launch.

The decoded images of a batch differ in size, so `pad_images` copies them into one zero-padded
(N, 3, Hmax, Wmax) uint8 tensor (on a GPU in one Triton launch: effkernels/triton/pad_images.py).
Cropping the box (top, left, h, w) and resizing it to out×out with antialiased bilinear
interpolation is, per axis, the matrix `resize_operator(h, out, Hmax, top)` (zero weight outside
the box, so the padding never leaks in); a horizontal flip reverses the
output rows of the column operator. `resized_crop_flip` builds every sample's pair of operators on
the device from the (N, 5) box tensor and applies all of them in one `separable_map` call, which
equals torchvision's `resized_crop(..., antialias=True)` then `hflip` up to rounding (a level or
two: torchvision's uint8 kernel rounds its intermediate, this one does not).
"""
import torch
import torch.nn.functional as F

from .operators import resize_operator
from .ops import boxed_separable_map


def pad_images(images: list, device: torch.device, max_side=None) -> tuple[torch.Tensor, list]:
    """((N, 3, Hmax, Wmax) uint8 on device, zeros outside each image; [(h, w)] per image).

    Images whose longer side exceeds max_side are first shrunk to it (antialiased, aspect kept):
    one huge image would otherwise make the whole batch Hmax×Wmax in memory and in compute.
    """
    images = [_fit_within(image, max_side) for image in images]
    sizes = [tuple(image.shape[1:]) for image in images]
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    if device.type == "cuda":  # one launch for the batch, not one copy per image
        from .triton.pad_images import pad_into_batch

        return pad_into_batch([image.to(device, non_blocking=True) for image in images], height, width), sizes
    padded = torch.zeros((len(images), 3, height, width), dtype=torch.uint8, device=device)
    for slot, image in zip(padded, images):
        slot[:, : image.shape[1], : image.shape[2]].copy_(image, non_blocking=True)
    return padded, sizes


def _fit_within(image: torch.Tensor, max_side):
    longer = max(image.shape[1:])
    if max_side is None or longer <= max_side:
        return image
    size = [max(1, round(side * max_side / longer)) for side in image.shape[1:]]
    shrunk = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return shrunk[0].round_().clamp_(0, 255).to(torch.uint8)


def resized_crop_flip(padded: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """(N, 3, out_size, out_size) uint8: box n of padded[n] resized (antialiased bilinear), flipped.

    boxes: (N, 5) integer tensor of (top, left, height, width, flip) on padded's device.
    """
    rows, cols, support = crop_flip_operators(boxes, out_size, *padded.shape[-2:])
    # float16 output: 0..255 to an eighth of a level, so the uint8 result is float32's but where a value
    # lies within a sixteenth of a level of a rounding boundary (a few % of pixels, one level; measured
    # under the interpreter: 4 %, against 25 % and up to two levels with bf16). On the GPU it takes the
    # two-part tensor-core path: 5 passes over the GEMMs instead of float32's 9.
    out = boxed_separable_map(padded, rows, cols, torch.float16, support)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop_flip_operators(boxes: torch.Tensor, out_size: int, height: int, width: int):
    """separable_map's per-sample (rows, cols) of the boxes (N, 5) on a padded (height, width) plane,
    float32 on the boxes' device, and their support (N, 4) int32: each sample's operators are zero
    outside its box, so the GPU kernel skips the rest of the plane."""
    top, left, box_h, box_w, flip = boxes.unbind(1)
    rows = resize_operator(box_h, out_size, height, top, dtype=torch.float32, device=boxes.device)
    cols = resize_operator(box_w, out_size, width, left, flip=flip.bool(), dtype=torch.float32, device=boxes.device)
    support = torch.stack([top, top + box_h, left, left + box_w], 1).to(torch.int32)
    return rows[:, None], cols[:, None], support
