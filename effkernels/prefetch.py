"""Batches made ahead on a background thread, on the device's own stream, while the training runs.

Why: made on the training thread, each batch of the device input pipeline holds that thread for its
whole preparation (torchvision's nvJPEG decode returns only once its stream has finished, then
come the crop, RandAugment and low-frequency launches), and lands on the training stream behind the
step before it. A training step replayed from a CUDA graph takes microseconds of host time; the
pipeline's batch takes milliseconds, so the host, not the device, set the pace. Here a producer
thread runs the pipeline up to `depth` batches ahead, on CUDA on a stream of its own, so decoding
and augmentation overlap the steps and the training thread only waits where the pipeline truly is
the slower of the two.

Hand-over on CUDA: the producer records an event after each batch; `next` makes the consumer's
current stream wait for it (no host wait) and marks the batch's tensors as used on that stream, so
that the caching allocator does not give their memory back to the producer while the consumer's
work on them is still queued.
"""
import contextlib
import queue
import threading
import weakref
from typing import Iterator

import torch

from .checks import check_int

_POLL_SECONDS = 0.1  # how soon a producer blocked on a full queue notices close()
_PRODUCER_PRIORITY = -1  # below 0: a stream from the high-priority pool (see _CudaHandOff)


class _Finished:
    """The producer's last word: the source ran out (error None) or raised `error`."""

    def __init__(self, error=None):
        self.error = error


class _CudaHandOff:
    """A producer stream per source; batches cross to the consumer's current stream by event.

    The stream comes from PyTorch's high-priority pool. Pool streams are handed out round robin
    (32 per priority), and an input pipeline makes a producer per epoch: drawn from the default
    pool, one would in time be the very stream a training step is being captured on (CudaGraphs
    draws its side stream there), and its kernels would land in the graph. And where both streams
    have work ready, the input's short kernels go first: the batches must stay ahead of the steps.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device, priority=_PRODUCER_PRIORITY)
        self.stream.wait_stream(torch.cuda.current_stream(device))  # after what the consumer has queued so far

    @contextlib.contextmanager
    def producing(self):
        torch.cuda.set_device(self.device)  # a new thread starts on device 0
        with torch.cuda.stream(self.stream):
            yield

    def made(self, batch):
        event = torch.cuda.Event()
        event.record(self.stream)
        return batch, event

    def take(self, made):
        batch, event = made
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(event)
        for tensor in _tensors(batch):
            tensor.record_stream(consumer)
        return batch


class _HostHandOff:
    """Devices whose work is done when the call returns: nothing to order."""

    @contextlib.contextmanager
    def producing(self):
        yield

    def made(self, batch):
        return batch

    def take(self, made):
        return made


class PrefetchedBatches:
    """An iterator over `source`'s batches (tuples of tensors on `device`), made up to `depth` batches
    ahead by a background thread. That thread starts on `source` at once and alone iterates it (for a
    generator: its cleanup runs there too); its exceptions reach the consumer at the `next` that would
    have returned the failed batch. `close()` (or dropping the iterator) stops the thread and closes the
    source; the batches made ahead are dropped."""

    def __init__(self, source: Iterator, device: torch.device, depth: int = 2):
        check_int("depth", depth, 1)
        device = indexed_device(device)
        self._hand_off = _CudaHandOff(device) if device.type == "cuda" else _HostHandOff()
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._finished = None
        thread = threading.Thread(target=_produce, args=(source, self._hand_off, self._queue, self._stop),
                                  name="effkernels-prefetch", daemon=True)
        thread.start()
        self._closer = weakref.finalize(self, _stop_producer, thread, self._stop, self._queue)

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished is None:
            made = self._queue.get()
            if not isinstance(made, _Finished):
                return self._hand_off.take(made)
            self._finished = made
            self._closer()  # the thread has ended: join it
        if self._finished.error is not None:
            error, self._finished = self._finished.error, _Finished()
            raise error
        raise StopIteration

    def close(self) -> None:
        """Stop the producer (waiting for the batch it is making) and close the source."""
        self._closer()


def indexed_device(device) -> torch.device:
    """`device` with its index: a bare "cuda" names the caller's current GPU, and a new thread's
    current GPU is GPU 0, whatever the thread that made the loader had chosen."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a torch device (e.g. 'cuda', 'cuda:1', 'cpu'), got {device!r}") from error
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _produce(source, hand_off, out: queue.Queue, stop: threading.Event) -> None:
    finished = _Finished()
    try:
        with hand_off.producing():
            for batch in source:
                made = hand_off.made(batch)
                del batch  # the queue holds the only reference: the consumer frees it
                handed_over = _put_unless_stopped(out, made, stop)
                del made
                if not handed_over:
                    return
    except BaseException as error:  # handed to the consumer, raised there
        finished = _Finished(error)
    finally:
        try:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        except BaseException as error:
            finished = _Finished(error)
    _put_unless_stopped(out, finished, stop)


def _put_unless_stopped(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Put item once there is room; False if stopped before."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            pass
    return False


def _stop_producer(thread: threading.Thread, stop: threading.Event, out: queue.Queue) -> None:
    stop.set()
    if thread is not threading.current_thread():
        thread.join()
    while True:  # batches made ahead hold device memory: let it go now
        try:
            out.get_nowait()
        except queue.Empty:
            return


def _tensors(batch):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, (tuple, list)):
        for item in batch:
            yield from _tensors(item)
