"""One training step (forward, loss, backward, optimizer step), optionally replayed as one CUDA graph
per input shape.

Why the whole step: at the small sizes of a curriculum's early stages a step's kernels are short and
the host sets the pace. torch.compile's reduce-overhead mode graphs the model's forward and backward
but leaves the loss, the optimizer step, autograd's hand-over between them and its own per-call input
checks on the host; a DeiT-S step at 96 px still cost 1.44x its FLOP share that way (one H100,
../shared/GPU-FACTS.md). Captured whole, a steady step is one copy of the batch into the graph's
inputs and one graph launch.

How a shape gets its graph: its first `warmup_steps` steps run eagerly on a side stream (compilation,
cuBLAS workspaces, the optimizer's state, DDP's buckets), the next one is captured and replayed, and
every later step replays. Warm-up and capture steps train on their batches like any other: every batch
is used once either way. A graph would freeze a Python learning rate, so the optimizer keeps it in a
device tensor (`set_lr` fills it) and is made capturable. All graphs share one memory pool: each graph
writes its intermediates before it reads them, and steps never overlap.
"""
import collections
import contextlib
import logging
from typing import Callable, Optional

import torch

from .checks import check_int

logger = logging.getLogger(__name__)


class CudaGraphs:
    """Where a TrainStep warms up and captures on CUDA: one side stream, one memory pool for all graphs.
    A DistributedDataParallel wrapper must be built in `side_stream()` (its gradient hooks then belong
    to the stream the captures run on)."""

    def __init__(self, device: torch.device):
        self._stream = torch.cuda.Stream(device)
        self._pool = torch.cuda.graph_pool_handle()

    @contextlib.contextmanager
    def side_stream(self):
        """The side stream as the current one, after the current stream's work and before its next."""
        current = torch.cuda.current_stream()
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            yield
        current.wait_stream(self._stream)

    def run(self, step: Callable):
        """Run `step` now on the side stream."""
        with self.side_stream():
            return step()

    def capture(self, step: Callable) -> Callable:
        """Record `step`'s device work without running it; the returned function replays it on the
        current stream and returns the tensors `step` returned, rewritten by the replay."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: loader threads (pinned copies, events) may go on while the main thread captures.
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
            result = step()

        def replay():
            graph.replay()
            return result

        return replay


class TrainStep:
    """`step(x, labels, lr)` trains on one batch and returns its loss, a device tensor that the next
    step may overwrite (copy it before then). With `graphs` (a CudaGraphs), each input shape is warmed
    up, captured and then replayed; without, every step runs eagerly. A shape whose capture fails
    (a host sync or a call a graph cannot hold, in some op of the model) keeps training eagerly: the
    failure is logged once and kept in `capture_failures` (shape -> reason), which the report shows."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, *, amp: bool,
                 graphs: Optional[CudaGraphs] = None, warmup_steps: int = 3):
        check_int("warmup_steps", warmup_steps, 1, "a capture needs a step run before it")
        self.net, self.optimizer, self.loss_fn, self.amp = net, optimizer, loss_fn, amp
        self.graphs, self.warmup_steps = graphs, warmup_steps
        self._steps = collections.Counter()  # steps run per input shape
        self._replays = {}  # input shape -> (static inputs, replay)
        self.capture_failures = {}
        if graphs is not None:
            _make_capturable(optimizer)

    def steady(self, x: torch.Tensor, labels: torch.Tensor) -> bool:
        """Whether a step on a batch of this shape runs as every later one will: the first step at a
        shape is a warm-up (compilation), and with graphs so are the eager steps and the capture."""
        return self._steps[_shape_of(x, labels)] >= (self.warmup_steps + 1 if self.graphs else 1)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, lr: float) -> torch.Tensor:
        set_lr(self.optimizer, lr)
        shape = _shape_of(x, labels)
        done = self._steps[shape]
        self._steps[shape] += 1
        if self.graphs is None:
            return self._run(x, labels)
        if done < self.warmup_steps or shape in self.capture_failures:
            return self.graphs.run(lambda: self._run(x, labels))
        if shape not in self._replays:
            inputs = (torch.empty_like(x), torch.empty_like(labels))
            try:
                self._replays[shape] = inputs, self.graphs.capture(lambda: self._run(*inputs))
            except RuntimeError as error:  # CUDA's capture errors included (torch.AcceleratorError)
                self.capture_failures[shape] = (str(error).strip().splitlines() or [type(error).__name__])[0]
                logger.warning("CUDA graph capture failed for inputs %s, %s: %s; steps of that shape run eagerly",
                               tuple(x.shape), x.dtype, self.capture_failures[shape])
                return self.graphs.run(lambda: self._run(x, labels))
        (static_x, static_labels), replay = self._replays[shape]
        static_x.copy_(x)
        static_labels.copy_(labels)
        return replay()

    def _run(self, x, labels):
        self.optimizer.zero_grad(set_to_none=True)
        # A graph must cast the weights it reads at every replay: autocast's cast cache would hand it
        # casts made before the capture.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=self.graphs is None):
            loss = self.loss_fn(self.net(x), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place where it is a tensor (a captured step reads it there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _make_capturable(optimizer):
    """Learning rates into float32 tensors on the parameters' device, and the groups capturable (also
    after load_state_dict has restored an eager run's groups)."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)


def _shape_of(x, labels):
    return tuple(x.shape), x.dtype, tuple(labels.shape), labels.dtype
