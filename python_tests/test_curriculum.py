"""The curricula: published stage tables, compute-fraction indexing, the ViT-24h size schedule."""
import pytest

from effkernels import curriculum
from effkernels.train import plan_steps


@pytest.mark.parametrize(
    "preset,sizes",
    [
        ("deit_small", [96, 96, 160, 160, 160, 160, 192, 192, 224, 224]),
        ("swin", [96, 96] + [160] * 4 + [224] * 4),
        ("resnet", [96, 96] + [160] * 4 + [224] * 4),
        ("convnext", [160] * 6 + [224] * 4),
    ],
)
def test_efficienttrain_pp_published_tables(preset, sizes):
    schedule = curriculum.efficienttrain_pp(preset)
    assert schedule.unit == "compute"
    assert [(s.size, s.magnitude) for s in schedule.stages] == [(size, m) for m, size in enumerate(sizes)]
    assert [(s.start, s.end) for s in schedule.stages] == [(i / 10, (i + 1) / 10) for i in range(10)]


def test_deit_small_at_fractions():
    schedule = curriculum.efficienttrain_pp("deit_small")
    assert schedule.at(0.0) == (96, 0)
    assert schedule.at(0.199) == (96, 1)
    assert schedule.at(0.2) == (160, 2)
    assert schedule.at(0.59) == (160, 5)
    assert schedule.at(0.6) == (192, 6)
    assert schedule.at(0.85) == (224, 8)
    assert schedule.at(1.0) == (224, 9)
    with pytest.raises(ValueError, match="fraction must lie in"):
        schedule.at(1.2)
    with pytest.raises(ValueError, match="preset must be one of"):
        curriculum.efficienttrain_pp("vgg")


def test_vit24h_published_setting():
    schedule = curriculum.vit24h(300)
    assert schedule.unit == "epochs"
    assert [s.size for s in schedule.stages] == [32, 64, 96, 128, 160, 192, 224]
    assert schedule.at(29 / 300)[0] == 192 and schedule.at(30 / 300)[0] == 224 and schedule.at(4.9 / 300)[0] == 32
    assert schedule.stages[-1].end == 1.0


def test_custom_and_scaled_schedules():
    schedule = curriculum.custom([(0.5, 224, 5), (0.0, 128, 2)])
    assert schedule.at(0.25) == (128, 2) and schedule.at(0.75) == (224, 5)
    scaled = curriculum.efficienttrain_pp("deit_small").scaled(64, 8)
    assert {s.size for s in scaled.stages} == {24, 48, 56, 64}
    assert all(s.size % 8 == 0 for s in scaled.stages)
    with pytest.raises(ValueError, match="cover progress from 0"):
        curriculum.custom([(0.2, 224, 5)])


def test_warmup_cosine():
    assert curriculum.warmup_cosine(0.025, 0.05) == pytest.approx(0.5, rel=1e-5)
    assert curriculum.warmup_cosine(0.05, 0.05) == pytest.approx(1.0)
    assert curriculum.warmup_cosine(1.0, 0.05) == pytest.approx(0.0, abs=1e-12)


def test_compute_stages_get_equal_shares_of_flops():
    schedule = curriculum.efficienttrain_pp("deit_small")
    flops = {size: size**2 for size in (96, 160, 192, 224)}  # cost ∝ pixels
    plan = plan_steps(schedule, flops, steps_per_epoch=1000, budget=10)
    costs = [steps * flops[stage.size] for steps, stage in zip(plan, schedule.stages)]
    for cost in costs:
        assert cost == pytest.approx(sum(costs) / 10, rel=1e-3)
    assert plan[0] == round(10 * 1000 * 0.1 * 224**2 / 96**2)  # low resolution: more steps
    epochs = plan_steps(curriculum.vit24h(10, final_size=64, start=32, step=32), flops | {32: 1, 64: 4}, 100, 10)
    assert epochs == [500, 500]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: curriculum.custom([]), "needs at least one stage"),
        (lambda: curriculum.custom([(0.0, 96, 1)], unit="steps"), "unit must be 'compute' or 'epochs'"),
        (lambda: curriculum.custom([(0.0, 96, 1), (0.0, 128, 2)]), "a stage must have start < end"),
        (lambda: curriculum.custom([(0.0, 0, 1)]), "size >= 1 and magnitude >= 0"),
        (lambda: curriculum.custom([(0.0, 96, -1)]), "size >= 1 and magnitude >= 0"),
        (lambda: curriculum.Schedule((curriculum.Stage(0.0, 0.4, 96, 1), curriculum.Stage(0.5, 1.0, 128, 2))),
         "stages must be contiguous"),
        (lambda: curriculum.vit24h(10, start=256), "1 <= start <= final_size"),
        (lambda: curriculum.vit24h(0), "total_epochs >= 1"),
    ],
)
def test_unusable_schedules_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_scaling_joins_stages_that_end_up_alike():
    """Sizes that round to the same patch multiple at the smaller final size, with the same
    magnitude, become one stage (a size change that is not one would cost a recompilation)."""
    scaled = curriculum.custom([(0.0, 160, 3), (0.5, 168, 3), (0.75, 224, 3)]).scaled(64, 16)
    assert [(s.start, s.end, s.size, s.magnitude) for s in scaled.stages] == [(0.0, 0.75, 48, 3), (0.75, 1.0, 64, 3)]
