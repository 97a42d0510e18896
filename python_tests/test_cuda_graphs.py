"""The GPU ops inside CUDA graphs, as torch.compile's reduce-overhead mode,
torch.cuda.make_graphed_callables and the training script's whole-step graphs (TrainStep) run them:
captured once, replayed on new data, equal to eager.

This is what removes the kernel-launch overhead of the small early-curriculum steps; a host
round trip or an allocation the capture cannot see would fail here. GPU only.
"""
import copy

import pytest
import torch

import effkernels
from conftest import HAS_CUDA, HAS_CUDA_CPP

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(params=["triton", "cuda"])
def gpu_backend(request, monkeypatch):
    if request.param == "cuda" and not HAS_CUDA_CPP:
        pytest.skip("effkernels was built without its CUDA C++ kernels")
    monkeypatch.setenv("EFFKERNELS_BACKEND", request.param)


def test_lowfreq_crop_replays_on_new_images(gpu_backend):
    images = torch.randint(0, 256, (4, 3, 64, 48), dtype=torch.uint8, device="cuda")

    def transform():
        return effkernels.lowfreq_crop(images, (24, 18), 32, mean=MEAN, std=STD)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: kernel compilation, operator caches
        for _ in range(2):
            transform()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = transform()
    for _ in range(2):
        images.copy_(torch.randint_like(images, 0, 256))
        graph.replay()
        torch.testing.assert_close(captured, transform(), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["mlp", "skip"])
def test_local_ffn_forward_and_backward_replay(gpu_backend, prefix):
    ffn = effkernels.nn.LocalFFN(32, 72, act_layer="hardswish", pre_act="hardswish", prefix=prefix,
                                 num_prefix_tokens=1, grid_size=(5, 6)).cuda()
    eager = copy.deepcopy(ffn)  # make_graphed_callables replaces ffn's own forward
    sample = torch.randn(3, 1 + 5 * 6, 32, device="cuda", requires_grad=True)
    graphed = torch.cuda.make_graphed_callables(ffn, (sample,))
    for _ in range(2):
        x = torch.randn_like(sample)
        grad_out = torch.randn_like(sample)
        results = []
        for module in (graphed, eager):
            module.zero_grad(set_to_none=True)
            inputs = x.clone().requires_grad_()
            out = module(inputs)
            out.backward(grad_out)
            # A graph's outputs are its static buffers, overwritten by the next replay: copy them.
            results.append([t.detach().clone() for t in (out, inputs.grad, *(p.grad for p in module.parameters()))])
        assert len(results[0]) == len(results[1]) == 8
        for replayed, expected in zip(*results):
            torch.testing.assert_close(replayed, expected)


def test_whole_training_step_replays_as_eager_steps_train(gpu_backend):
    """The training script's step (a LocalFFN ViT under bf16 autocast, cross-entropy, fused AdamW)
    captured per input size and replayed on new batches with a changing learning rate, against the
    same steps run eagerly: the same losses and the same weights."""
    import timm
    import torch.nn.functional as F

    from effkernels.train_step import CudaGraphs, TrainStep

    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_localffn_patch16_224", num_classes=5, patch_size=8, depth=2, embed_dim=64,
                            num_heads=2, dynamic_img_size=True, img_size=32).cuda()
    nets = {"eager": net, "graphed": copy.deepcopy(net)}
    steps = {name: TrainStep(module, torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True), F.cross_entropy,
                             amp=True, graphs=CudaGraphs(torch.device("cuda")) if name == "graphed" else None,
                             warmup_steps=2)
             for name, module in nets.items()}
    generator = torch.Generator(device="cuda").manual_seed(1)
    for i, size in enumerate([24] * 5 + [32] * 5):  # two curriculum sizes: a graph each
        x = torch.randn(6, 3, size, size, device="cuda", generator=generator)
        labels = torch.randint(0, 5, (6,), device="cuda", generator=generator)
        lr = 1e-3 * (1 - i / 10)
        losses = {name: step(x, labels, lr).clone() for name, step in steps.items()}
        torch.testing.assert_close(losses["graphed"], losses["eager"], rtol=2e-3, atol=2e-3, msg=f"step {i}")
    assert steps["graphed"].steady(x, labels) and not steps["graphed"].capture_failures
    for (name, a), b in zip(nets["eager"].named_parameters(), nets["graphed"].parameters()):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=2e-4, msg=name)


def test_captures_succeed_while_the_input_thread_works():
    """The input pipeline's thread (effkernels.prefetch) keeps allocating, pinning host memory,
    launching and waiting for its own stream, as torchvision's nvJPEG decode does, while the
    training thread captures (CudaGraphs, thread-local capture mode): every capture succeeds and
    replays right."""
    import threading

    from effkernels.prefetch import PrefetchedBatches
    from effkernels.train_step import CudaGraphs

    stop = threading.Event()

    def busy_input():
        while not stop.is_set():
            pinned = torch.randint(0, 256, (1 << 16,), dtype=torch.uint8).pin_memory()
            total = pinned.to("cuda", non_blocking=True).float().mul(2).sum()
            torch.cuda.current_stream().synchronize()
            yield (total,)

    batches = PrefetchedBatches(busy_input(), "cuda", depth=2)
    graphs = CudaGraphs(torch.device("cuda"))
    weights = torch.zeros(4096, device="cuda")
    try:
        for i in range(12):
            next(batches)
            replay = graphs.capture(lambda: (weights * 3 + 1).sum())
            weights.fill_(float(i))
            assert replay().item() == (3 * i + 1) * 4096
    finally:
        stop.set()
        batches.close()
