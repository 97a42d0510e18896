"""Use the effkernels ops in timm models: swap modules in place, or build LocalFFN ViTs by name.

- `fuse(model)`: every module that computes what a fused op computes is replaced by the fused
  version, weights kept (today: PVTv2's `MlpWithDepthwiseConv` → `nn.LocalFFN`).
- `add_locality(model)`: a timm VisionTransformer (ViT/DeiT families) becomes its LocalFFN version
  as in "Training a ViT from scratch in less than 24 hours with 1 GPU".
- `timm.create_model("deit_{tiny,small,base}_localffn_patch16_224", ...)` after `import effkernels`.

Both swaps keep the parameter names of the modules they replace where those exist (fc1, dwconv,
fc2), so checkpoints load across the swap.
"""
import logging

import torch
from timm.layers import Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.pvt_v2 import MlpWithDepthwiseConv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .nn import LocalFFN

logger = logging.getLogger(__name__)

# Published ViT-24h layout (BorealisAI LocalityFeedForward): h-swish before and after the depthwise
# conv, class token split off and concatenated back untouched, no conv bias. "short" is the design
# card's form: linear, depthwise conv, h-swish, linear.
LAYOUTS = {
    "published": dict(pre_act="hardswish", act_layer="hardswish", prefix="skip", dw_bias=False),
    "short": dict(pre_act=None, act_layer="hardswish", prefix="skip", dw_bias=False),
}


def fuse(model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Replace, in place, each module of `model` that one of our fused ops computes; return `model`.

    PVTv2's `MlpWithDepthwiseConv` (either `extra_relu`) becomes an `nn.LocalFFN` with the same
    weights and parameter names; its `(x, feat_size)` call is unchanged. Outputs and gradients match
    the original to rounding. Logs how many modules were swapped; with `strict` (the default) a
    model with nothing to swap is an error, so a silent no-op cannot pass for a speed-up.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    swapped = _replace_modules(model, MlpWithDepthwiseConv, _local_ffn_from_pvt_mlp)
    if strict and swapped == 0:
        raise ValueError(
            f"fuse found nothing to fuse in {type(model).__name__}: it fuses timm PVTv2 "
            "MlpWithDepthwiseConv modules (pass strict=False to allow this)"
        )
    logger.info("effkernels.timm.fuse: swapped %d MlpWithDepthwiseConv -> LocalFFN", swapped)
    return model


def add_locality(model: VisionTransformer, *, layout: str = "published", dw_init: str = "default") -> VisionTransformer:
    """Turn a timm VisionTransformer into its LocalFFN version in place; return it.

    Each block's `Mlp` becomes an `nn.LocalFFN` that keeps fc1 and fc2 (weights and biases) and adds a
    3×3 depthwise conv on the token grid. layout="published" (default) is the ViT-24h code: h-swish
    before and after the conv, the class/register tokens skipping the FFN; layout="short" drops the
    h-swish before the conv. dw_init="default" initialises the conv as nn.Conv2d does (what the
    published code trains from scratch with); "identity" makes it a per-channel identity (centre tap
    1), the gentler start when converting a trained model. The grid size and prefix-token count are
    read from the model's patch embedding on every forward, so `dynamic_img_size=True` models work at
    any image size, square or not, through a curriculum.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"add_locality converts timm VisionTransformer models, got {type(model).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if dw_init not in ("default", "identity"):
        raise ValueError(f"dw_init must be 'default' or 'identity', got {dw_init!r}")

    def convert(mlp):
        return _local_ffn_from_mlp(mlp, model.num_prefix_tokens, layout, dw_init)

    swapped = _replace_modules(model.blocks, Mlp, convert)
    if swapped == 0:
        raise ValueError("add_locality found no timm Mlp in the model's blocks: nothing to convert")
    local_ffns = [m for m in model.blocks.modules() if isinstance(m, LocalFFN)]
    model.patch_embed.register_forward_hook(_grid_size_setter(local_ffns))
    logger.info("effkernels.timm.add_locality: swapped %d Mlp -> LocalFFN (%s layout)", swapped, layout)
    return model


def _replace_modules(root: nn.Module, kind: type, convert) -> int:
    """Replace every submodule of type `kind` under root (not root itself) by convert(module)."""
    swapped = 0
    for name, child in list(root.named_children()):
        if isinstance(child, kind):
            setattr(root, name, convert(child))
            swapped += 1
        else:
            swapped += _replace_modules(child, kind, convert)
    return swapped


def _factory(module: nn.Module) -> dict:
    weight = module.fc1.weight
    return dict(device=weight.device, dtype=weight.dtype)


def _local_ffn_from_pvt_mlp(mlp: MlpWithDepthwiseConv) -> LocalFFN:
    ffn = LocalFFN(
        mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features,
        act_layer=mlp.act, pre_act="relu" if isinstance(mlp.relu, nn.ReLU) else None,
        drop=mlp.drop.p, num_prefix_tokens=0, dw_bias=mlp.dwconv.bias is not None, **_factory(mlp),
    )
    ffn.load_state_dict(mlp.state_dict())
    ffn.train(mlp.training)
    return ffn


def _local_ffn_from_mlp(mlp: Mlp, num_prefix_tokens: int, layout: str, dw_init: str) -> LocalFFN:
    if not isinstance(mlp.norm, nn.Identity):
        raise ValueError("add_locality does not convert an Mlp with a norm layer between act and fc2")
    ffn = LocalFFN(
        mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features,
        bias=(mlp.fc1.bias is not None, mlp.fc2.bias is not None), drop=(mlp.drop1.p, mlp.drop2.p),
        num_prefix_tokens=num_prefix_tokens, **LAYOUTS[layout], **_factory(mlp),
    )
    ffn.fc1 = mlp.fc1
    ffn.fc2 = mlp.fc2
    if dw_init == "identity":
        with torch.no_grad():
            ffn.dwconv.weight.zero_()
            ffn.dwconv.weight[:, 0, 1, 1] = 1
    ffn.train(mlp.training)
    return ffn


def _grid_size_setter(local_ffns):
    """A patch-embedding forward hook that tells every LocalFFN the token grid of this forward."""

    def hook(patch_embed, inputs, output):
        grid = tuple(output.shape[1:3]) if output.dim() == 4 else tuple(patch_embed.grid_size)
        for ffn in local_ffns:
            ffn.grid_size = grid

    return hook


# ---------------------------------------------------------------------------------------------
# Registered LocalFFN DeiT models (no pretrained weights: they exist to be trained)
# ---------------------------------------------------------------------------------------------

def _cfg():
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None, "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj", "classifier": "head",
    }


_WIDTHS = {"tiny": dict(embed_dim=192, num_heads=3), "small": dict(embed_dim=384, num_heads=6),
           "base": dict(embed_dim=768, num_heads=12)}
default_cfgs = generate_default_cfgs({f"deit_{size}_localffn_patch16_224": _cfg() for size in _WIDTHS})


def _create_localffn_deit(size: str, pretrained: bool, layout: str = "published", dw_init: str = "default", **kwargs):
    variant = f"deit_{size}_localffn_patch16_224"
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights: train it (python -m effkernels.train)")
    model_args = dict(patch_size=16, depth=12, **_WIDTHS[size])
    model = build_model_with_cfg(
        VisionTransformer, variant, pretrained=False, pretrained_filter_fn=checkpoint_filter_fn,
        **dict(model_args, **kwargs),
    )
    return add_locality(model, layout=layout, dw_init=dw_init)


@register_model
def deit_tiny_localffn_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-Ti with ViT-24h's LocalFFN in every block (the convs add 9 weights per hidden channel)."""
    return _create_localffn_deit("tiny", pretrained, **kwargs)


@register_model
def deit_small_localffn_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-S with ViT-24h's LocalFFN in every block."""
    return _create_localffn_deit("small", pretrained, **kwargs)


@register_model
def deit_base_localffn_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DeiT-B with ViT-24h's LocalFFN in every block."""
    return _create_localffn_deit("base", pretrained, **kwargs)
