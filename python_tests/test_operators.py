"""effkernels.operators.resize_operator, the matrix behind every resize and crop box in the package."""
import pytest
import torch
import torch.nn.functional as F

from effkernels import operators


def dense_triangle_operator(in_size, out_size, total_in, offset):
    """The spec written over every (output, input) pair: the triangle filter stretched by the downscale
    factor, clipped to the segment [offset, offset + in_size) and renormalised."""
    scale = in_size / out_size
    inv_scale = 1 / scale if scale >= 1 else 1.0
    centers = scale * (torch.arange(out_size, dtype=torch.float64)[:, None] + 0.5)
    source = torch.arange(total_in, dtype=torch.float64) - offset
    weights = (1 - ((source + 0.5 - centers) * inv_scale).abs()).clamp_min(0)
    weights = weights * ((source >= 0) & (source < in_size))
    return weights / weights.sum(-1, keepdim=True)


@pytest.mark.parametrize("total_in", [1, 2, 7, 33, 50])
@pytest.mark.parametrize("out_size", [1, 3, 16, 61])
def test_resize_operator_is_the_dense_triangle_filter(total_in, out_size):
    """Every segment of the axis at once (per-sample tensors): equal to the dense spec to the last bit where
    a row has at most two taps (upsampling: what the Triton operator builder reproduces bit for bit), to
    float64 rounding of the row sum elsewhere; and each row equal to its scalar call."""
    segments = [(size, offset) for size in range(1, total_in + 1) for offset in range(total_in - size + 1)]
    sizes, offsets = (torch.tensor(column) for column in zip(*segments))
    batch = operators.resize_operator(sizes, out_size, total_in, offsets)
    assert batch.shape == (len(segments), out_size, total_in) and batch.dtype == torch.float64
    for (size, offset), matrix in zip(segments, batch):
        expected = dense_triangle_operator(size, out_size, total_in, offset)
        if size <= out_size:
            assert torch.equal(matrix, expected), (size, offset)
        else:
            torch.testing.assert_close(matrix, expected, rtol=0, atol=4e-16)
        assert torch.equal(operators.resize_operator(size, out_size, total_in, offset), matrix)


@pytest.mark.parametrize("size", [(37, 53), (224, 224), (9, 300)])
@pytest.mark.parametrize("out_size", [(20, 41), (96, 224)])
def test_resize_operator_matches_interpolate_antialias(size, out_size):
    """A random crop box resized as F.interpolate(bilinear, antialias) resizes the cropped image."""
    generator = torch.Generator().manual_seed(sum(size) + sum(out_size))
    image = torch.rand(2, 3, 2 * size[0], size[1] + 5, dtype=torch.float64, generator=generator)
    top, left = int(torch.randint(0, size[0] + 1, (), generator=generator)), 3
    rows = operators.resize_operator(size[0], out_size[0], image.shape[2], top)
    cols = operators.resize_operator(size[1], out_size[1], image.shape[3], left)
    crop = image[:, :, top: top + size[0], left: left + size[1]]
    expected = F.interpolate(crop, size=out_size, mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(rows @ image @ cols.T, expected, rtol=0, atol=1e-13)


def test_resize_operator_flips_and_rounds_per_sample():
    """flip mirrors the output rows of the samples it selects; dtype rounds the float64 weights once."""
    sizes, offsets = torch.tensor([5, 9, 9, 1]), torch.tensor([4, 0, 2, 10])
    flip = torch.tensor([True, False, True, True])
    plain = operators.resize_operator(sizes, 7, 11, offsets)
    flipped = operators.resize_operator(sizes, 7, 11, offsets, flip=flip, dtype=torch.float32)
    expected = torch.where(flip[:, None, None], plain.flip(-2), plain).to(torch.float32)
    assert flipped.dtype == torch.float32 and torch.equal(flipped, expected)
