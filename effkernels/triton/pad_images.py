"""Triton kernel of effkernels.resized_crop.pad_images on a GPU: a batch of variable-size images into
one zero-padded (N, C, Hmax, Wmax) tensor in one launch.

The decoded images of a batch are separate tensors; copying each into its slot of the padded batch
is one launch and ~5 µs of host time per image (over a millisecond per 256-image batch). Here the
images are concatenated (torch.cat: a few launches for any count), and one program per (image,
output row) copies that row of every channel from the concatenation, writing zeros past the image.
"""
import torch
import triton
import triton.language as tl

BLOCK = 256  # columns per step


@triton.jit
def _pad_kernel(flat_ptr, layout_ptr, out_ptr, H, W, C: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    row = tl.program_id(1)
    start = tl.load(layout_ptr + n * 3)  # image n's offset in flat, its height and width
    height = tl.load(layout_ptr + n * 3 + 1)
    width = tl.load(layout_ptr + n * 3 + 2)
    for c in tl.static_range(C):
        source = flat_ptr + start + (c * height + row) * width
        target = out_ptr + ((n * C + c) * H + row) * W
        for first in range(0, W, BLOCK):
            cols = first + tl.arange(0, BLOCK)
            values = tl.load(source + cols, mask=(row < height) & (cols < width), other=0)
            tl.store(target + cols, values, mask=cols < W)


def pad_into_batch(images: list, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width) uint8 on the images' device: image n (C, h_n, w_n), h_n <= height,
    w_n <= width, at the top left of slot n, zeros elsewhere. images: same device and channels."""
    channels = images[0].shape[0]
    device = images[0].device
    flat = torch.cat([image.reshape(-1) for image in images])
    starts, offset = [], 0
    for image in images:
        starts.append((offset, image.shape[1], image.shape[2]))
        offset += image.numel()
    layout = torch.tensor(starts, dtype=torch.int64, pin_memory=device.type == "cuda").to(device, non_blocking=True)
    out = torch.empty((len(images), channels, height, width), dtype=torch.uint8, device=device)
    if out.numel():
        _pad_kernel[(len(images), height)](flat, layout, out, height, width, C=channels, BLOCK=BLOCK, num_warps=2)
    return out
