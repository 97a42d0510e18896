"""effkernels.nn.LowFreqCrop and the per-sample crop/flip composition it runs on."""
import math

import numpy as np
import pytest
import torch

import effkernels
from effkernels import reference
from effkernels.nn import LowFreqCrop
from torchvision.transforms import RandomResizedCrop
from conftest import relative_error

pytestmark = pytest.mark.cuda_emulated  # without a GPU, backend "cuda" runs the CUDA C++ kernel emulated

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.mark.parametrize("size, out_size", [(8, None), ((7, 6), (10, 9)), ((20, 17), (5, 4))])
def test_augmented_matches_reference(backend, size, out_size):
    x = torch.randint(0, 256, (4, 3, 20, 17), dtype=torch.uint8, device=backend)
    boxes = torch.tensor([[0, 0, 20, 17], [3, 2, 9, 11], [12, 8, 7, 7], [0, 5, 20, 1]])
    flip = torch.tensor([False, True, True, False])
    out = effkernels.lowfreq_crop_augmented(x, size, out_size, boxes=boxes, flip=flip, mean=MEAN, std=STD)
    expected = reference.lowfreq_crop_augmented(x, size, out_size, boxes=boxes, flip=flip, mean=MEAN, std=STD)
    assert relative_error(out, expected) < 1e-5


def test_augmented_gradient(backend):
    x = torch.rand(2, 3, 12, 10, device=backend, requires_grad=True)
    boxes, flip = torch.tensor([[1, 2, 8, 7], [0, 0, 12, 10]]), torch.tensor([True, False])
    grad_out = torch.randn(2, 3, 6, 5, device=backend)
    effkernels.lowfreq_crop_augmented(x, 6, (6, 5), boxes=boxes, flip=flip).backward(grad_out)
    x64 = x.detach().double().requires_grad_()
    reference.lowfreq_crop_augmented(x64, 6, (6, 5), boxes=boxes, flip=flip).backward(grad_out.double())
    assert relative_error(x.grad, x64.grad) < 1e-5


def test_eval_mode_is_the_plain_op(backend):
    x = torch.rand(3, 3, 16, 14, device=backend)
    module = LowFreqCrop(8, (12, 12), MEAN, STD, random_resized_crop=True, hflip_prob=1.0).eval()
    torch.testing.assert_close(module(x), effkernels.lowfreq_crop(x, 8, (12, 12), mean=MEAN, std=STD))


def test_train_mode_applies_the_sampled_boxes_and_flips(backend):
    x = torch.randint(0, 256, (5, 3, 18, 16), dtype=torch.uint8, device=backend)
    module = LowFreqCrop((9, 8), (10, 10), MEAN, STD, random_resized_crop=True, hflip_prob=0.5)
    torch.manual_seed(3)
    out = module(x)
    torch.manual_seed(3)
    boxes = module.sample_boxes(5, 18, 16)
    flip = torch.rand(5) < 0.5
    expected = reference.lowfreq_crop_augmented(x, (9, 8), (10, 10), boxes=boxes, flip=flip, mean=MEAN, std=STD)
    assert relative_error(out, expected) < 1e-5


def test_size_follows_the_curriculum():
    module = LowFreqCrop(4)
    x = torch.rand(2, 3, 16, 16)
    assert module(x).shape == (2, 3, 4, 4)
    module.size = 12
    assert module(x).shape == (2, 3, 12, 12)


@pytest.mark.parametrize("height, width", [(224, 224), (37, 101), (101, 37)])
def test_sampled_boxes_follow_torchvision(height, width):
    """Same rules as torchvision's RandomResizedCrop.get_params: compare the two distributions."""
    torch.manual_seed(0)
    module = LowFreqCrop(8, random_resized_crop=True)
    ours = module.sample_boxes(4000, height, width)
    image = torch.empty(3, height, width)
    theirs = torch.tensor([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
    top, left, box_h, box_w = ours.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (box_h >= 1) & (box_w >= 1)).all())
    assert bool(((top + box_h <= height) & (left + box_w <= width)).all())
    for boxes in (ours, theirs):
        boxes[:, :2] = boxes[:, :2] + boxes[:, 2:] / 2  # compare box centres, not corners
    for column in range(4):
        ours_mean, theirs_mean = ours[:, column].double().mean(), theirs[:, column].double().mean()
        spread = theirs[:, column].double().std() / math.sqrt(4000)
        assert abs(ours_mean - theirs_mean) < 6 * spread + 0.5, column


def test_sampler_falls_back_to_a_centred_box():
    module = LowFreqCrop(8, random_resized_crop=True, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    boxes = module.sample_boxes(3, 20, 20)
    assert boxes.tolist() == [[5, 0, 10, 20]] * 3


def test_compile_fullgraph_eval():
    module = LowFreqCrop(8, (12, 12), MEAN, STD).eval()
    compiled = torch.compile(module, fullgraph=True)
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert relative_error(compiled(x), reference.lowfreq_crop(x, 8, (12, 12), mean=MEAN, std=STD)) < 1e-5


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(boxes=torch.tensor([[0, 0, 17, 16]] * 2)), ValueError, "boxes must lie inside"),
        (dict(boxes=torch.tensor([[0, 0, 0, 16]] * 2)), ValueError, "boxes must lie inside"),
        (dict(boxes=torch.tensor([[0, 0, 8, 8]])), ValueError, r"boxes must have shape \(N, 4\)"),
        (dict(boxes=torch.zeros(2, 4)), TypeError, "boxes must be an integer Tensor"),
        (dict(flip=torch.tensor([1, 0])), TypeError, "flip must be a bool Tensor"),
        (dict(mean=[0.5]), ValueError, "mean must have one value per channel"),
    ],
)
def test_augmented_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        effkernels.lowfreq_crop_augmented(torch.rand(2, 3, 16, 16), 8, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(scale=(0.5, 0.2)), ValueError, "scale must satisfy"),
        (dict(scale=(0.5, 1.5)), ValueError, "scale must not exceed 1"),
        (dict(scale=(0.5,)), TypeError, "scale must be a pair"),
        (dict(scale=None), TypeError, "scale must be a pair"),
        (dict(ratio=(0, 1)), ValueError, "ratio must satisfy"),
        (dict(ratio="wide"), TypeError, "ratio must be a pair"),
        (dict(hflip_prob=1.5), ValueError, "hflip_prob"),
        (dict(hflip_prob="half"), TypeError, "hflip_prob must be a number"),
    ],
)
def test_module_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LowFreqCrop(8, **kwargs)


def test_module_takes_numpy_and_tensor_scale_and_ratio():
    module = LowFreqCrop(np.int64(8), scale=np.array([0.3, 1.0]), ratio=(np.float32(0.75), np.float64(4 / 3)))
    assert (module.scale, module.ratio) == ((0.3, 1.0), (0.75, 4 / 3))
    assert LowFreqCrop(8, scale=torch.tensor([0.25, 0.5])).scale == (0.25, 0.5)
