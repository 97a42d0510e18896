"""nn.LocalFFN: timm compatibility, grid/prefix inference, activation mapping, the unfused paths."""
import functools

import pytest
import timm.layers
import torch
from timm.models.vision_transformer import Block

import effkernels
from effkernels import reference
from effkernels.nn import LocalFFN
from conftest import relative_error


def test_timm_block_accepts_it_as_mlp_layer():
    torch.manual_seed(0)
    block = Block(32, 4, mlp_layer=LocalFFN)
    assert isinstance(block.mlp, LocalFFN) and block.mlp.act == "gelu"  # the block's act_layer is kept
    x = torch.randn(2, 1 + 7 * 7, 32, requires_grad=True)
    out = block(x)
    out.sum().backward()
    assert out.shape == x.shape and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("tokens,expected", [(49, (0, [7, 7])), (50, (1, [7, 7])), (201, (5, [14, 14])), (37, (1, [6, 6]))])
def test_infers_prefix_and_square_grid(tokens, expected):
    assert LocalFFN(8).token_layout(tokens) == expected


def test_explicit_grid_and_prefix():
    module = LocalFFN(8, 16, num_prefix_tokens=2)
    assert module.token_layout(2 + 35, (7, 5)) == (2, [7, 5])
    module.grid_size = (5, 7)
    assert module.token_layout(37) == (2, [5, 7])
    with pytest.raises(ValueError, match="not num_prefix_tokens"):
        module.token_layout(40)
    with pytest.raises(ValueError, match="no square grid"):
        LocalFFN(8, num_prefix_tokens=0).token_layout(37)
    inferred = LocalFFN(8, grid_size=(5, 7))  # num_prefix_tokens None: what the grid leaves over
    assert inferred.token_layout(37) == (2, [5, 7]) and inferred.token_layout(35) == (0, [5, 7])
    with pytest.raises(ValueError, match="not num_prefix_tokens"):
        inferred.token_layout(34)


@pytest.mark.parametrize("prefix", ["mlp", "skip"])
def test_matches_reference_non_square(prefix):
    torch.manual_seed(0)
    module = LocalFFN(12, 20, 10, act_layer=torch.nn.Hardswish, pre_act="hardswish", prefix=prefix,
                      num_prefix_tokens=1, dtype=torch.float64)
    x = torch.randn(3, 1 + 7 * 5, 12, dtype=torch.float64)
    out = module(x, (7, 5))
    assert out.shape == (3, 36, 10)
    assert relative_error(out, reference.local_ffn_module(module, x, (7, 5))) < 1e-12


@pytest.mark.parametrize(
    "act_layer,name",
    [
        (torch.nn.GELU, "gelu"),
        (functools.partial(torch.nn.GELU, approximate="tanh"), "gelu_tanh"),
        (timm.layers.GELUTanh, "gelu_tanh"),
        (timm.layers.GELU, "gelu"),
        (torch.nn.ReLU, "relu"),
        (torch.nn.Hardswish, "hardswish"),
        ("relu", "relu"),
    ],
)
def test_activation_classes_map_by_what_they_compute(act_layer, name):
    assert LocalFFN(4, act_layer=act_layer).act == name


def test_unsupported_activation_is_rejected():
    with pytest.raises(ValueError, match="act_layer must compute one of"):
        LocalFFN(4, act_layer=torch.nn.SiLU)
    with pytest.raises(ValueError, match="act_layer must compute one of"):
        LocalFFN(4, act_layer=lambda x: x.no_such_method())  # a callable that fails on a tensor
    with pytest.raises(ValueError, match="pre_act must be one of"):
        LocalFFN(4, pre_act="gelu")
    with pytest.raises(ValueError, match="prefix must be"):
        LocalFFN(4, prefix="drop")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(in_features=-1), ValueError, "in_features must be >= 1"),
        (dict(in_features=4.0), TypeError, "in_features must be an int"),
        (dict(in_features=4, hidden_features=-3), ValueError, "hidden_features must be >= 1"),
        (dict(in_features=4, out_features="8"), TypeError, "out_features must be an int"),
        (dict(in_features=4, num_prefix_tokens=-1), ValueError, "num_prefix_tokens must be >= 0"),
        (dict(in_features=4, num_prefix_tokens=True), TypeError, "num_prefix_tokens must be an int"),
        (dict(in_features=4, grid_size=(0, 3)), ValueError, "grid_size must be positive"),
        (dict(in_features=4, grid_size=(2, 3, 4)), TypeError, "grid_size must be an int or a pair"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalFFN(**kwargs)


def test_norm_and_dropout_between_act_and_fc2():
    torch.manual_seed(0)
    module = LocalFFN(8, 16, norm_layer=torch.nn.LayerNorm, drop=(0.5, 0.0), prefix="skip", num_prefix_tokens=1)
    x = torch.randn(2, 1 + 16, 8)
    module.eval()
    h = torch.nn.functional.linear(x, module.fc1.weight, module.fc1.bias)
    a = reference.dwconv_act(h, (4, 4), module.dwconv.weight, module.dwconv.bias, num_prefix_tokens=1,
                             prefix="skip", act=module.act)
    expected = module.fc2(module.norm(a))
    expected[:, :1] = 0
    assert relative_error(module(x), expected) < 1e-6
    module.train()
    torch.manual_seed(1)
    first = module(x)
    torch.manual_seed(1)
    assert torch.equal(first, module(x)) and not torch.equal(first, module.eval()(x))


def test_loads_timm_pvt_v2_mlp_state_dict():
    from timm.models.pvt_v2 import MlpWithDepthwiseConv

    torch.manual_seed(0)
    pvt = MlpWithDepthwiseConv(16, 32, extra_relu=True)
    module = LocalFFN(16, 32, act_layer=torch.nn.GELU, pre_act="relu", num_prefix_tokens=0)
    module.load_state_dict(pvt.state_dict())
    x = torch.randn(2, 5 * 6, 16)
    assert relative_error(module(x, (5, 6)), pvt(x, (5, 6))) < 1e-5
