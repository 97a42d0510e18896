"""Run every benchmark into one results folder: lowfreq_crop, LocalFFN, timm fuse, train step.

    python perf/run_all.py [--sweep tiny|small|full] [--train-sweep ...] [--compile] [--device cuda] [--out DIR]

Each writes <name>.json, <name>.md and <name>.png; see each script's --help for what it compares.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_local_ffn  # noqa: E402
import bench_lowfreq_crop  # noqa: E402
import bench_timm_fuse  # noqa: E402
import common  # noqa: E402
import train_step  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", choices=["tiny", "small", "full"], default="small", help="kernel benchmarks")
    parser.add_argument("--train-sweep", choices=["tiny", "small", "full"], default=None, help="train_step (default: --sweep)")
    parser.add_argument("--compile", action="store_true", help="train_step: add the torch.compile variant")
    parser.add_argument("--out", default=None, help="results folder (default perf/results/<device>-<date>)")
    args = parser.parse_args(argv)
    out = args.out or common.default_out_dir(torch.device(args.device))
    common_args = ["--device", args.device, "--out", out]
    bench_lowfreq_crop.main(["--sweep", args.sweep, *common_args])
    bench_local_ffn.main(["--sweep", args.sweep, *common_args])
    bench_timm_fuse.main(["--sweep", args.sweep, *common_args])
    train_step.main(["--sweep", args.train_sweep or args.sweep, *common_args, *(["--compile"] if args.compile else [])])


if __name__ == "__main__":
    main()
