"""Run every benchmark into one results folder: lowfreq_crop, LocalFFN, timm fuse, train step, attention, RandAugment,
the input pipeline and whole EfficientTrain++ runs.

    python perf/run_all.py [--sweep tiny|small|full] [--train-sweep ...] [--compile] [--device cuda] [--out DIR]

Each writes <name>.json, <name>.md and <name>.png; see each script's --help for what it compares. The
input pipeline and the end-to-end runs have no sweep of their own: with --sweep tiny they run on a
handful of small files (a check that they work), otherwise at their defaults (the issues' settings).
"""
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_attention  # noqa: E402
import bench_augment  # noqa: E402
import bench_local_ffn  # noqa: E402
import bench_lowfreq_crop  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_timm_fuse  # noqa: E402
import bench_train  # noqa: E402
import common  # noqa: E402
import train_step  # noqa: E402

TINY_PIPELINE = ["--files", "20", "--batch", "4", "--sizes", "16", "--out-size", "24", "--replay", "2", "--warmup", "1",
                 "--batches", "2", "--workers", "1"]
TINY_TRAIN = ["--models", "deit_tiny_localffn_patch16_224", "--img-size", "32", "--files", "40", "--batch", "8",
              "--budget", "1"]
SWEEPS = ("tiny", "small", "full")


def main(argv=None):
    parser = common.BenchmarkParser(__doc__, sweeps=SWEEPS, sweep="small", sweep_help="kernel benchmarks")
    parser.add_argument("--train-sweep", choices=SWEEPS, default=None, help="train_step (default: --sweep)")
    parser.add_argument("--compile", action="store_true", help="train_step: add the torch.compile variant")
    args = parser.parse_args(argv)
    common_args = ["--device", str(args.device), "--out", args.out]
    tiny = args.sweep == "tiny"
    bench_lowfreq_crop.main(["--sweep", args.sweep, *common_args])
    bench_local_ffn.main(["--sweep", args.sweep, *common_args])
    bench_timm_fuse.main(["--sweep", args.sweep, *common_args])
    train_step.main(["--sweep", args.train_sweep or args.sweep, *common_args, *(["--compile"] if args.compile else [])])
    bench_attention.main(["--sweep", args.sweep, *common_args])
    bench_augment.main(["--sweep", args.sweep, *common_args])
    bench_pipeline.main([*(TINY_PIPELINE if tiny else []), *common_args])
    bench_train.main([*(TINY_TRAIN if tiny else []), *common_args])


if __name__ == "__main__":
    main()
