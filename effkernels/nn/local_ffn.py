"""nn.LocalFFN: the ViT-24h locality feed-forward block, a drop-in `mlp_layer` for timm blocks."""
import functools
import math

import torch
from torch import nn

from .. import local_ffn_ops as ops
from ..checks import check_int
from ..ops import pair


class LocalFFN(nn.Module):
    """fc1 → (pre_act) → 3×3 depthwise conv on the token grid → act → fc2, fused (effkernels.local_ffn).

    The constructor takes what timm's `Mlp` takes, so `Block(mlp_layer=LocalFFN)` works as it is;
    the extra keywords choose the published layouts: ViT-24h's code is `act_layer=nn.Hardswish,
    pre_act="hardswish", prefix="skip", bias=False, dw_bias=False`; timm PVTv2 is `act_layer=nn.GELU`
    (`pre_act="relu"` for its `extra_relu` variant). Parameter names match PVTv2's
    `MlpWithDepthwiseConv` (fc1, dwconv, fc2), so its checkpoints load.

    The token grid: `forward(x, grid_size)` when the model knows it (non-square images, a changing
    image size); else the `grid_size` attribute when set; else a square grid inferred from the token
    count. `num_prefix_tokens=None` infers the prefix as the fewest leading tokens that leave a square
    grid (exact for any prefix shorter than 2·side + 1 tokens, i.e. class, distillation and register
    tokens); give it explicitly when the model does.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer=nn.Hardswish,
        norm_layer=None,
        bias: bool | tuple[bool, bool] = True,
        drop: float | tuple[float, float] = 0.0,
        *,
        pre_act=None,
        num_prefix_tokens: int | None = None,
        prefix: str = "mlp",
        grid_size: int | tuple[int, int] | None = None,
        dw_bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        for name, value in (("in_features", in_features), ("hidden_features", hidden_features),
                            ("out_features", out_features)):
            check_int(name, value, 1)
        if num_prefix_tokens is not None:
            check_int("num_prefix_tokens", num_prefix_tokens, 0)
        if grid_size is not None and min(pair(grid_size, "grid_size")) < 1:
            raise ValueError(f"grid_size must be positive, got {grid_size!r}")
        bias1, bias2 = bias if isinstance(bias, tuple) else (bias, bias)
        drop1, drop2 = drop if isinstance(drop, tuple) else (drop, drop)
        factory = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias1, **factory)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features, bias=dw_bias, **factory)
        self.act = activation_name(act_layer, "act_layer", ops.ACTIVATIONS)
        self.pre_act = None if pre_act is None else activation_name(pre_act, "pre_act", ops.PRE_ACTIVATIONS[1:])
        self.drop1 = nn.Dropout(drop1)
        self.norm = norm_layer(hidden_features, **factory) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias2, **factory)
        self.drop2 = nn.Dropout(drop2)
        if prefix not in ops.PREFIX_MODES:
            raise ValueError(f"prefix must be 'mlp' or 'skip', got {prefix!r}")
        self.prefix = prefix
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = grid_size

    def forward(self, x: torch.Tensor, grid_size=None) -> torch.Tensor:
        num_prefix, grid = self.token_layout(x.shape[1], grid_size)
        options = dict(num_prefix_tokens=num_prefix, prefix=self.prefix, pre_act=self.pre_act, act=self.act)
        if isinstance(self.norm, nn.Identity) and not (self.training and self.drop1.p > 0):
            y = ops.local_ffn(x, grid, self.fc1.weight, self.fc1.bias, self.dwconv.weight, self.dwconv.bias,
                              self.fc2.weight, self.fc2.bias, **options)
        else:  # something sits between the activation and fc2: run the fused middle alone
            h = self.fc1(x)
            dw_bias = None if self.dwconv.bias is None else self.dwconv.bias.to(h.dtype)
            a = ops.dwconv_act(h, grid, self.dwconv.weight.to(h.dtype), dw_bias, **options)
            y = self.fc2(self.norm(self.drop1(a)))
            if self.prefix == "skip" and num_prefix > 0:
                y = torch.cat([torch.zeros_like(y[:, :num_prefix]), y[:, num_prefix:]], dim=1)
        return self.drop2(y)

    def token_layout(self, tokens: int, grid_size=None) -> tuple[int, list[int]]:
        """(number of prefix tokens, [H, W]) for a sequence of `tokens` tokens."""
        grid_size = grid_size if grid_size is not None else self.grid_size
        if grid_size is not None:
            grid = pair(grid_size, "grid_size")
            num_prefix = self.num_prefix_tokens
            if num_prefix is None:
                num_prefix = tokens - grid[0] * grid[1]
            if num_prefix < 0 or tokens != num_prefix + grid[0] * grid[1]:
                raise ValueError(
                    f"x holds {tokens} tokens, which is not num_prefix_tokens + H*W for grid_size {tuple(grid)}"
                    + ("" if self.num_prefix_tokens is None else f" and num_prefix_tokens={self.num_prefix_tokens}")
                )
            return num_prefix, grid
        candidates = [self.num_prefix_tokens] if self.num_prefix_tokens is not None else range(tokens)
        for num_prefix in candidates:
            side = math.isqrt(max(tokens - num_prefix, 0))
            if side > 0 and side * side == tokens - num_prefix:
                return num_prefix, [side, side]
        raise ValueError(
            f"x holds {tokens} tokens, which is no square grid"
            + ("" if self.num_prefix_tokens is None else f" after num_prefix_tokens={self.num_prefix_tokens}")
            + ": pass grid_size to forward() or set the module's grid_size"
        )

    def extra_repr(self) -> str:
        return (
            f"pre_act={self.pre_act}, act={self.act!r}, prefix={self.prefix!r}, "
            f"num_prefix_tokens={self.num_prefix_tokens}, grid_size={self.grid_size}"
        )


_PROBE_POINTS = torch.linspace(-6.0, 6.0, 121, dtype=torch.float64)


def activation_name(activation, argument: str, allowed) -> str:
    """The name effkernels uses for `activation`: a name, an activation module class, factory or instance.

    Classes are recognised by what they compute, not by their name, so timm's and torch's GELU,
    GELU(approximate="tanh"), Hardswish and ReLU variants all map to the fused kernels' names.
    """
    if isinstance(activation, str):
        if activation not in allowed:
            raise ValueError(f"{argument} must be one of {allowed}, got {activation!r}")
        return activation
    module = activation() if isinstance(activation, (type, functools.partial)) else activation
    if callable(module):
        from ..reference import ACTIVATIONS

        with torch.no_grad():
            try:
                probed = module(_PROBE_POINTS.clone())
            except Exception:  # noqa: BLE001  (anything that cannot act on a tensor is rejected below)
                probed = None
        for name in allowed:
            if probed is not None and torch.allclose(probed.double(), ACTIVATIONS[name](_PROBE_POINTS), atol=1e-6):
                return name
    raise ValueError(f"{argument} must compute one of {allowed}, got {activation!r}")
