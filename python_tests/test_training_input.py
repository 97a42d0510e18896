"""effkernels.training_input's CPU path: one DataLoader for a whole plan, batches in EpochOrder's
order across epoch ends and stage changes, each sample augmented at its own stage's magnitude."""
import argparse
import os

import pytest
import torch

from effkernels import curriculum, data, training_input

LENGTH, BATCH = 12, 4  # three batches per epoch


def loader_input(workers):
    args = argparse.Namespace(img_size=16, data=None, val_data=None, workers=workers, batch_size=BATCH, seed=5,
                              resize="interpolate")
    source = training_input.LoaderInput(args, torch.device("cpu"), rank=0, world=1)

    def record(_image):  # what each sample was made with: the magnitude set for it, and by which process
        return torch.tensor([source.rand_augment.magnitude, os.getpid()])

    source.train_set = data.TensorImages(torch.zeros(LENGTH, 3, 2, 2, dtype=torch.uint8), torch.arange(LENGTH), record)
    source.shrink = lambda images, size: (images, size)
    return source


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_follow_the_plan_across_epochs_and_stages(workers):
    source = loader_input(workers)
    plan = [(3, curriculum.Stage(0.0, 0.5, 8, 1), 0), (4, curriculum.Stage(0.5, 1.0, 16, 7), 1)]
    made = list(source.batches(2, 1, plan))

    expected_positions = [(2, 2), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2)]
    assert [position for _, _, position in made] == expected_positions
    assert [size for (_, size), _, _ in made] == [8] * 3 + [16] * 4
    magnitudes = [records[:, 0].tolist() for (records, _), _, _ in made]
    assert magnitudes == [[1] * BATCH] * 3 + [[7] * BATCH] * 4

    starts = [(2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1)]
    for (epoch, batch), (_, labels, _) in zip(starts, made):
        order = data.EpochOrder(LENGTH, BATCH, seed=5, epoch=epoch).items
        assert labels.tolist() == [index for index, _ in order[batch * BATCH:(batch + 1) * BATCH]]

    makers = {pid for (records, _), _, _ in made for pid in records[:, 1].tolist()}
    if workers:  # started once for the whole plan: no new workers at epoch ends or stage changes
        assert len(makers) <= workers and os.getpid() not in makers
    else:
        assert makers == {os.getpid()}


def test_samples_are_the_same_whatever_the_workers():
    plan = [(2, curriculum.Stage(0.0, 0.5, 8, 3), 0), (2, curriculum.Stage(0.5, 1.0, 8, 9), 1)]
    by_workers = []
    for workers in (0, 2):
        source = loader_input(workers)
        source.train_set.transform = lambda image: torch.rand(3)  # the sample's seeded draws
        by_workers.append([images for (images, _), _, _ in source.batches(0, 0, plan)])
    assert all(torch.equal(a, b) for a, b in zip(*by_workers))


def test_leaving_early_stops_the_workers():
    source = loader_input(2)
    plan = [(50, curriculum.Stage(0.0, 1.0, 8, 0), 0)]
    batches = source.batches(0, 0, plan)
    (records, _), _, _ = next(batches)
    workers = set(records[:, 1].tolist())
    batches.close()
    for pid in workers:
        with pytest.raises(ProcessLookupError):  # joined when the generator closed
            os.kill(pid, 0)
