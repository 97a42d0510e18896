"""Training-step timing that never makes the host wait for the device.

Reading a clock or the loss around every step synchronises host and device: the GPU then idles
while the host fetches the next batch and launches the next step, a fixed cost per step that
weighs most on the cheap small-size steps of a curriculum (the very steps whose speed the
EfficientTrain++ saving depends on). StepClock instead records marks in stream order (CUDA events
on CUDA, host clock readings elsewhere) and copies each step's loss into a pinned slot, and hands
steps back once their marks have completed, in order, with the input wait and step seconds
measured on the device's own timeline.
"""
import collections
import time
from typing import NamedTuple

import torch

from .checks import check_int


class StepRecord(NamedTuple):
    """One finished step: the caller's info, seconds waiting for its batch, seconds of the step
    itself (both on the device's timeline), and its loss."""
    info: dict
    wait_seconds: float
    step_seconds: float
    loss: float


class _HostMarks:
    """Marks for devices whose work is done when the call returns: host clock readings."""

    def __init__(self, capacity):
        self._losses = [0.0] * capacity

    def mark(self):
        return time.perf_counter()

    def completed(self, mark) -> bool:
        return True

    def wait(self, mark) -> None:
        pass

    def seconds(self, start, end) -> float:
        return end - start

    def store_loss(self, slot, loss) -> None:
        self._losses[slot] = loss.detach().float().item()

    def loss(self, slot) -> float:
        return self._losses[slot]


class _CudaMarks:
    """Marks on the current CUDA stream: timing events; losses copied to pinned memory without a sync."""

    def __init__(self, capacity):
        self._losses = torch.empty(capacity, dtype=torch.float32, pin_memory=True)

    def mark(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def completed(self, mark) -> bool:
        return mark.query()

    def wait(self, mark) -> None:
        mark.synchronize()

    def seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1e3

    def store_loss(self, slot, loss) -> None:
        self._losses[slot].copy_(loss.detach().float(), non_blocking=True)

    def loss(self, slot) -> float:
        return self._losses[slot].item()  # a host tensor: no device sync


class StepClock:
    """Per step: `mark()` before asking for the batch, `mark()` when the step starts, `done(...)`
    after its optimizer step; `ready()` returns the steps whose marks have completed (never waits),
    `drain()` all of them (waits). At most `capacity` steps are pending: a further `done` first
    waits for the oldest (by then long finished on any device that keeps up)."""

    def __init__(self, device: torch.device, capacity: int = 64):
        check_int("capacity", capacity, 1)
        self._marks = _CudaMarks(capacity) if device.type == "cuda" else _HostMarks(capacity)
        self._capacity = capacity
        self._pending = collections.deque()  # (info, wait mark, start mark, end mark, loss slot)
        self._finished = []
        self._next_slot = 0

    def mark(self):
        return self._marks.mark()

    def done(self, info: dict, wait_mark, start_mark, loss: torch.Tensor) -> None:
        """The step that `wait_mark` and `start_mark` bracket has been launched: its loss and end."""
        if len(self._pending) == self._capacity:
            self._marks.wait(self._pending[0][3])
            self._collect()
        slot = self._next_slot
        self._next_slot = (slot + 1) % self._capacity
        self._marks.store_loss(slot, loss)
        self._pending.append((info, wait_mark, start_mark, self._marks.mark(), slot))

    def ready(self) -> list:
        """The StepRecords of the steps that have finished since the last call, in order."""
        self._collect()
        finished, self._finished = self._finished, []
        return finished

    def drain(self) -> list:
        """Wait for every pending step; their StepRecords and those not yet returned, in order."""
        if self._pending:
            self._marks.wait(self._pending[-1][3])
        return self.ready()

    def _collect(self) -> None:
        while self._pending and self._marks.completed(self._pending[0][3]):
            info, wait_mark, start_mark, end_mark, slot = self._pending.popleft()
            self._finished.append(StepRecord(info, self._marks.seconds(wait_mark, start_mark),
                                             self._marks.seconds(start_mark, end_mark), self._marks.loss(slot)))
