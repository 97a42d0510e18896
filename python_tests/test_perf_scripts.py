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
        ("bench_augment", "augment", []),
        ("bench_attention", "attention", []),
    ],
)
def test_benchmark_writes_results(tmp_path, script, name, extra):
    module = __import__(script)
    module.main(["--sweep", "tiny", "--repeats", "2", "--device", "cpu", "--out", str(tmp_path), *extra])
    with open(tmp_path / f"{name}.json") as f:
        results = json.load(f)
    assert results["meta"]["device"] and results["rows"]
    for row in results["rows"]:
        timings = [value for key, value in row.items() if key.endswith(" ms") and value is not None]
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


def test_end_to_end_training_benchmark_reports_a_failed_run_and_goes_on(tmp_path, monkeypatch):
    import bench_train

    def train_run(data, model, setting, args, out):
        if setting == "gpu path, nvimgcodec":
            raise RuntimeError(f"{model}, {setting}: the training run failed:\nTraceback ...\nValueError: no decoder")
        stages = [dict(ratio=1.0, input_share=0.1)]
        return dict(theoretical_saving=2.0, measured_saving=1.9, steps=5, warmup_seconds=0.5), stages

    monkeypatch.setattr(bench_train, "train_run", train_run)
    monkeypatch.setattr(bench_train, "write_jpegs", lambda root, count: None)
    with pytest.raises(SystemExit, match="some runs failed"):
        bench_train.main(["--device", "cpu", "--models", "m", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "train_end_to_end.json").read_text())["rows"]
    assert [row["setting"] for row in rows] == list(bench_train.SETTINGS)
    assert [row.get("error") for row in rows] == [
        "ValueError: no decoder" if setting == "gpu path, nvimgcodec" else None for setting in bench_train.SETTINGS]
    assert all(row["on target"] for row in rows if "error" not in row)


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


def test_step_breakdown_groups_a_training_step_by_kind_of_kernel(tmp_path):
    """perf/step_breakdown.py on tiny models: each model and size has its kinds, summing to the step's
    kernel time, and every kind is compared with its own time at the largest size."""
    import step_breakdown

    rows = step_breakdown.main(["--sweep", "tiny", "--compile", "none", "--device", "cpu", "--iterations", "2",
                                "--out", str(tmp_path)])
    for model in ("deit_tiny_patch16_224", "deit_tiny_localffn_patch16_224"):
        for size in (32, 64):
            kinds = {r["kind"]: r for r in rows if r["model"] == model and r["size"] == size}
            parts = [r["ms"] for kind, r in kinds.items() if kind != "all kernels"]
            assert {"GEMM", "optimizer", "attention"} <= set(kinds)
            assert sum(parts) == pytest.approx(kinds["all kernels"]["ms"])
            if size == 64:  # the largest: every kind against itself
                assert all(r["time / FLOP"] == pytest.approx(1.0) for r in kinds.values())
    assert {r["kind"] for r in rows if "localffn" in r["model"]} >= {"LocalFFN conv"}
    assert step_breakdown.kind_of("sm90_xmma_gemm_bf16bf16_bf16f32") == "GEMM"
    assert step_breakdown.kind_of("triton_per_fused_native_layer_norm_0") == "pointwise / norm"
    assert step_breakdown.kind_of("_dwconv_act_backward_kernel") == "LocalFFN conv"
    assert step_breakdown.kind_of("pytorch_flash::flash_fwd_kernel") == "attention"
    assert (tmp_path / "step_breakdown.md").read_text().count("\n| deit_tiny") == len(rows)


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


def test_cuda_sm90_report_counts_every_stencil_kernel(tmp_path, sm90):
    """perf/cuda_sm90_report.py compiles the CUDA C++ dwconv_act for sm_90 (nvcc, no GPU needed) and
    reports each forward and backward kernel of the dtype: registers within the 128 a 512-thread CTA
    allows, and SASS instructions per value of its row loop."""
    import shutil

    if shutil.which("nvcc") is None:  # CI has nvcc (it builds the CUDA C++ kernels), so it runs there
        pytest.skip("needs nvcc")
    import cuda_sm90_report

    rows = cuda_sm90_report.main(["--dtype", "bfloat16", "--out", str(tmp_path)])
    assert len(rows) == 2 * 2 * 3 * 4  # (forward, backward) x (vector, V = 1) x pre_act x act
    assert all(0 < row["registers"] <= 128 and row["SASS per value"] > 0 for row in rows)
    assert (tmp_path / "cuda_sm90_bfloat16.md").read_text().count("\n| forward") == 24


def test_kernel_counter_workloads_run(monkeypatch):
    """Each workload that perf/kernel_counters.py hands to ncu runs (tiny shapes, CPU: no profiler marks)."""
    import kernel_counters

    for name in kernel_counters.WORKLOADS:
        kernel_counters.main(["run", name, "--sweep", "tiny", "--device", "cpu"])


def _ncu_raw_page(path, kernels):
    """A file laid out as `ncu --csv --page raw --log-file` writes it: ncu's own lines, the header of
    metric names, the units row (no ID), then a row per kernel."""
    metrics = ["gpu__time_duration.sum", "launch__registers_per_thread",
               "sm__throughput.avg.pct_of_peak_sustained_elapsed", "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
               "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
               "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
               "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio"]
    header = ["ID", "Kernel Name", "Block Size", "Grid Size", *metrics]
    units = ["", "", "", "", "usecond", "register/thread", "%", "%", "%", "%", "", "", "", ""]
    lines = ["==PROF== Connected to process 7 (python)", "==PROF== Profiling \"kernel\": 0%....100% - 38 passes"]
    lines += [",".join(f'"{cell}"' for cell in row) for row in [header, units, *kernels]]
    path.write_text("\n".join(lines) + "\n")


def test_kernel_counters_report_reads_ncu_raw_pages(tmp_path):
    import kernel_counters

    _ncu_raw_page(tmp_path / "ncu_lowfreq-bf16-96.csv", [
        ["0", "_separable_map_kernel", "(256, 1, 1)", "(768, 1, 1)", "105.3", "248", "61.5", "3.2",
         "22.5", "0", "1.5", "7.25", "0.4", "2.1"],
        ["1", "_other_kernel", "(128, 1, 1)", "(10, 1, 1)", "1,204.5", "40", "n/a", "", "", "", "", "", "", ""],
    ])
    (tmp_path / "ncu_mlp-block.csv").write_text("==ERROR== the profiler could not read the counters\n")
    table = kernel_counters.report([str(tmp_path / "ncu_lowfreq-bf16-96.csv"), str(tmp_path / "ncu_mlp-block.csv")],
                                   str(tmp_path))
    rows = json.loads((tmp_path / "counters.json").read_text())["rows"]
    first, second, failed = rows
    assert first["µs"] == 105.3 and first["registers"] == 248 and first["DRAM %"] == 3.2
    assert first["tensor pipe %"] == 22.5 and first["memory %"] == "-"
    assert first["top stalls (cycles per issue)"] == "long_scoreboard 7.2, wait 2.1, barrier 1.5"
    assert second["µs"] == 1204.5 and second["SM %"] == "-" and second["top stalls (cycles per issue)"] == "-"
    assert failed["workload"] == "mlp-block" and failed["kernel"].startswith("no kernel profiled")
    assert table.count("\n|") == 2 + 3
    raw = json.loads((tmp_path / "counters_raw.json").read_text())
    assert raw["lowfreq-bf16-96"]["units"]["gpu__time_duration.sum"] == "usecond"


def test_kernel_counters_ncu_command_marks_one_range():
    import kernel_counters

    command = kernel_counters.ncu_command("ncu", "out.csv", "local-ffn-block", "deit_small")
    assert command[command.index("--profile-from-start") + 1] == "off"
    assert command[command.index("--clock-control") + 1] == "none"  # the GPU's clocks are left alone
    assert command[command.index("--page") + 1] == "raw" and "--csv" in command
    assert command[-5:] == [os.path.abspath(kernel_counters.__file__), "run", "local-ffn-block", "--sweep", "deit_small"]


def test_kernel_counters_profiles_every_workload_under_ncu(tmp_path, monkeypatch):
    """`kernel_counters.py ncu` with a stand-in ncu that runs the program it is given and writes a raw
    page: every workload runs once under it and lands in the report."""
    import kernel_counters

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ncu"
    fake.write_text(
        "#!" + sys.executable + "\n"
        "import subprocess, sys\n"
        "args = sys.argv[1:]\n"
        "at = args.index('--log-file')\n"
        "rc = subprocess.call(args[at + 2:])\n"
        "open(args[at + 1], 'w').write('\"ID\",\"Kernel Name\",\"gpu__time_duration.sum\"\\n\"\",\"\",\"usecond\"\\n'\n"
        "                              '\"0\",\"_kernel\",\"2.5\"\\n')\n"
        "sys.exit(rc)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert kernel_counters.main(["ncu", "--sweep", "tiny", "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "counters.json").read_text())["rows"]
    assert [row["workload"] for row in rows] == list(kernel_counters.WORKLOADS)
    assert all(row["µs"] == 2.5 for row in rows)


def test_device_only_leaves_out_just_the_cpu_kernels_cases():
    """gpu_check.sh's default test scope (pytest --device-only) drops the C++ CPU kernel's and the
    CPU torch stages' cases and nothing else."""
    import subprocess

    here = os.path.dirname(__file__)
    files = [os.path.join(here, name) for name in ("test_separable_map.py", "test_augment.py", "test_step_clock.py")]

    def collected(*options):
        listing = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *options, *files],
                                 capture_output=True, text=True, check=True, cwd=os.path.join(here, "..")).stdout
        return {line for line in listing.splitlines() if "::" in line}

    every, device = collected(), collected("--device-only")
    left_out = every - device
    assert device < every and left_out
    assert all("[cpu-" in case or "[cpu]" in case or "[torch-" in case for case in left_out), sorted(left_out)[:5]
    assert not any("[cpu-" in case or "[torch-" in case for case in device if "separable_map" in case or "augment" in case)
    assert any("test_step_clock.py" in case for case in device)  # cases without a backend stay


def test_fitted_tiles_launch_is_the_training_map():
    """bench_lowfreq_crop's "bf16 fitted" column launches the Triton kernel with
    tune_separable_map.fitted_tiles (here under the interpreter on a CPU batch): the same map as
    lowfreq_crop, within bf16 rounding, at a band with a row split and one without."""
    import torch

    import effkernels
    import tune_separable_map
    from conftest import relative_error

    for band, split in ((160, (128, 64)), (96, None)):
        tiles = tune_separable_map.fitted_tiles(band)
        assert tiles["BLOCK_N"] == tiles["BLOCK_W"] == 32
        assert ((tiles["BLOCK_M"], tiles["TAIL_M"]) == split) if split else tiles["TAIL_M"] == 0
        launch, x = tune_separable_map.launcher(band, 1, torch.bfloat16, tiles, device="cpu")
        expected = effkernels.lowfreq_crop(x, band, mean=tune_separable_map.MEAN, std=tune_separable_map.STD,
                                           out_dtype=torch.float32)
        out = launch(x)
        assert out.dtype == torch.bfloat16 and relative_error(out, expected) < 1e-2


def test_prebuilt_extension_serves_only_the_sources_torch_and_gpu_it_was_built_for(tmp_path, monkeypatch, capsys):
    """perf/prebuilt_extension.py: the stamp `save` writes matches this checkout and torch; a change to
    a source file, another torch or another GPU target is named as the reason not to use it, and
    `install` then leaves effkernels/ as it was."""
    import shutil

    import prebuilt_extension
    import torch

    library = tmp_path / "_C.test.so"
    library.write_bytes(b"not a library")
    prebuilt_extension.save(str(tmp_path / "saved"), str(library), "8.0;9.0")
    with open(tmp_path / "saved" / prebuilt_extension.STAMP) as f:
        stamp = json.load(f)
    assert stamp["archs"] == ["8.0", "9.0"] and (tmp_path / "saved" / "_C.test.so").read_bytes() == b"not a library"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert prebuilt_extension.mismatch(stamp) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    assert "this GPU is 10.0" in prebuilt_extension.mismatch(stamp)
    assert "torch 2.0.0" in prebuilt_extension.mismatch({**stamp, "torch": "2.0.0"})

    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(prebuilt_extension.ROOT, "csrc"), copy / "csrc")
    shutil.copy2(os.path.join(prebuilt_extension.ROOT, "setup.py"), copy)
    assert prebuilt_extension.sources_digest(str(copy)) == stamp["sources"]
    with open(copy / "csrc" / "ops.cpp", "a") as f:
        f.write("\n")
    assert prebuilt_extension.sources_digest(str(copy)) != stamp["sources"]

    before = sorted(os.listdir(os.path.join(prebuilt_extension.ROOT, "effkernels")))
    with open(tmp_path / "saved" / prebuilt_extension.STAMP, "w") as f:
        json.dump({**stamp, "sources": "0" * 64}, f)
    assert prebuilt_extension.install(str(tmp_path / "saved")) == 1
    assert prebuilt_extension.install(str(tmp_path / "nothing")) == 1
    assert sorted(os.listdir(os.path.join(prebuilt_extension.ROOT, "effkernels"))) == before
    printed = capsys.readouterr().out
    assert "built from other sources" in printed and "no prebuilt extension" in printed
