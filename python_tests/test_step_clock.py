"""effkernels.step_clock: steps come back in order, once, with their times and losses."""
import time

import pytest
import torch

from effkernels.step_clock import StepClock


def run_steps(clock, count, collect_every=1):
    records = []
    for step in range(count):
        wait_mark = clock.mark()
        time.sleep(0.001)  # the batch
        start_mark = clock.mark()
        loss = torch.tensor(float(step)) * 2
        time.sleep(0.002)  # the step
        clock.done(dict(step=step), wait_mark, start_mark, loss)
        if step % collect_every == 0:
            records += clock.ready()
    return records + clock.drain()


def test_records_come_back_in_order_with_times_and_losses():
    records = run_steps(StepClock(torch.device("cpu")), 7)
    assert [r.info["step"] for r in records] == list(range(7))
    assert [r.loss for r in records] == [2.0 * step for step in range(7)]
    assert all(0.0009 < r.wait_seconds < 0.5 and 0.0019 < r.step_seconds < 0.5 for r in records)
    assert StepClock(torch.device("cpu")).drain() == []


def test_a_full_ring_waits_for_its_oldest_step_and_keeps_every_loss():
    clock = StepClock(torch.device("cpu"), capacity=2)
    records = run_steps(clock, 9, collect_every=4)  # more pending steps than slots between collections
    assert [(r.info["step"], r.loss) for r in records] == [(step, 2.0 * step) for step in range(9)]


@pytest.mark.parametrize("capacity, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_capacity_names_the_argument(capacity, error):
    with pytest.raises(error, match="capacity"):
        StepClock(torch.device("cpu"), capacity=capacity)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_cuda_steps_are_timed_on_the_stream_without_a_sync():
    clock = StepClock(torch.device("cuda"))
    x = torch.randn(2048, 2048, device="cuda")
    for step in range(3):
        wait_mark = clock.mark()
        start_mark = clock.mark()
        loss = (x @ x).mean() * 0 + step
        clock.done(dict(step=step), wait_mark, start_mark, loss)
    records = clock.drain()
    assert [(r.info["step"], r.loss) for r in records] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert all(r.step_seconds > 0 and r.wait_seconds >= 0 for r in records)
