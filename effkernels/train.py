"""Train a timm backbone with a curriculum and measure, stage by stage, time against theoretical cost.

    python -m effkernels.train                      # embedded data, a small LocalFFN ViT, CPU or GPU
    python -m effkernels.train --data /imagenet/train --val-data /imagenet/val \\
        --model deit_small_localffn_patch16_224 --curriculum efficienttrain_pp --budget 300
    torchrun --nproc-per-node 8 -m effkernels.train ...   # DDP, the same script

--budget is the total compute in full-size epochs. With --curriculum efficienttrain_pp the budget
is split into 10 equal compute stages; a stage at lower resolution takes more steps for the same
share. The theoretical cost of a step is FlopCounterMode's forward + backward FLOPs of the model at
that size; the measured cost is its wall time (device-synchronised). Inputs are shrunk on the
device by effkernels.lowfreq_crop (EfficientTrain), or by plain antialiased resizing with
--resize interpolate. Writes to --out: log.csv (one row per step), stages.md / stages.json (the
per-stage table), curve.png, checkpoint.pt (every --checkpoint-every steps and at stage ends).
"""
import argparse
import contextlib
import csv
import functools
import json
import logging
import math
import os
import random
import sys
import time

import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import curriculum, image_decode, training_input
from .flops import flop_counter
from .pipeline import replayed_position
from .step_clock import StepClock
from .train_step import CudaGraphs, TrainStep

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that make CUDA graphs
EMBEDDED_MODEL_ARGS = dict(patch_size=8, depth=4, embed_dim=128, num_heads=4, dynamic_img_size=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="effkernels-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="ImageFolder root (class sub-folders); default: the embedded dataset")
    p.add_argument("--val-data", help="ImageFolder root for evaluation (default: embedded val split, or none)")
    p.add_argument("--model", default=None, help="timm model name (default: a 4-block LocalFFN ViT for the "
                   "embedded data, deit_small_localffn_patch16_224 otherwise)")
    p.add_argument("--img-size", type=int, default=None, help="final input size (default 64 embedded, 224 otherwise)")
    p.add_argument("--curriculum", default="efficienttrain_pp", choices=["efficienttrain_pp", "vit24h", "none", "custom"])
    p.add_argument("--preset", default="deit_small", choices=sorted(curriculum.EFFICIENTTRAIN_PP_SIZES),
                   help="EfficientTrain++ size preset")
    p.add_argument("--stages", help='custom schedule as JSON [[start_fraction, size, magnitude], ...]')
    p.add_argument("--budget", type=float, default=None, help="total compute in full-size epochs (default 6 embedded, 300)")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05, help="warmup as a fraction of progress")
    p.add_argument("--resize", default="lowfreq", choices=["lowfreq", "interpolate"])
    p.add_argument("--input", choices=["device", "cpu"], default=None,
                   help="where images are decoded and augmented: the device pipeline (default on a GPU) or "
                        "DataLoader workers on the CPU (default on the CPU, where PIL's RandAugment is faster)")
    p.add_argument("--replay", choices=sorted(training_input.REPLAY_PRESETS), default="none",
                   help="reuse each decoded batch with fresh augmentation, EfficientTrain++'s 4,4,2,2,2,2,1,1,1,1 "
                        "per stage (--input device)")
    p.add_argument("--input-ahead", type=int, default=2,
                   help="batches the device pipeline makes ahead on a background thread, on CUDA on a stream of "
                        "its own, so that decoding and augmentation overlap the steps (0: each batch is made on the "
                        "training thread and stream when the step asks for it)")
    p.add_argument("--decoder", choices=image_decode.JPEG_DECODERS, default="torchvision",
                   help="the device pipeline's JPEG decoder (--input device with --data): torchvision's decode_jpeg "
                        "(nvJPEG's CUDA decoder on a GPU) or nvImageCodec (the GPU's hardware JPEG decoder where "
                        "it has one; pip install effkernels[nvimgcodec])")
    p.add_argument("--magnitude", type=int, default=9, help="RandAugment magnitude for vit24h/none")
    p.add_argument("--workers", type=int, default=None,
                   help="loader processes (default: on a GPU up to 8; on the CPU none with <= 4 cores, else 2)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where to train (default cuda where torch sees a GPU); the GPU is LOCAL_RANK's under torchrun, "
                   "else the first visible one (CUDA_VISIBLE_DEVICES picks)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on GPU)")
    p.add_argument("--compile", nargs="?", const="default", choices=["none", *COMPILE_MODES], default=None,
                   help="torch.compile the model, one static graph per input size (default: default on a GPU, "
                   "none on the CPU); reduce-overhead and max-autotune graph the model's forward and backward "
                   "themselves (use them with --cuda-graph none)")
    p.add_argument("--cuda-graph", choices=["step", "none"], default=None,
                   help="step: forward, loss, backward and AdamW captured as one CUDA graph per input size and "
                   "replayed, against the host overhead that dominates the small early-curriculum steps (default "
                   "on a GPU); none: every step launched from the host")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.img_size is not None and args.img_size < 1:
        p.error(f"--img-size must be >= 1, got {args.img_size}")
    embedded = args.data is None
    args.model = args.model or ("deit_tiny_localffn_patch16_224" if embedded else "deit_small_localffn_patch16_224")
    args.img_size = args.img_size or (64 if embedded else 224)
    args.budget = 6.0 if args.budget is None and embedded else (300.0 if args.budget is None else args.budget)
    if not timm.is_model(args.model):
        p.error(f"unknown timm model {args.model!r}")
    if args.budget <= 0:
        p.error(f"--budget must be > 0, got {args.budget}")
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    if not args.weight_decay >= 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not 0 <= args.warmup < 1:
        p.error(f"--warmup is a fraction of progress: it must lie in [0, 1), got {args.warmup}")
    if not 0 <= args.magnitude <= 10:
        p.error(f"--magnitude must lie in [0, 10] (RandAugment's levels), got {args.magnitude}")
    if args.checkpoint_every < 1:
        p.error(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.input_ahead < 0:
        p.error(f"--input-ahead must be >= 0, got {args.input_ahead}")
    if args.workers is not None and args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    args.workers = default_workers(args.device) if args.workers is None else args.workers
    if args.input is None:
        args.input = "device" if args.device == "cuda" else "cpu"
    if args.decoder == "nvimgcodec":
        if args.input != "device" or args.data is None:
            p.error("--decoder nvimgcodec decodes the files of --data in the device pipeline: it needs --data and "
                    "--input device")
        try:
            image_decode.import_nvimgcodec()
        except ValueError as error:
            p.error(f"--decoder nvimgcodec: {error}")
    if args.input == "device" and args.resize != "lowfreq":
        p.error("--input device shrinks with lowfreq_crop: it needs --resize lowfreq")
    if args.compile is None:
        args.compile = "default" if args.device == "cuda" else "none"
    if args.cuda_graph is None:
        args.cuda_graph = "step" if args.device == "cuda" and args.compile not in GRAPHING_COMPILE_MODES else "none"
    if args.cuda_graph == "step" and args.device != "cuda":
        p.error(f"--cuda-graph step captures CUDA graphs: it needs --device cuda, got {args.device}")
    if args.cuda_graph == "step" and args.compile in GRAPHING_COMPILE_MODES:
        p.error(f"--compile {args.compile} makes CUDA graphs of its own: with --cuda-graph step use "
                "--compile default, max-autotune-no-cudagraphs or none")
    if args.data is not None and not _has_images(args.data):
        p.error(f"--data {args.data} holds no class folders with images")
    if args.val_data is not None and args.data is None:
        p.error("--val-data evaluates a --data run: the embedded data has its own evaluation split")
    if args.val_data is not None and not _has_images(args.val_data):
        p.error(f"--val-data {args.val_data} holds no class folders with images")
    if args.curriculum == "custom" and not args.stages:
        p.error("--curriculum custom needs --stages")
    if args.stages and args.curriculum != "custom":
        p.error(f"--stages sets a custom curriculum: it needs --curriculum custom, got --curriculum {args.curriculum}")
    if args.stages:
        try:
            curriculum.custom(json.loads(args.stages))
        except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
            p.error(f"--stages must be JSON [[start_fraction, size, magnitude], ...] forming a schedule: {error}")
    return args, p


def default_workers(device: str) -> int:
    """Loader processes for this process's share of the cores. Training on the CPU, workers compete
    with the model's own threads: on a few cores they slow the run (2 cores, embedded run: 103 s with
    2 workers, 72 s with none)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = usable // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device == "cpu":
        return 0 if cores <= 4 else 2
    return max(1, min(8, cores - 1))


def _has_images(root):
    """Whether root has a class folder (hidden ones are none, see data.image_folder_classes) and a file."""
    if not os.path.isdir(root):
        return False
    return any(files for _, _, files in os.walk(root)) and any(
        not d.startswith(".") and os.path.isdir(os.path.join(root, d)) for d in os.listdir(root))


def build_schedule(args, patch):
    if args.curriculum == "efficienttrain_pp":
        return curriculum.efficienttrain_pp(args.preset).scaled(args.img_size, patch)
    if args.curriculum == "vit24h":
        epochs = max(1, math.ceil(args.budget))
        return curriculum.vit24h(epochs, final_size=args.img_size, start=patch * max(1, round(32 * args.img_size / 224 / patch)),
                                 step=patch * max(1, round(32 * args.img_size / 224 / patch)), magnitude=args.magnitude)
    if args.curriculum == "custom":
        return curriculum.custom(json.loads(args.stages))
    return curriculum.custom([(0.0, args.img_size, args.magnitude)])


def create_model(args, num_classes):
    kwargs = dict(num_classes=num_classes)
    if args.data is None and args.model == "deit_tiny_localffn_patch16_224":
        kwargs.update(EMBEDDED_MODEL_ARGS, img_size=args.img_size)
    elif "vit" in args.model or "deit" in args.model:
        kwargs.update(dynamic_img_size=True, img_size=args.img_size)
    return timm.create_model(args.model, **kwargs)


def patch_size(model):
    embed = getattr(model, "patch_embed", None)
    return embed.patch_size[0] if embed is not None and hasattr(embed, "patch_size") else 1


def step_flops(model, size, num_classes, device):
    """Theoretical forward + backward FLOPs of one image at `size` (FlopCounterMode with depthwise convs
    counted right, batch 2 / 2)."""
    x = torch.randn(2, 3, size, size, device=device)
    counter = flop_counter(display=False)
    with counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def plan_steps(schedule, flops, steps_per_epoch, budget):
    """Steps per stage: compute schedules share budget × (full-size step cost) by fraction of FLOPs,
    epoch schedules by fraction of epochs."""
    full = flops[max(flops)]  # the final (largest) size
    total_steps_at_full = budget * steps_per_epoch
    plan = []
    for stage in schedule.stages:
        share = stage.end - stage.start
        if schedule.unit == "compute":
            plan.append(max(1, round(total_steps_at_full * share * full / flops[stage.size])))
        else:
            plan.append(max(1, round(total_steps_at_full * share)))
    return plan


def budget_too_small(schedule, plan, flops, budget):
    """One line saying that the budget is too small, when rounding the stages to whole steps moves
    any stage's share of the run (of compute, or of epochs for an epoch schedule) by over 10 %;
    else None."""
    weights = [steps * (flops[stage.size] if schedule.unit == "compute" else 1)
               for steps, stage in zip(plan, schedule.stages)]
    got = [w / sum(weights) for w in weights]
    wanted = [stage.end - stage.start for stage in schedule.stages]
    gap, worst = max((abs(g - w) / w, i) for i, (g, w) in enumerate(zip(got, wanted)))
    if gap <= 0.10:
        return None
    return (f"effkernels-train: --budget {budget:g} is too small for the stages to get their shares of "
            f"{schedule.unit} within 10 %: stage {worst} gets {got[worst]:.3f} instead of {wanted[worst]:.3f}")


def ends_below_final_size(schedule, img_size, budget):
    """One line saying that the schedule never trains at --img-size, where evaluation runs (an
    epoch curriculum such as ViT-24h's, +32 px every 5 epochs, cut short by a small budget); else None."""
    last = schedule.stages[-1].size
    if last >= img_size:
        return None
    return (f"effkernels-train: with --budget {budget:g} the schedule ends at {last} px and never trains at "
            f"--img-size {img_size}, where the model is evaluated")


# The arguments that make a run the run it is (its model, data, schedule and draws): a resumed run
# keeps them. The others (--workers, --compile, --device, --val-data, ...) change how it runs.
RUN_DEFINING = ("model", "data", "img_size", "curriculum", "preset", "stages", "budget", "batch_size", "lr",
                "weight_decay", "warmup", "resize", "input", "replay", "magnitude", "seed")


def resume_conflicts(saved: dict, now: dict) -> list[str]:
    """The run-defining arguments whose values differ from the checkpoint's, each as one phrase."""
    def value(args, key):
        return os.path.normpath(args[key]) if key == "data" and args[key] is not None else args[key]

    return [f"--{key.replace('_', '-')} is {now[key]!r}, the checkpoint's run had {saved[key]!r}"
            for key in RUN_DEFINING if key in saved and value(saved, key) != value(now, key)]


class Trainer:
    def __init__(self, args):
        self.args = args
        self.distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        if self.distributed:
            dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if args.device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device(args.device)
        self.amp = args.amp if args.amp is not None else self.device.type == "cuda"
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        self.input = training_input.make_input(args, self.device, self.rank, self.world)
        num_classes = self.input.num_classes
        self.model = create_model(args, num_classes).to(self.device)
        patch = patch_size(self.model)
        self.schedule = build_schedule(args, patch)
        sizes = sorted({s.size for s in self.schedule.stages} | {args.img_size})
        for size in sizes:
            if size % patch:
                raise SystemExit(f"effkernels-train: error: size {size} is not a multiple of the patch size {patch}")
        self.flops = {size: step_flops(self.model, size, num_classes, self.device) for size in sizes}
        replay_problem = training_input.check_replay_schedule(args, self.schedule.stages)
        if replay_problem:
            raise SystemExit(f"effkernels-train: error: {replay_problem}")
        self.steps_per_epoch = self.input.batches_per_epoch()
        if self.steps_per_epoch < 1:
            raise SystemExit("effkernels-train: error: fewer images than one batch per process")
        self.plan = plan_steps(self.schedule, self.flops, self.steps_per_epoch, args.budget)
        self.total_cost = sum(n * self.flops[s.size] for n, s in zip(self.plan, self.schedule.stages))
        for notice in (budget_too_small(self.schedule, self.plan, self.flops, args.budget),
                       ends_below_final_size(self.schedule, args.img_size, args.budget)):
            if notice and self.rank == 0:
                print(notice, file=sys.stderr)
        # The fused AdamW is one kernel per step: a per-tensor optimizer's fixed cost would weigh most on
        # the cheap small-size steps and pull the measured speed-up below the FLOP saving.
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.net = self.model
        self.graphs = CudaGraphs(self.device) if args.cuda_graph == "step" else None
        if self.distributed:
            with self.graphs.side_stream() if self.graphs else contextlib.nullcontext():
                self.net = torch.nn.parallel.DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if args.compile != "none":
            # One static graph per curriculum size (and one for evaluation): never a dynamic-shape graph.
            sizes_and_eval = 2 * len(self.flops)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, sizes_and_eval)
            with torch.random.fork_rng():  # setting up torch.compile draws from the RNG; keep the data order
                self.net = torch.compile(self.net, mode=args.compile, dynamic=False)
        # batch: delivered batches into the epoch, at the replay factor `replay`.
        self.state = dict(step=0, stage=0, stage_step=0, epoch=0, batch=0, cost=0.0, replay=1)
        # Per stage: seconds and count of the timed steps and of the warm-up steps. A process's first steps
        # at each size are warm-ups (compilation, the capture of the step's graph, allocator growth, kernel
        # choice): a one-off cost, kept out of the per-step times that the report compares with the FLOPs.
        # Per stage also the seconds spent waiting for the next batch: the input pipeline's share of the step.
        stages = len(self.plan)
        self.timing = dict(seconds=[0.0] * stages, steps=[0] * stages, warmup=[0.0] * stages, warmup_steps=[0] * stages,
                           data_seconds=[0.0] * stages, images=[0] * stages)
        self.clock = StepClock(self.device)
        if args.resume:
            self._load()
        # Under DDP the capture waits for 11 eager steps: DDP settles its gradient buckets in its first steps.
        self.train_step = TrainStep(self.net, self.optimizer, functools.partial(F.cross_entropy, label_smoothing=0.1),
                                    amp=self.amp, graphs=self.graphs, warmup_steps=11 if self.distributed else 3)

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_path(self):
        return os.path.join(self.args.out, "checkpoint.pt")

    def _save(self):
        if self.rank != 0:
            return
        payload = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(), state=self.state,
                       timing=self.timing, rng=_rng_state(), args=vars(self.args), processes=self.world)
        torch.save(payload, self.ckpt_path + ".tmp")
        os.replace(self.ckpt_path + ".tmp", self.ckpt_path)

    def _load(self):
        if not os.path.exists(self.ckpt_path):
            raise SystemExit(f"effkernels-train: error: --resume but no checkpoint at {self.ckpt_path}")
        payload = torch.load(self.ckpt_path, map_location=self.device, weights_only=False)
        conflicts = resume_conflicts(payload.get("args", {}), vars(self.args))
        if payload.get("processes", self.world) != self.world:  # each process's data position is its shard's
            conflicts.append(f"{self.world} processes, the checkpoint's run had {payload['processes']}")
        if conflicts:
            raise SystemExit("effkernels-train: error: --resume continues the run of the checkpoint, but "
                             + "; ".join(conflicts))
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state, self.timing = {"replay": 1, **payload["state"]}, payload["timing"]
        # A checkpoint from before warm-up steps were counted: at most one per stage then.
        self.timing.setdefault("warmup_steps", [int(seconds > 0) for seconds in self.timing["warmup"]])
        _set_rng_state(payload["rng"])

    # ------------------------------------------------------------------ training
    def run(self):
        a = self.args
        os.makedirs(a.out, exist_ok=True)
        log_path = os.path.join(a.out, "log.csv")
        fields = ["step", "stage", "size", "magnitude", "lr", "loss", "step_ms", "input_wait_ms", "images_per_s",
                  "cost_fraction"]
        if self.rank == 0:
            _truncate_log(log_path, fields, self.state["step"])
        log_file = open(log_path, "a", newline="") if self.rank == 0 else None
        writer = csv.DictWriter(log_file, fields) if log_file else None
        total_steps = sum(self.plan)
        bar = _progress(total_steps, self.state["step"], disable=a.quiet or self.rank != 0)
        self.net.train()
        batches = self._remaining_batches()
        try:
            while self.state["stage"] < len(self.plan):
                index = self.state["stage"]
                stage = self.schedule.stages[index]
                self._enter_replay(self.input.replay_for(index))
                while self.state["stage_step"] < self.plan[index]:
                    # The wait for the next batch, its device work included: the input pipeline's share.
                    wait_mark = self.clock.mark()
                    images, labels, (epoch, batch) = next(batches)  # runs on across epoch ends and stages
                    self._step(images, labels, stage, index, wait_mark)
                    self.state.update(epoch=epoch, batch=batch)
                    self._record(self.clock.ready(), writer, bar)
                    if self.state["step"] % a.checkpoint_every == 0:
                        self._record(self.clock.drain(), writer, bar)
                        log_file and log_file.flush()
                        self._save()
                self.state.update(stage=index + 1, stage_step=0)
                self._record(self.clock.drain(), writer, bar)
                log_file and log_file.flush()
                self._save()
                if self.rank == 0 and self.input.val_set is not None:
                    bar.write(f"stage {index} ({stage.size}px) done: top-1 {self.evaluate():.1%} at {a.img_size}px")
        finally:
            batches.close()
        bar.close()
        if log_file:
            log_file.close()
        if self.rank == 0:
            accuracy = self.evaluate() if self.input.val_set is not None else None
            print(report(self, accuracy))
        if self.distributed:
            dist.destroy_process_group()

    def _remaining_batches(self):
        """The input's batches for the rest of the run (from the saved position on, each stage's
        remaining steps), one iterator: the input pipeline makes the next stage's first batches
        while this stage's last steps run."""
        plan = [(steps - (self.state["stage_step"] if index == self.state["stage"] else 0), stage, index)
                for index, (steps, stage) in enumerate(zip(self.plan, self.schedule.stages))
                if index >= self.state["stage"]]
        plan = [entry for entry in plan if entry[0] > 0]
        if plan:
            self._enter_replay(self.input.replay_for(plan[0][2]))
        return self.input.batches(self.state["epoch"], self.state["batch"], plan)

    def _enter_replay(self, replay):
        """Count the data position at replay factor `replay`, as the input does at a stage change."""
        if replay != self.state["replay"]:
            self.state.update(replay=replay, batch=replayed_position(self.state["batch"], self.state["replay"], replay))

    def _step(self, x, labels, stage, index, wait_mark):
        """Launch one training step; its times and loss reach `_record` once the device has run it.
        A process's first steps at a size are warm-ups (TrainStep.steady), timed apart on the host clock with syncs."""
        progress = self.state["cost"] / self.total_cost if self.schedule.unit == "compute" else self._epoch_progress()
        lr = self.args.lr * curriculum.warmup_cosine(min(progress, 1.0), self.args.warmup)
        timed = self.train_step.steady(x, labels)
        if not timed:
            _sync(self.device)
            host_start = time.perf_counter()
        start_mark = self.clock.mark()
        loss = self.train_step(x, labels, lr)
        self.state["step"] += 1
        self.state["stage_step"] += 1
        self.state["cost"] += self.flops[stage.size]
        info = dict(step=self.state["step"], stage=index, size=stage.size, magnitude=stage.magnitude, lr=f"{lr:.6g}",
                    cost_fraction=f"{self.state['cost'] / self.total_cost:.6f}", images=len(labels) * self.world,
                    timed=timed)
        self.clock.done(info, wait_mark, start_mark, loss)
        if not timed:
            _sync(self.device)
            self.timing["warmup"][index] += time.perf_counter() - host_start
            self.timing["warmup_steps"][index] += 1

    def _record(self, records, writer, bar):
        """Account finished steps in the per-stage timing and write their log rows."""
        for record in records:
            info = dict(record.info)
            index, images, timed = info.pop("stage"), info.pop("images"), info.pop("timed")
            if timed:
                self.timing["seconds"][index] += record.step_seconds
                self.timing["steps"][index] += 1
                self.timing["data_seconds"][index] += record.wait_seconds
                self.timing["images"][index] += images
            if writer:
                seconds = record.wait_seconds + record.step_seconds  # as the report counts a step's time
                row = dict(info, stage=index, loss=record.loss, step_ms=f"{seconds * 1e3:.2f}",
                           input_wait_ms=f"{record.wait_seconds * 1e3:.2f}",
                           images_per_s=images / seconds if seconds > 0 else float("inf"))
                writer.writerow(row)
                bar.set_postfix_str(f"stage {index} {info['size']}px m{info['magnitude']} {row['images_per_s']:.0f} img/s "
                                    f"loss {record.loss:.3f}")
                bar.update(1)

    def _epoch_progress(self):
        done = sum(self.plan[: self.state["stage"]]) + self.state["stage_step"]
        return done / sum(self.plan)

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        for x, labels in self.input.eval_batches():
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(x)
            correct += (logits.argmax(1).cpu() == labels).sum().item()
            total += len(labels)
        self.model.train()
        return correct / max(total, 1)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state():
    return dict(torch=torch.get_rng_state(), python=random.getstate(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_log(path, fields, keep_steps):
    """Start log.csv afresh, or (resuming) keep only the rows up to the checkpoint's step."""
    rows = []
    if keep_steps and os.path.exists(path):
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_steps]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def _progress(total, initial, disable):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=disable, unit="step", file=sys.stdout, dynamic_ncols=True)


def report(trainer, accuracy):
    """The per-stage table (theoretical cost fraction vs measured time fraction), saved and returned."""
    stages, plan, timing = trainer.schedule.stages, trainer.plan, trainer.timing
    costs = [n * trainer.flops[s.size] for n, s in zip(plan, stages)]
    # A timed step's time runs from asking for its batch to the step's end, on the device's timeline: the
    # wait for an input pipeline that falls behind is time the run spends too. A stage of warm-up steps
    # only: their time is all there is.
    step_seconds = [(seconds + waits) / timed if timed else warmup / max(warmup_steps, 1)
                    for seconds, waits, timed, warmup, warmup_steps in zip(
                        timing["seconds"], timing["data_seconds"], timing["steps"], timing["warmup"],
                        timing["warmup_steps"])]
    times = [per_step * steps for per_step, steps in zip(step_seconds, plan)]
    total_cost, total_time = sum(costs), sum(times)
    rows = []
    for i, (stage, steps, cost, spent) in enumerate(zip(stages, plan, costs, times)):
        timed_seconds, data_seconds = timing["seconds"][i], timing["data_seconds"][i]
        rows.append(dict(stage=i, size=stage.size, magnitude=stage.magnitude, steps=steps,
                         cost_fraction=cost / total_cost, time_fraction=spent / total_time,
                         ratio=(spent / total_time) / (cost / total_cost), ms_per_step=1e3 * step_seconds[i],
                         images_per_s=timing["images"][i] / (timed_seconds + data_seconds) if timed_seconds else None,
                         input_share=data_seconds / (data_seconds + timed_seconds) if timed_seconds else None))
    full = trainer.flops[trainer.args.img_size]
    steps = sum(plan)
    final_ms = rows[-1]["ms_per_step"] if stages[-1].size == trainer.args.img_size else None
    summary = dict(
        model=trainer.args.model, curriculum=trainer.args.curriculum, resize=trainer.args.resize,
        device=str(trainer.device), processes=trainer.world, steps=steps, top1=accuracy,
        theoretical_saving=steps * full / total_cost,
        measured_saving=(steps * final_ms / 1e3 / total_time) if final_ms else None,
        warmup_seconds=sum(timing["warmup"]), cuda_graph=trainer.args.cuda_graph, compile=trainer.args.compile,
        cuda_graph_failures=[f"{shape[0]}: {reason}" for shape, reason in trainer.train_step.capture_failures.items()],
        **trainer.input.summary(),
    )
    lines = ["| stage | size | magnitude | steps | theoretical cost fraction | measured time fraction | ratio | ms/step "
             "| images/s | input wait |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        images = f"{r['images_per_s']:.0f}" if r["images_per_s"] is not None else "–"
        wait = f"{r['input_share']:.0%}" if r["input_share"] is not None else "–"
        lines.append(f"| {r['stage']} | {r['size']} | {r['magnitude']} | {r['steps']} | {r['cost_fraction']:.3f} | "
                     f"{r['time_fraction']:.3f} | {r['ratio']:.2f} | {r['ms_per_step']:.1f} | {images} | {wait} |")
    lines.append("")
    measured = f" and, at the last stage's measured speed, {summary['measured_saving']:.2f}× the time" if final_ms else ""
    top1 = f" Top-1: {accuracy:.1%}." if accuracy is not None else ""
    lines.append(f"Same number of steps at {trainer.args.img_size}px would cost {summary['theoretical_saving']:.2f}× the "
                 f"FLOPs{measured}.{top1}")
    warmups = ("the first step at each size (warm-up and compilation" if trainer.graphs is None else
               f"the first {trainer.train_step.warmup_steps + 1} steps at each size (eager warm-ups and compilation, "
               "then the capture of the step's CUDA graph")
    for failure in summary["cuda_graph_failures"]:
        lines.append(f"CUDA graph capture failed for inputs {failure}; steps of that shape ran eagerly.")
    lines.append(f"Times per step leave out {warmups}: {summary['warmup_seconds']:.1f} s in all). A step's time includes the wait for its batch; "
                 f"input wait: that wait's share of it.")
    table = "\n".join(lines)
    out = trainer.args.out
    with open(os.path.join(out, "stages.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "stages.json"), "w") as f:
        json.dump(dict(summary=summary, stages=rows), f, indent=1)
    _plot(rows, os.path.join(out, "curve.png"))
    return table


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = [0.0] + list(_cumsum(r["cost_fraction"] for r in rows))
    spent = [0.0] + list(_cumsum(r["time_fraction"] for r in rows))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(range(len(cost)), cost, marker="o", label="theoretical cost (FLOPs)")
    ax.plot(range(len(spent)), spent, marker="s", label="measured time")
    ax.set_xlabel("stage boundary")
    ax.set_ylabel("cumulative fraction of the run")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cumsum(values):
    total = 0.0
    for value in values:
        total += value
        yield total


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, _ = parse_args(argv)
    Trainer(args).run()


if __name__ == "__main__":
    main()
