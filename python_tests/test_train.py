"""The training script end to end on the embedded data: a short run, DDP on gloo, kill and resume."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from effkernels import train

SHORT = ["--budget", "0.25", "--batch-size", "32", "--workers", "0", "--quiet", "--checkpoint-every", "4"]
TRACE = ("step", "stage", "size", "magnitude", "lr", "cost_fraction")


def run(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "effkernels.train", *args], env=env, capture_output=True,
                          text=True, timeout=600, **kwargs)


def trace(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [tuple(row[key] for key in TRACE) for row in csv.DictReader(f)]


def test_short_run_writes_log_table_and_plot(tmp_path):
    result = run([*SHORT, "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "stages.json").read_text())
    stages = summary["stages"]
    assert [s["size"] for s in stages] == [24, 24, 48, 48, 48, 48, 56, 56, 64, 64]
    assert sum(s["cost_fraction"] for s in stages) == pytest.approx(1.0)
    assert sum(s["time_fraction"] for s in stages) == pytest.approx(1.0)
    assert len(trace(tmp_path)) == sum(s["steps"] for s in stages) == summary["summary"]["steps"]
    assert summary["summary"]["theoretical_saving"] > 1.5
    assert 0 <= summary["summary"]["top1"] <= 1
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert "| stage | size |" in result.stdout


def test_two_process_ddp_on_gloo(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "effkernels.train", *SHORT, "--out", str(tmp_path), "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "stages.json").read_text())["summary"]
    assert summary["processes"] == 2 and summary["steps"] == len(trace(tmp_path))


def test_killed_run_resumes_on_the_same_schedule(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run([*SHORT, "--out", str(straight)]).returncode == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "effkernels.train", *SHORT, "--out", str(interrupted)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it mid-stage, after a checkpoint
        if (interrupted / "checkpoint.pt").exists() and os.path.exists(interrupted / "log.csv") and len(trace(interrupted)) >= 10:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(trace(interrupted))
    assert 10 <= killed_at < len(trace(straight))
    result = run([*SHORT, "--out", str(interrupted), "--resume"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert trace(interrupted) == trace(straight)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "no_such_model"], "unknown timm model"),
        (["--budget", "0"], "--budget must be > 0"),
        (["--data", "/nonexistent"], "holds no class folders"),
        (["--curriculum", "custom"], "needs --stages"),
    ],
)
def test_bad_arguments_stop_before_work(args, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(args)
    assert message in capsys.readouterr().err


def test_size_not_a_multiple_of_the_patch_is_refused(tmp_path):
    result = run([*SHORT, "--curriculum", "custom", "--stages", "[[0, 30, 1]]", "--out", str(tmp_path)])
    assert result.returncode != 0 and "not a multiple of the patch size 8" in result.stderr
