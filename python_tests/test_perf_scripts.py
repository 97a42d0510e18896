"""The perf/ benchmarks run end to end on a tiny sweep and write well-formed results (not speeds)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "perf"))


@pytest.mark.parametrize(
    "script,name,extra",
    [
        ("bench_lowfreq_crop", "lowfreq_crop", []),
        ("bench_local_ffn", "local_ffn", []),
        ("bench_timm_fuse", "timm_fuse_pvt_v2_b0", []),
        ("train_step", "train_step", ["--compile"]),
    ],
)
def test_benchmark_writes_results(tmp_path, script, name, extra):
    module = __import__(script)
    module.main(["--sweep", "tiny", "--repeats", "2", "--device", "cpu", "--out", str(tmp_path), *extra])
    with open(tmp_path / f"{name}.json") as f:
        results = json.load(f)
    assert results["meta"]["device"] and results["rows"]
    for row in results["rows"]:
        timings = [value for key, value in row.items() if key.endswith(" ms")]
        assert timings and all(value > 0 for value in timings)
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    table = (tmp_path / f"{name}.md").read_text()
    assert table.count("\n|") == 2 + len(results["rows"])


def test_end_to_end_training_benchmark_runs_every_setting(tmp_path):
    """perf/bench_train.py on a tiny configuration: every setting trains, and the table says whether
    each run met issue 15's targets (on a CPU the figures mean nothing)."""
    import bench_train

    bench_train.main(["--device", "cpu", "--models", "deit_tiny_localffn_patch16_224", "--img-size", "32",
                      "--files", "40", "--batch", "8", "--budget", "1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "train_end_to_end.json").read_text())
    assert [row["setting"] for row in results["rows"]] == list(bench_train.SETTINGS)
    for row in results["rows"]:
        assert row["steps"] > 0 and row["theoretical saving"] > 1 and row["measured saving"] > 0
        assert isinstance(row["on target"], bool)


def test_kernel_profile_lists_each_workloads_heaviest_kernels(tmp_path):
    import profile_kernels

    profile_kernels.main(["--sweep", "tiny", "--device", "cpu", "--iterations", "2", "--top", "3", "--out", str(tmp_path)])
    with open(tmp_path / "profile_kernels.json") as f:
        workloads = json.load(f)["workloads"]
    assert set(workloads) == {"local_ffn fused block", "local_ffn plain Mlp", "lowfreq_crop plain",
                              "lowfreq_crop augmented"}
    for result in workloads.values():
        kernels = result["kernels"]
        assert result["host ms"] > 0 and kernels and all(k["ms"] > 0 for k in kernels)
        assert [k["ms"] for k in kernels] == sorted((k["ms"] for k in kernels), reverse=True)
    table = (tmp_path / "profile_kernels.md").read_text()
    assert table.count("\n### ") == 4 and table.count("\n| ") >= 4 * (1 + 3)


def test_dwconv_act_tuner_times_the_default_and_candidates(tmp_path):
    """perf/tune_dwconv_act.py on a tiny shape under the interpreter: each candidate is compiled for sm_90
    and run, the default is among the rows and every row is compared with it (figures no speed claim)."""
    import tune_dwconv_act

    rows = tune_dwconv_act.main(["--device", "cpu", "--grids", "3", "--hidden", "16", "--batch", "2", "--shapes", "2",
                                 "--jobs", "2", "--top", "2", "--out", str(tmp_path)])
    assert {row["kind"] for row in rows} == {"forward", "backward"}
    assert sum(row["default"] for row in rows) == 2
    assert all(row["ms"] > 0 and row["vs default"] > 0 and row["registers"] > 0 for row in rows)
    results = json.loads((tmp_path / "tune_dwconv_act.json").read_text())
    assert len(results["rows"]) == len(rows)
