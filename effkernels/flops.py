"""FLOP counting that is right for the models effkernels trains: torch's FlopCounterMode with the
convolution backward counted correctly for grouped (depthwise) convs.

The training script's cost model and the benchmarks' FLOP columns come from here.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


# torch.utils.flop_counter counts convolution_backward's weight gradient as conv(xᵀ, grad_outᵀ) with
# the batch as the input channels, ignoring `groups`: for a depthwise conv (groups = channels) that is
# the count of a dense C×C conv, `channels` times too many. The eager reference LocalFFN DeiT-S was
# counted at 127.8 GFLOP per 224-px image for ~28 of real work (12 blocks × 2·9·196·1536² ≈ 100 GFLOP
# of phantom weight-gradient FLOPs). The weight gradient of any conv, grouped or transposed or not,
# does the multiply-adds of its forward (each weight meets each output position once per sample):
# the forward count, which for groups = 1 is what torch's formula gives.
def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs):
    """FLOPs of aten.convolution_backward, right for grouped and depthwise convs too."""
    flops = 0
    if output_mask[0]:  # grad_input: the transposed conv of grad_out with w, as torch counts it
        flops += conv_flop_count(grad_out_shape, w_shape, x_shape, not transposed)
    if output_mask[1]:  # grad_weight: the forward's multiply-adds
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


FLOP_FORMULA_FIXES = {torch.ops.aten.convolution_backward: conv_backward_flops}


def flop_counter(**kwargs):
    """A FlopCounterMode whose convolution backward count is right for grouped convs (see above)."""
    return FlopCounterMode(custom_mapping={**FLOP_FORMULA_FIXES, **kwargs.pop("custom_mapping", {})}, **kwargs)
