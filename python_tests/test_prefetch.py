"""PrefetchedBatches: a source's batches, in order, made ahead on a background thread; its errors
reach the consumer; closing or dropping it stops the thread; on CUDA the consumer's stream waits
for each batch and keeps its memory from the producer until its own work is done."""
import gc
import threading
import time
from unittest import mock

import pytest
import torch

from conftest import HAS_CUDA
from effkernels.prefetch import PrefetchedBatches


def producer_threads():
    return [t for t in threading.enumerate() if t.name == "effkernels-prefetch"]


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Source:
    """A generator of numbered batches that counts what it made and whether it was closed."""

    def __init__(self, count, fail_at=None):
        self.made, self.closed, self.thread = 0, False, None
        self.batches = self._batches(count, fail_at)

    def _batches(self, count, fail_at):
        try:
            for i in range(count):
                self.thread = threading.current_thread()
                if i == fail_at:
                    raise KeyError(f"file {i} vanished")
                self.made += 1
                yield torch.full((2,), float(i)), torch.tensor([i])
        finally:
            self.closed = True


@pytest.fixture(autouse=True)
def no_leftover_threads():
    yield
    gc.collect()
    assert producer_threads() == []


def test_batches_arrive_in_order_and_the_end_repeats():
    source = Source(7)
    batches = PrefetchedBatches(source.batches, "cpu", depth=3)
    got = [int(labels) for _, labels in batches]
    assert got == list(range(7)) and source.closed
    assert source.thread is not threading.current_thread()
    with pytest.raises(StopIteration):
        next(batches)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_the_producer_runs_at_most_depth_batches_ahead(depth):
    source = Source(20)
    batches = PrefetchedBatches(source.batches, "cpu", depth=depth)
    # depth batches wait in the queue and one more is made, waiting for room.
    wait_until(lambda: source.made == depth + 1)
    time.sleep(0.3)
    assert source.made == depth + 1
    next(batches)
    wait_until(lambda: source.made == depth + 2)
    batches.close()
    assert source.closed and source.made == depth + 2


def test_an_error_reaches_the_consumer_after_the_batches_before_it():
    source = Source(5, fail_at=3)
    batches = PrefetchedBatches(source.batches, "cpu")
    assert [int(next(batches)[1]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="file 3 vanished"):
        next(batches)
    with pytest.raises(StopIteration):
        next(batches)
    assert source.closed


def test_close_midway_stops_the_thread_and_closes_the_source():
    source = Source(100)
    batches = PrefetchedBatches(source.batches, "cpu", depth=2)
    next(batches)
    batches.close()
    assert producer_threads() == [] and source.closed and source.made < 100
    batches.close()  # twice is harmless


def test_dropping_the_iterator_stops_the_thread():
    source = Source(100)
    next(PrefetchedBatches(source.batches, "cpu"))
    gc.collect()
    assert producer_threads() == [] and source.closed


@pytest.mark.parametrize("depth,error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_depth_raises_naming_it(depth, error):
    with pytest.raises(error, match="depth"):
        PrefetchedBatches(iter([]), "cpu", depth=depth)


def test_cuda_hand_off_orders_streams_and_keeps_memory_for_the_consumer():
    """The CUDA calls, checked against torch's real signatures (autospec) with no GPU: the producer
    stream comes from the high-priority pool and starts after the consumer's queued work; the
    producer thread works on the consumer's current GPU (a bare "cuda" names it, and a new thread
    would start on GPU 0) and on its stream, and records an event after each batch; the consumer's
    stream waits for that event and marks every tensor of the batch as used there."""
    producer, consumer = mock.Mock(name="producer"), mock.Mock(name="consumer")
    events, threads, recorded = [], {}, []
    device = torch.device("cuda", 1)  # the current GPU of the thread that makes the iterator

    def new_event(*args, **kwargs):
        events.append(mock.Mock(name=f"event{len(events)}"))
        return events[-1]

    def set_device(index):
        threads["set_device"] = threading.current_thread()

    with mock.patch.object(torch.cuda, "Stream", autospec=True, return_value=producer) as new_stream, \
            mock.patch.object(torch.cuda, "current_stream", autospec=True, return_value=consumer) as current, \
            mock.patch.object(torch.cuda, "set_device", autospec=True, side_effect=set_device) as set_current, \
            mock.patch.object(torch.cuda, "current_device", autospec=True, return_value=1), \
            mock.patch.object(torch.cuda, "stream", autospec=True) as make_current, \
            mock.patch.object(torch.cuda, "Event", autospec=True, side_effect=new_event), \
            mock.patch.object(torch.Tensor, "record_stream", lambda tensor, stream: recorded.append((tensor, stream))):
        source = Source(3)
        batches = PrefetchedBatches(source.batches, "cuda")
        new_stream.assert_called_once_with(device, priority=-1)  # never the pool CudaGraphs captures on
        producer.wait_stream.assert_called_once_with(consumer)
        got = list(batches)
    current.assert_called_with(device)
    set_current.assert_called_once_with(device)
    assert threads["set_device"] is source.thread is not threading.current_thread()
    make_current.assert_called_once_with(producer)
    assert len(events) == 3 and all(event.record.call_args == mock.call(producer) for event in events)
    assert consumer.wait_event.call_args_list == [mock.call(event) for event in events]
    assert [(id(tensor), stream) for tensor, stream in recorded] == [(id(t), consumer) for batch in got for t in batch]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_on_cuda_the_consumer_reads_each_batch_after_the_producer_wrote_it():
    """Each batch is written after a long kernel on the producer's stream: without the event the
    consumer's stream would read it before it is written; without record_stream the next batches
    would reuse its memory while the consumer's reads are still queued."""
    numel = 1 << 20

    def source():
        for i in range(8):
            torch.cuda._sleep(5_000_000)  # a few ms on the producer's stream
            yield (torch.full((numel,), float(i), device="cuda"),)

    sums = []
    for (x,) in PrefetchedBatches(source(), "cuda", depth=2):
        torch.cuda._sleep(2_000_000)  # the consumer's stream is behind: the producer may move on
        sums.append(x.sum())
        del x
    assert [float(s) for s in sums] == [float(i * numel) for i in range(8)]
