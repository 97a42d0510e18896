"""TrainStep: the training step that the training script replays from one CUDA graph per input shape.

On the CPU a stand-in for CudaGraphs (conftest.PythonGraphs) keeps a graph's contract (a capture
runs nothing; a replay runs the captured step on the inputs it was captured with), so the step's
bookkeeping is checked everywhere: warm-ups, one capture per shape, the batch copied into the
graph's inputs, the learning rate read from a tensor. test_cuda_graphs.py runs real graphs on a GPU.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import PythonGraphs
from effkernels.train_step import TrainStep, set_lr


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 5))


def train_step(net, graphs=None, warmup_steps=2):
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05, fused=True)
    return TrainStep(net, optimizer, F.cross_entropy, amp=False, graphs=graphs, warmup_steps=warmup_steps)


def batches(count, size, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, size, size, generator=generator), torch.randint(0, 5, (4,), generator=generator))
            for _ in range(count)]


def test_graphed_steps_train_as_eager_steps_do():
    eager_net = small_net()
    graphed_net = copy.deepcopy(eager_net)
    eager, graphs = train_step(eager_net), PythonGraphs()
    graphed = train_step(graphed_net, graphs)
    data = batches(6, 8, seed=1) + batches(5, 12, seed=2)  # two input shapes, as two curriculum stages
    steady = []
    for i, (x, labels) in enumerate(data):
        lr = 1e-2 * (1 - i / len(data))
        steady.append((eager.steady(x, labels), graphed.steady(x, labels)))
        expected = eager(x, labels, lr).item()
        assert graphed(x, labels, lr).item() == pytest.approx(expected, rel=1e-6), f"step {i}"
    # Per shape: eager steps warm up once; graphed ones twice eagerly, then the capture, then replays.
    assert [e for e, _ in steady] == [False, True, True, True, True, True, False, True, True, True, True]
    assert [g for _, g in steady] == [False, False, False, True, True, True, False, False, False, True, True]
    assert graphs.eager_steps == 4 and graphs.captures == 2
    for (name, a), b in zip(eager_net.named_parameters(), graphed_net.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


class FailingCaptures(PythonGraphs):
    """A capture that fails, as CUDA's does when a step syncs with the host."""

    def capture(self, step):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")


def test_a_shape_whose_capture_fails_trains_eagerly_and_says_so(caplog):
    eager_net = small_net()
    graphed_net = copy.deepcopy(eager_net)
    eager, graphed = train_step(eager_net), train_step(graphed_net, FailingCaptures())
    for i, (x, labels) in enumerate(batches(5, 8, seed=4)):
        expected = eager(x, labels, 1e-2).item()
        assert graphed(x, labels, 1e-2).item() == pytest.approx(expected, rel=1e-6), f"step {i}"
    assert graphed.graphs.eager_steps == 5 and graphed.steady(x, labels)
    assert list(graphed.capture_failures.values()) == ["CUDA error: operation not permitted when stream is capturing"]
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "(4, 3, 8, 8)" in caplog.text
    for a, b in zip(eager_net.parameters(), graphed_net.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_replay_trains_on_the_batch_it_is_given():
    """Replays of one shape, each on a new batch: the batch reaches the graph's inputs every time."""
    net = small_net()
    step = train_step(net, PythonGraphs(), warmup_steps=1)
    data = batches(3, 8, seed=3)
    for x, labels in data[:2]:
        step(x, labels, 1e-2)
    again = copy.deepcopy(net)
    expected = F.cross_entropy(again(data[2][0]), data[2][1]).item()
    assert step(*data[2], 1e-2).item() == pytest.approx(expected, rel=1e-6)


def test_graphed_step_holds_its_learning_rate_in_a_tensor():
    net = small_net()
    step = train_step(net)
    eager_state = copy.deepcopy(step.optimizer.state_dict())  # an eager run's checkpoint: float lr, not capturable
    graphed = train_step(net, PythonGraphs())
    graphed.optimizer.load_state_dict(eager_state)
    graphed = TrainStep(net, graphed.optimizer, F.cross_entropy, amp=False, graphs=PythonGraphs())
    group = graphed.optimizer.param_groups[0]
    lr = group["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32 and group["capturable"]
    set_lr(graphed.optimizer, 0.25)
    assert group["lr"] is lr and lr.item() == 0.25  # filled in place: a graph reads it at the same address
    set_lr(step.optimizer, 0.5)
    assert step.optimizer.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("warmup_steps,error", [(0, ValueError), (-1, ValueError), ("3", TypeError), (True, TypeError)])
def test_bad_warmup_steps_are_refused(warmup_steps, error):
    with pytest.raises(error, match="warmup_steps"):
        train_step(small_net(), PythonGraphs(), warmup_steps=warmup_steps)


def test_cuda_graphs_warm_up_and_capture_on_one_side_stream_into_one_pool():
    """CudaGraphs' CUDA calls, checked against torch's real signatures (autospec) with no GPU: warm-ups
    run on the side stream ordered both ways with the current one, captures use that stream, one pool
    and thread-local capture errors (loader threads may touch CUDA meanwhile), and a replay returns
    the captured step's outputs."""
    from unittest import mock

    from effkernels.train_step import CudaGraphs

    side, current = mock.Mock(name="side"), mock.Mock(name="current")
    with mock.patch.object(torch.cuda, "Stream", autospec=True, return_value=side), \
            mock.patch.object(torch.cuda, "graph_pool_handle", autospec=True, return_value="pool"), \
            mock.patch.object(torch.cuda, "current_stream", autospec=True, return_value=current), \
            mock.patch.object(torch.cuda, "stream", autospec=True) as make_current, \
            mock.patch.object(torch.cuda, "CUDAGraph", autospec=True) as new_graph, \
            mock.patch.object(torch.cuda, "graph", autospec=True) as capturing:
        graphs = CudaGraphs(torch.device("cuda"))
        assert graphs.run(lambda: "eager loss") == "eager loss"
        side.wait_stream.assert_called_once_with(current)
        current.wait_stream.assert_called_once_with(side)
        make_current.assert_called_once_with(side)

        captured = []
        replay = graphs.capture(lambda: captured.append(1) or "static loss")
        capturing.assert_called_once_with(new_graph.return_value, pool="pool", stream=side,
                                          capture_error_mode="thread_local")
        assert captured == [1] and not new_graph.return_value.replay.called
        assert replay() == "static loss" and replay() == "static loss"
        assert new_graph.return_value.replay.call_count == 2 and captured == [1]
