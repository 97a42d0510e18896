"""The training script end to end on the embedded data: a short run, DDP on gloo, kill and resume,
torch.compile, and the same augmented data whatever the number of loader workers."""
import collections
import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import PythonGraphs
from effkernels import curriculum, train

# The script's logic (schedule, resume, workers, DDP, compile) is the same on every device: it is
# tested on the CPU everywhere, and a GPU machine adds one short run on its GPU.
SHORT = ["--budget", "0.25", "--batch-size", "32", "--workers", "0", "--quiet", "--checkpoint-every", "4", "--device", "cpu"]
TRACE = ("step", "stage", "size", "magnitude", "lr", "cost_fraction", "loss")


def run(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "effkernels.train", *args], env=env, capture_output=True,
                          text=True, timeout=600, **kwargs)


def trace(out, keys=TRACE):
    with open(os.path.join(out, "log.csv")) as f:
        return [tuple(row[key] for key in keys) for row in csv.DictReader(f)]


def losses(out):
    return [float(loss) for (loss,) in trace(out, ("loss",))]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """One uninterrupted short run, the reference the other runs are compared with."""
    out = tmp_path_factory.mktemp("straight")
    result = run([*SHORT, "--out", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


def test_short_run_writes_log_table_and_plot(straight_run):
    tmp_path, result = straight_run
    summary = json.loads((tmp_path / "stages.json").read_text())
    stages = summary["stages"]
    assert [s["size"] for s in stages] == [24, 24, 48, 48, 48, 48, 56, 56, 64, 64]
    assert sum(s["cost_fraction"] for s in stages) == pytest.approx(1.0)
    assert sum(s["time_fraction"] for s in stages) == pytest.approx(1.0)
    assert len(trace(tmp_path)) == sum(s["steps"] for s in stages) == summary["summary"]["steps"]
    assert summary["summary"]["theoretical_saving"] > 1.5
    assert 0 <= summary["summary"]["top1"] <= 1
    assert (tmp_path / "curve.png").stat().st_size > 1000
    timed = [s for s in stages if s["images_per_s"] is not None]  # a stage of one warm-up step has no timed step
    assert timed and all(s["images_per_s"] > 0 and 0 <= s["input_share"] < 1 for s in timed)
    assert "| stage | size |" in result.stdout and "| images/s | input wait |" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a GPU-only run")
def test_short_run_on_the_gpu(tmp_path):
    result = run([*SHORT[:-2], "--device", "cuda", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "stages.json").read_text())["summary"]
    assert summary["device"].startswith("cuda") and summary["steps"] == len(trace(tmp_path))
    # The defaults on a GPU, embedded data too: the device pipeline, the compiled model in whole-step graphs.
    assert summary["input"].startswith("device pipeline")
    assert (summary["compile"], summary["cuda_graph"]) == ("default", "step") and summary["cuda_graph_failures"] == []
    assert all(math.isfinite(loss) for loss in losses(tmp_path))
    assert "Warning" not in result.stderr, result.stderr


def test_too_small_budget_is_said_in_one_line(tmp_path):
    result = run([*SHORT, "--budget", "0.05", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if "too small" in line]
    assert len(said) == 1 and "--budget 0.05" in said[0], result.stderr


@pytest.mark.parametrize("unit", ["compute", "epochs"])
def test_budget_too_small_compares_rounded_shares_with_the_schedule(unit):
    schedule = curriculum.custom([(0.0, 32, 0), (0.5, 64, 0)], unit=unit)
    flops = {32: 1.0, 64: 4.0}
    # compute: 8 steps at 32 px cost 8, 2 at 64 px cost 8 -> shares 0.5 / 0.5; epochs: 5 + 5 steps.
    balanced = [8, 2] if unit == "compute" else [5, 5]
    assert train.budget_too_small(schedule, balanced, flops, 1.0) is None
    line = train.budget_too_small(schedule, [1, 1], flops, 0.01)
    if unit == "compute":  # 1 + 4: shares 0.2 / 0.8
        assert line.endswith("stage 1 gets 0.800 instead of 0.500") and "--budget 0.01" in line
    else:  # 1 + 1 epochs' steps: the shares are right
        assert line is None


@pytest.mark.parametrize("data_input,port", [("cpu", 29517), ("device", 29518)])
def test_two_process_ddp_on_gloo(tmp_path, data_input, port):
    """Both input paths under DDP: each rank reads its own shard (the device pipeline's curriculum
    iterator included)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               "-m", "effkernels.train", *SHORT, "--input", data_input, "--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "stages.json").read_text())["summary"]
    assert summary["processes"] == 2 and summary["steps"] == len(trace(tmp_path))
    assert summary["input"].startswith("device pipeline" if data_input == "device" else "DataLoader")
    if data_input == "cpu":  # a checkpoint of 2 shards does not resume as one process
        alone = run([*SHORT, "--input", data_input, "--out", str(tmp_path), "--resume"])
        assert alone.returncode != 0 and "1 processes, the checkpoint's run had 2" in alone.stderr, alone.stderr


def kill_and_resume(args, out, straight):
    """Run with args into out, SIGKILL it mid-run after a checkpoint, resume it: its trace must be straight's."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "effkernels.train", *args, "--out", str(out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it mid-stage, after a checkpoint
        if (out / "checkpoint.pt").exists() and os.path.exists(out / "log.csv") and len(trace(out)) >= 10:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(trace(out))
    assert 10 <= killed_at < len(trace(straight))
    result = run([*args, "--out", str(out), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert trace(out) == trace(straight)  # losses included: same data, augmentation and updates


def test_killed_run_resumes_on_the_same_schedule_and_data(tmp_path, straight_run):
    kill_and_resume(SHORT, tmp_path / "interrupted", straight_run[0])


def test_killed_device_input_run_with_replay_resumes_exactly(tmp_path, jpeg_folder):
    """The device pipeline resumes mid-epoch too, across the stage changes of the replay factor."""
    args = [*DEVICE_INPUT, "--budget", "6", "--checkpoint-every", "4", "--data", str(jpeg_folder),
            "--replay", "efficienttrain_pp"]
    straight = run([*args, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    kill_and_resume(args, tmp_path / "interrupted", tmp_path / "straight")


def test_loader_workers_do_not_change_the_data(tmp_path, straight_run):
    result = run([*SHORT, "--workers", "2", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert trace(tmp_path) == trace(straight_run[0])


def test_compiled_run_follows_the_eager_run(tmp_path, straight_run):
    result = run([*SHORT, "--compile", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    keys = TRACE[:-1]
    assert trace(tmp_path, keys) == trace(straight_run[0], keys)
    assert losses(tmp_path) == pytest.approx(losses(straight_run[0]), rel=1e-4)
    assert "warm-up" in result.stdout


def test_graphed_steps_train_report_and_resume_as_eager_steps(tmp_path, straight_run, monkeypatch, capsys):
    """--cuda-graph step inside the training script, on the CPU with conftest.PythonGraphs standing in
    for the CUDA graphs: the eager run's schedule and losses, one capture per size after 3 eager
    warm-ups, warm-ups counted in the report, and a run stopped after a checkpoint resumes onto the
    same trace with the learning rate still a capturable device tensor."""
    stand_ins = []
    monkeypatch.setattr(train, "CudaGraphs", lambda device: stand_ins.append(PythonGraphs()) or stand_ins[-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the straight run's process
    args, _ = train.parse_args([*SHORT, "--out", str(tmp_path)])
    args.cuda_graph = "step"  # the command line refuses it without a GPU

    class Stopped(Exception):
        pass

    save = train.Trainer._save
    saves = []

    def save_then_stop(trainer):
        save(trainer)
        saves.append(trainer.state["step"])
        if len(saves) == 3:
            raise Stopped

    try:
        monkeypatch.setattr(train.Trainer, "_save", save_then_stop)
        with pytest.raises(Stopped):
            train.Trainer(args).run()
        assert 0 < len(trace(tmp_path)) < len(trace(straight_run[0]))
        monkeypatch.setattr(train.Trainer, "_save", save)
        args.resume = True
        trainer = train.Trainer(args)
        trainer.run()
    finally:
        torch.set_num_threads(threads)
    keys = TRACE[:-1]
    assert trace(tmp_path, keys) == trace(straight_run[0], keys)
    assert losses(tmp_path) == pytest.approx(losses(straight_run[0]), rel=1e-4)
    group = trainer.optimizer.param_groups[0]
    assert isinstance(group["lr"], torch.Tensor) and group["capturable"]
    # Per process and size: up to 3 eager warm-ups, then one capture if a 4th step comes.
    stopped_at = saves[-1]
    rows = [(int(step), int(size)) for step, size in trace(tmp_path, ("step", "size"))]
    for graphs, steps in zip(stand_ins, ([s for s in rows if s[0] <= stopped_at], [s for s in rows if s[0] > stopped_at])):
        per_size = collections.Counter(size for _, size in steps)
        assert graphs.eager_steps == sum(min(n, 3) for n in per_size.values())
        assert graphs.captures == sum(n > 3 for n in per_size.values()) > 0
    report = json.loads((tmp_path / "stages.json").read_text())
    assert report["summary"]["cuda_graph"] == "step" and report["summary"]["cuda_graph_failures"] == []
    assert "the first 4 steps at each size" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "no_such_model"], "unknown timm model"),
        (["--budget", "0"], "--budget must be > 0"),
        (["--data", "/nonexistent"], "holds no class folders"),
        (["--curriculum", "custom"], "needs --stages"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--input-ahead", "-1"], "--input-ahead must be >= 0"),
        (["--decoder", "nvimgcodec"], "--decoder nvimgcodec decodes the files of --data"),
        (["--input", "device", "--resize", "interpolate"], "--input device shrinks with lowfreq_crop"),
        (["--device", "cpu", "--cuda-graph", "step"], "needs --device cuda"),
        (["--device", "cuda", "--compile", "reduce-overhead", "--cuda-graph", "step"], "makes CUDA graphs of its own"),
        (["--device", "cuda:1"], "invalid choice: 'cuda:1'"),
        (["--img-size", "0"], "--img-size must be >= 1"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
        (["--warmup", "1.5"], "--warmup is a fraction of progress"),
        (["--magnitude", "11"], "--magnitude must lie in [0, 10]"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--val-data", "/tmp"], "--val-data evaluates a --data run"),
        (["--preset", "vit"], "invalid choice: 'vit'"),
        (["--stages", "[[0, 32, 1]]"], "it needs --curriculum custom"),
        (["--curriculum", "custom", "--stages", "[[0, 32"], "--stages must be JSON"),
        (["--curriculum", "custom", "--stages", "[[0.5, 32, 1]]"], "the stages must cover progress from 0 to 1"),
    ],
)
def test_bad_arguments_stop_before_work(args, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(args)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--data", "--val-data"])
def test_a_folder_with_only_hidden_folders_holds_no_classes(tmp_path, jpeg_folder, capsys, flag):
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "x.jpg").write_bytes(b"not read")
    with pytest.raises(SystemExit):
        train.parse_args(["--data", str(jpeg_folder), flag, str(tmp_path)])
    assert f"{flag} {tmp_path} holds no class folders" in capsys.readouterr().err


@pytest.mark.parametrize("input_path", ["cpu", "device"])
def test_val_data_with_other_classes_is_refused(tmp_path, jpeg_folder, input_path):
    import shutil

    shutil.copytree(jpeg_folder, tmp_path / "val")
    (tmp_path / "val" / "b").rename(tmp_path / "val" / "c")
    result = run([*CPU_INPUT[:-1], input_path, "--budget", "1", "--workers", "1", "--data", str(jpeg_folder),
                  "--val-data", str(tmp_path / "val"), "--out", str(tmp_path / "run")])
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--val-data's classes differ from --data's (missing: ['b'], extra: ['c'])" in result.stderr


@pytest.mark.parametrize(
    "args,compile_mode,cuda_graph",
    [
        (["--device", "cpu"], "none", "none"),
        (["--device", "cuda"], "default", "step"),
        (["--device", "cuda", "--compile", "reduce-overhead"], "reduce-overhead", "none"),
        (["--device", "cuda", "--compile", "none"], "none", "step"),
        (["--device", "cuda", "--cuda-graph", "none"], "default", "none"),
    ],
)
def test_compile_and_cuda_graph_defaults(args, compile_mode, cuda_graph):
    parsed, _ = train.parse_args(args)
    assert (parsed.compile, parsed.cuda_graph) == (compile_mode, cuda_graph)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """A tiny ImageFolder of JPEGs: 2 classes × 12 noise images of assorted sizes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(12):
            pixels = rng.integers(0, 256, (int(rng.integers(30, 50)), int(rng.integers(30, 50)), 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.jpg", quality=90)
    return root


DEVICE_INPUT = ["--model", "deit_tiny_localffn_patch16_224", "--img-size", "32", "--batch-size", "8", "--budget", "2",
                "--workers", "1", "--quiet", "--device", "cpu", "--input", "device"]


def test_device_input_pipeline_with_replay_trains_and_reports(tmp_path, jpeg_folder):
    """--input device on the CPU (the same code as on a GPU): EfficientTrain++'s replay delivers more
    images than it decodes, and the report names the input path."""
    result = run([*DEVICE_INPUT, "--data", str(jpeg_folder), "--replay", "efficienttrain_pp", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "stages.json").read_text())["summary"]
    assert summary["input"].startswith("device pipeline") and summary["replay"] == "efficienttrain_pp"
    assert summary["images_delivered"] > summary["images_decoded"] > 0 and summary["files_skipped"] == 0
    assert all(np.isfinite(losses(tmp_path)))


def test_batches_made_ahead_train_as_batches_made_on_demand(tmp_path, jpeg_folder):
    """--input-ahead (the device pipeline's background thread) changes when batches are made, not
    which: across the stage changes and replay factors of EfficientTrain++, the same trace."""
    args = [*DEVICE_INPUT, "--data", str(jpeg_folder), "--replay", "efficienttrain_pp"]
    for ahead in ("0", "3"):
        result = run([*args, "--input-ahead", ahead, "--out", str(tmp_path / ahead)])
        assert result.returncode == 0, result.stderr[-2000:]
    assert trace(tmp_path / "0") == trace(tmp_path / "3")
    summaries = [json.loads((tmp_path / ahead / "stages.json").read_text())["summary"] for ahead in ("0", "3")]
    assert [s["batches_made_ahead"] for s in summaries] == [0, 3]
    assert summaries[0]["images_decoded"] == summaries[1]["images_decoded"]


def test_nvimgcodec_decoder_trains_as_torchvision(tmp_path, jpeg_folder):
    """--decoder nvimgcodec: on the CPU both decoders are libjpeg-turbo, so the same run, losses included."""
    args = [*DEVICE_INPUT, "--data", str(jpeg_folder), "--curriculum", "none", "--budget", "1"]
    for decoder in ("torchvision", "nvimgcodec"):
        result = run([*args, "--decoder", decoder, "--out", str(tmp_path / decoder)])
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((tmp_path / decoder / "stages.json").read_text())["summary"]["decoder"] == decoder
    assert trace(tmp_path / "torchvision") == trace(tmp_path / "nvimgcodec")


def test_embedded_data_through_the_device_pipeline(tmp_path):
    """The GPU's default input for the embedded data (images in device memory, augmented there),
    run here on the CPU: the same code. It is the default on a GPU and only there."""
    assert train.parse_args(["--device", "cuda"])[0].input == "device"
    assert train.parse_args(["--device", "cpu"])[0].input == "cpu"
    result = run([*SHORT, "--input", "device", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "stages.json").read_text())["summary"]
    assert summary["input"] == "device pipeline (effkernels.pipeline), the embedded images in device memory"
    assert summary["images_delivered"] == summary["images_decoded"] == 32 * summary["steps"]
    assert all(np.isfinite(losses(tmp_path))) and summary["top1"] is not None
    assert "Warning" not in result.stderr, result.stderr


def test_device_input_refuses_replay_it_cannot_follow(tmp_path, jpeg_folder):
    result = run([*DEVICE_INPUT, "--data", str(jpeg_folder), "--replay", "efficienttrain_pp", "--curriculum", "none",
                  "--out", str(tmp_path)])
    assert result.returncode != 0 and "needs a schedule of 10 stages, got 1" in result.stderr


CPU_INPUT = ["--model", "deit_tiny_localffn_patch16_224", "--img-size", "32", "--batch-size", "8", "--quiet",
             "--device", "cpu", "--input", "cpu"]


def test_cpu_path_over_a_folder_skips_an_unreadable_file_once_per_split(tmp_path, jpeg_folder):
    """--input cpu --data (the DataLoader path over an ImageFolder) with --val-data and --resize
    interpolate: an unreadable file is left out, reported once by the training split's workers
    (one DataLoader for the whole run) and once by the evaluation split's (workers kept across
    the evaluations at every stage end), and the run finishes."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(jpeg_folder, folder)
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    result = run([*CPU_INPUT, "--budget", "2", "--workers", "1", "--data", str(folder), "--val-data", str(folder),
                  "--resize", "interpolate", "--out", str(tmp_path / "run")])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert report["summary"]["input"].startswith("DataLoader") and report["summary"]["resize"] == "interpolate"
    assert len(report["stages"]) == 10 and report["summary"]["top1"] is not None
    assert all(np.isfinite(losses(tmp_path / "run")))
    assert sum("broken.jpg" in line for line in result.stderr.splitlines()) == 2, result.stderr


def test_resume_refuses_a_different_run_and_takes_other_settings(tmp_path, straight_run):
    """--resume continues the checkpoint's run: a changed budget (which moves every stage boundary)
    is refused by name before any work; a changed --checkpoint-every is not."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight_run[0], out)
    before = (out / "log.csv").read_text()
    changed = run([*SHORT, "--budget", "0.5", "--lr", "0.002", "--out", str(out), "--resume"])
    assert changed.returncode != 0 and "Traceback" not in changed.stderr
    assert ("--budget is 0.5, the checkpoint's run had 0.25; --lr is 0.002, the checkpoint's run had 0.001"
            in changed.stderr), changed.stderr
    assert (out / "log.csv").read_text() == before
    same = run([*SHORT, "--checkpoint-every", "7", "--out", str(out), "--resume"])
    assert same.returncode == 0, same.stderr[-2000:]
    assert trace(out) == trace(straight_run[0])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--resume"], "--resume but no checkpoint at"),
        (["--batch-size", "25"], "fewer images than one batch per process"),
        (["--replay", "efficienttrain_pp"], "--replay needs --input device"),
    ],
)
def test_runs_that_cannot_start_say_why(tmp_path, jpeg_folder, args, message):
    result = run([*CPU_INPUT, "--budget", "1", "--workers", "0", "--data", str(jpeg_folder), *args,
                  "--out", str(tmp_path)])
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_vit24h_curriculum_grows_the_size_every_five_epochs(tmp_path, jpeg_folder):
    """--curriculum vit24h: +16 px (32 px scaled to a 32 px final size on a 16 px patch grid, at
    least one patch) every 5 epochs from one patch up, epoch-counted steps (24 images, batch 8: 3
    steps an epoch); a budget that ends before the final size says so."""
    args = [*CPU_INPUT, "--curriculum", "vit24h", "--workers", "0", "--data", str(jpeg_folder)]
    result = run([*args, "--budget", "12", "--out", str(tmp_path / "full")])
    assert result.returncode == 0, result.stderr[-2000:]
    stages = json.loads((tmp_path / "full" / "stages.json").read_text())["stages"]
    assert [(s["size"], s["steps"]) for s in stages] == [(16, 15), (32, 21)]
    assert "never trains" not in result.stderr
    short = run([*args, "--budget", "4", "--out", str(tmp_path / "short")])
    assert short.returncode == 0, short.stderr[-2000:]
    assert [s["size"] for s in json.loads((tmp_path / "short" / "stages.json").read_text())["stages"]] == [16]
    assert "ends at 16 px and never trains at --img-size 32" in short.stderr


@pytest.mark.parametrize("args", [["--curriculum", "custom", "--stages", "[[0, 30, 1]]"], ["--img-size", "60"]],
                         ids=["stage", "final size"])
def test_size_not_a_multiple_of_the_patch_is_refused(tmp_path, args):
    result = run([*SHORT, *args, "--out", str(tmp_path)])
    assert result.returncode != 0 and "not a multiple of the patch size 8" in result.stderr
    assert "Traceback" not in result.stderr


def test_epoch_order_shards_resumes_and_seeds_each_sample():
    from effkernels import data

    ranks = [data.EpochOrder(103, 8, seed=3, epoch=1, rank=r, world_size=2).items for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 48
    assert not {i for i, _ in ranks[0]} & {i for i, _ in ranks[1]}
    assert data.EpochOrder(103, 8, seed=3, epoch=1, rank=1, world_size=2, start_batch=2).items == ranks[1][16:]
    assert data.EpochOrder(103, 8, seed=3, epoch=2).items != data.EpochOrder(103, 8, seed=3, epoch=1).items
    seeds = [seed for rank in ranks for _, seed in rank]
    assert len(set(seeds)) == len(seeds)

    def noisy(_):
        return torch.rand(2), random.random()

    samples = data.SeededSamples(data.TensorImages(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4), noisy))
    before = torch.get_rng_state()
    first, again, other = samples[(0, 7)], samples[(3, 7)], samples[(0, 8)]
    assert torch.equal(first[0][0], again[0][0]) and first[0][1] == again[0][1]
    assert not torch.equal(first[0][0], other[0][0])
    assert torch.equal(torch.get_rng_state(), before)

    def draws(_):  # the three generators transforms use must not replay one stream
        return (set(torch.randint(0, 2**31, (8,)).tolist()), set(np.random.randint(0, 2**31, 8).tolist()),
                {random.getrandbits(31) for _ in range(8)})

    streams, _ = data.SeededSamples(data.TensorImages(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1),
                                                      draws))[(0, 2**40 + 5)]
    assert not (streams[0] & streams[1] or streams[0] & streams[2] or streams[1] & streams[2])


def test_epoch_position_carries_over_a_change_of_replay():
    """Delivered-batch positions map to decoded batches as DeviceImageLoader.epoch counts them: a
    partly replayed decoded batch is left, and the next one starts under the new factor."""
    from effkernels.pipeline import replayed_position

    assert replayed_position(8, 4, 2) == 4  # decoded batches 0, 1 done -> batch 2 at replay 2
    assert replayed_position(5, 4, 2) == 4  # batch 1 replayed once of 4 -> on to batch 2
    assert replayed_position(3, 1, 4) == 12
    assert replayed_position(0, 2, 1) == 0
