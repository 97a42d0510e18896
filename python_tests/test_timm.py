"""effkernels.timm on real timm models (CPU): fuse, add_locality, registered LocalFFN DeiTs."""
import copy
import logging

import pytest
import timm
import torch

import effkernels
from effkernels import reference
from effkernels.nn import LocalFFN
from conftest import relative_error


def fwd_bwd(model, x):
    """Output and every parameter's gradient (by name) for a fixed upstream gradient."""
    model.zero_grad()
    out = model(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.dtype))
    return out, {name.removeprefix("_orig_mod."): p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_fuse_pvt_v2_matches_and_keeps_checkpoints(name, caplog):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    fused = copy.deepcopy(model)
    with caplog.at_level(logging.INFO, logger="effkernels.timm"):
        effkernels.timm.fuse(fused)
    depth = sum(len(stage.blocks) for stage in model.stages)
    assert f"swapped {depth} MlpWithDepthwiseConv" in caplog.text
    assert sum(isinstance(m, LocalFFN) for m in fused.modules()) == depth
    x = torch.randn(2, 3, 64, 96)
    out, grads = fwd_bwd(model, x)
    fused_out, fused_grads = fwd_bwd(fused, x)
    assert relative_error(fused_out, out) < 1e-5
    assert grads.keys() == fused_grads.keys()
    for key in grads:
        assert relative_error(fused_grads[key], grads[key]) < 1e-4, key
    # Checkpoints load across the swap, both ways, with strict key matching.
    fused.load_state_dict(model.state_dict())
    model.load_state_dict(fused.state_dict())


def test_fuse_with_nothing_to_fuse_is_an_error():
    with pytest.raises(ValueError, match="found nothing to fuse"):
        effkernels.timm.fuse(timm.create_model("resnet10t"))
    effkernels.timm.fuse(torch.nn.Linear(2, 2), strict=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        effkernels.timm.fuse("pvt_v2_b0")


@pytest.mark.parametrize("layout", ["published", "short"])
def test_add_locality_converts_deit(layout, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", depth=2, img_size=(64, 96), num_classes=5)
    fc1 = model.blocks[0].mlp.fc1.weight.detach().clone()
    effkernels.timm.add_locality(model, layout=layout)
    ffn = model.blocks[0].mlp
    assert isinstance(ffn, LocalFFN) and torch.equal(ffn.fc1.weight, fc1)
    assert (ffn.prefix, ffn.num_prefix_tokens, ffn.act) == ("skip", 1, "hardswish")
    assert ffn.pre_act == ("hardswish" if layout == "published" else None)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert ffn.grid_size == (4, 6)
    monkeypatch.setattr(LocalFFN, "forward", reference.local_ffn_module)
    assert relative_error(out, model(x)) < 1e-5


def test_add_locality_identity_init_and_errors():
    model = effkernels.timm.add_locality(timm.create_model("deit_tiny_patch16_224", depth=1), dw_init="identity")
    weight = model.blocks[0].mlp.dwconv.weight
    assert weight[:, 0, 1, 1].eq(1).all() and weight.abs().sum() == weight.shape[0]
    with pytest.raises(TypeError, match="VisionTransformer"):
        effkernels.timm.add_locality(timm.create_model("resnet10t"))
    with pytest.raises(ValueError, match="no timm Mlp"):
        effkernels.timm.add_locality(model)
    with pytest.raises(ValueError, match="layout must be one of"):
        effkernels.timm.add_locality(timm.create_model("deit_tiny_patch16_224", depth=1), layout="local")
    with pytest.raises(ValueError, match="dw_init must be 'default' or 'identity'"):
        effkernels.timm.add_locality(timm.create_model("deit_tiny_patch16_224", depth=1), dw_init="zeros")
    normed = timm.create_model("deit_tiny_patch16_224", depth=1)
    normed.blocks[0].mlp.norm = torch.nn.LayerNorm(normed.blocks[0].mlp.fc1.out_features)
    with pytest.raises(ValueError, match="norm layer between act and fc2"):
        effkernels.timm.add_locality(normed)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_registered_models(size):
    model = timm.create_model(f"deit_{size}_localffn_patch16_224", depth=1, num_classes=7, drop_path_rate=0.1)
    assert sum(isinstance(m, LocalFFN) for m in model.modules()) == 1
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(f"deit_{size}_localffn_patch16_224", pretrained=True)


def test_one_model_trains_at_two_image_sizes():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_localffn_patch16_224", depth=2, img_size=96, dynamic_img_size=True, num_classes=10)
    for shape in ((96, 96), (160, 160), (96, 160)):
        out, grads = fwd_bwd(model, torch.randn(2, 3, *shape))
        assert out.shape == (2, 10)
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert model.blocks[1].mlp.grid_size == (shape[0] // 16, shape[1] // 16)
        # (the last block's FFN cannot reach the class-token head: its class token skips the FFN)
        assert model.blocks[0].mlp.dwconv.weight.grad.abs().sum() > 0


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_localffn_patch16_224", depth=2, img_size=64, dynamic_img_size=True, num_classes=10)
    compiled = torch.compile(model, fullgraph=True)
    for shape in ((64, 64), (64, 96)):
        x = torch.randn(2, 3, *shape)
        compiled_out, compiled_grads = fwd_bwd(compiled, x)
        out, grads = fwd_bwd(model, x)
        assert relative_error(compiled_out, out) < 1e-5
        for key in grads:
            assert relative_error(compiled_grads[key], grads[key]) < 1e-4, key


def test_autocast_bfloat16():
    model = timm.create_model("deit_tiny_localffn_patch16_224", depth=2, img_size=64, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and relative_error(out, model(x)) < 3e-2
    assert model.blocks[0].mlp.dwconv.weight.grad.dtype == torch.float32
