"""effkernels: fused kernels for curriculum training of vision backbones.

`import effkernels` registers the `torch.ops.effkernels.*` ops (schemas and C++ kernels from
effkernels._C; fake kernels, autograd and GPU kernels from effkernels.ops and
effkernels.local_ffn_ops) and the LocalFFN timm models (effkernels.timm). effkernels.augment is
timm's RandAugment batched on uint8 tensors; effkernels.flops counts FLOPs with depthwise convs
counted right.
"""
from . import augment, flops, nn, timm
from .local_ffn_ops import dwconv_act, local_ffn
from .ops import lowfreq_crop, lowfreq_crop_augmented, separable_map

__all__ = ["augment", "dwconv_act", "flops", "local_ffn", "lowfreq_crop", "lowfreq_crop_augmented", "separable_map", "nn",
           "timm"]
__version__ = "0.1.0"
