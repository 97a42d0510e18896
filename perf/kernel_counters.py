"""Why a kernel takes the time it takes: Nsight Compute's counters of the kernels behind the GPU targets.

The benchmarks say how far an op is from its target and profile_kernels.py which kernels make up
the time; this reads the hardware counters of each of those kernels: duration, SM and memory
throughput as % of peak, DRAM throughput, achieved occupancy, registers, issue rate, tensor-pipe
use, and the warp stall reasons that dominate. That is what decides the next change to a kernel
(more work in flight, fewer instructions, fewer bytes), and one device call gets all of it.

    python perf/kernel_counters.py ncu [--out DIR]    # on a GPU machine: every workload under ncu
    python perf/kernel_counters.py report CSV... [--out DIR]
    python perf/kernel_counters.py run WORKLOAD       # what ncu runs: warm-up, then one profiled iteration

`ncu` runs `ncu --profile-from-start off --clock-control none --page raw --csv` once per workload
(the profiled range is one iteration after warm-up, between cudaProfilerStart and Stop, so
compilation and autotuning stay out of it), keeps each raw CSV page as ncu_<workload>.csv and then
writes counters.md (a row per kernel) and counters.json (every metric ncu collected). Metric names
differ between GPU generations and ncu versions: each column takes the first name ncu reported,
and a column that none matches shows "-".
"""
import argparse
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import torch

import common
import profile_kernels

SECTIONS = ("SpeedOfLight", "LaunchStats", "Occupancy", "ComputeWorkloadAnalysis", "MemoryWorkloadAnalysis",
            "WarpStateStats")


def _lowfreq(band, out_dtype, augmented=False):
    def make(shape, device):
        steps = profile_kernels.lowfreq_workloads({**shape, "band": min(band, shape["image"])}, device, out_dtype)
        return steps["lowfreq_crop augmented" if augmented else "lowfreq_crop plain"]
    return make


def _local_ffn(name, backend=None):
    def make(shape, device):
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        step = profile_kernels.local_ffn_workloads(shape, device, dtype)[name]
        return common.with_backend(backend, step) if backend else step
    return make


# Issue 12's lowfreq_crop cases (uint8 256 × 3 × 224² → band, normalised) and issue 13's LocalFFN
# block (DeiT-S widths, class token + 14×14 grid, bf16 autocast) next to its peer, the plain Mlp.
WORKLOADS = {
    "lowfreq-bf16-96": _lowfreq(96, torch.bfloat16),
    "lowfreq-bf16-160": _lowfreq(160, torch.bfloat16),
    "lowfreq-bf16-192": _lowfreq(192, torch.bfloat16),
    "lowfreq-f32-160": _lowfreq(160, torch.float32),
    "lowfreq-augmented-bf16-160": _lowfreq(160, torch.bfloat16, augmented=True),
    "local-ffn-block": _local_ffn("local_ffn fused block"),
    "local-ffn-block-cuda-cpp": _local_ffn("local_ffn fused block", backend="cuda"),  # the other dwconv_act
    "mlp-block": _local_ffn("local_ffn plain Mlp"),
}

# Summary columns: (title, candidate metric names, the first one present wins).
COLUMNS = (
    ("µs", ("gpu__time_duration.sum",)),
    ("registers", ("launch__registers_per_thread",)),
    ("SM %", ("sm__throughput.avg.pct_of_peak_sustained_elapsed",)),
    ("memory %", ("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",)),
    ("DRAM %", ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                "dram__throughput.avg.pct_of_peak_sustained_elapsed")),
    ("occupancy %", ("sm__warps_active.avg.pct_of_peak_sustained_active",)),
    ("IPC", ("sm__inst_executed.avg.per_cycle_active", "smsp__inst_executed.avg.per_cycle_active")),
    ("cycles per issue", ("smsp__average_warps_active_per_issue_active.ratio",)),
)
TENSOR_PIPE = re.compile(r"^sm__(inst_executed_)?pipe_tensor\w*\.avg\.pct_of_peak_sustained_active$")
STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio$")
TIME_UNITS = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}


def run(name, sweep, device):
    """Warm the workload up, then run one iteration between cudaProfilerStart and Stop."""
    step = WORKLOADS[name](profile_kernels.SHAPES[sweep], device)
    for _ in range(3):
        step()
    common.synchronize(device)
    if device.type == "cuda":
        torch.cuda.profiler.start()
    step()
    common.synchronize(device)
    if device.type == "cuda":
        torch.cuda.profiler.stop()


def find_ncu():
    """The ncu executable: on PATH, else in the usual Nsight Compute install folders; None if absent."""
    found = shutil.which("ncu")
    if found:
        return found
    candidates = sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu") + glob.glob("/usr/local/cuda*/bin/ncu"))
    return candidates[-1] if candidates else None


def ncu_command(ncu, csv_path, workload, sweep):
    """The ncu call that profiles `workload`'s one marked iteration into a raw CSV page."""
    sections = [arg for section in SECTIONS for arg in ("--section", section)]
    return [ncu, "--target-processes", "all", "--profile-from-start", "off", "--clock-control", "none",
            "--csv", "--page", "raw", *sections, "--log-file", csv_path,
            sys.executable, os.path.abspath(__file__), "run", workload, "--sweep", sweep]


def read_raw_page(path):
    """The kernels of one ncu raw CSV page: a list of {metric: value} (strings) and the {metric: unit}
    row. ncu's own lines (==PROF==, warnings) before the table are skipped."""
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return [], {}
    rows = list(csv.reader(lines[start:]))
    header, body = rows[0], rows[1:]
    units = {}
    if body and body[0] and body[0][0] == "":  # the units row has no kernel ID
        units = dict(zip(header, body[0]))
        body = body[1:]
    return [dict(zip(header, row)) for row in body if len(row) == len(header)], units


def _number(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def summarise(kernel, units):
    """One report row of a kernel's raw metrics: the COLUMNS, the busiest tensor pipe, the top stalls."""
    row = {"kernel": kernel.get("Kernel Name", "?"), "grid": kernel.get("Grid Size", ""),
           "block": kernel.get("Block Size", "")}
    for title, names in COLUMNS:
        name = next((n for n in names if _number(kernel.get(n)) is not None), None)
        value = None if name is None else _number(kernel[name])
        if value is not None and title == "µs":
            value *= TIME_UNITS.get(units.get(name, "usecond"), 1.0)
        row[title] = value
    pipes = [(_number(v), k) for k, v in kernel.items() if TENSOR_PIPE.match(k) and _number(v) is not None]
    row["tensor pipe %"] = max(pipes)[0] if pipes else None
    stalls = sorted(((_number(v), STALL.match(k).group(1)) for k, v in kernel.items()
                     if STALL.match(k) and _number(v) is not None), reverse=True)
    row["top stalls (cycles per issue)"] = ", ".join(f"{reason} {value:.1f}" for value, reason in stalls[:3]) or None
    return row


def report(csv_paths, out_dir):
    """counters.md and counters.json from ncu raw pages named ncu_<workload>.csv; returns the table."""
    columns = ["workload", "kernel", "grid", "block", *(title for title, _ in COLUMNS), "tensor pipe %",
               "top stalls (cycles per issue)"]
    rows, raw = [], {}
    for path in csv_paths:
        workload = os.path.basename(path)[len("ncu_"):-len(".csv")]
        kernels, units = read_raw_page(path)
        raw[workload] = {"units": units, "kernels": kernels}
        rows += [{"workload": workload, **summarise(kernel, units)} for kernel in kernels]
        if not kernels:
            rows.append({"workload": workload, "kernel": "no kernel profiled (see the CSV file)"})
    for row in rows:
        row["kernel"] = row["kernel"][:60]
        for title in columns:
            if row.get(title) is None:
                row[title] = "-"
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    table = common.write_results(out_dir, "counters", common.run_meta(device), rows, columns)
    with open(os.path.join(out_dir, "counters_raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    return table


def profile_all(sweep, out_dir):
    """Every workload under ncu, then the report. Returns the number of workloads ncu failed on."""
    ncu = find_ncu()
    if ncu is None:
        raise SystemExit("kernel_counters: no ncu on PATH or under /opt/nvidia/nsight-compute")
    os.makedirs(out_dir, exist_ok=True)
    failed, paths = 0, []
    for workload in WORKLOADS:
        path = os.path.abspath(os.path.join(out_dir, f"ncu_{workload}.csv"))
        done = subprocess.run(ncu_command(ncu, path, workload, sweep))
        print(f"{workload}: ncu exit {done.returncode}", flush=True)
        failed += done.returncode != 0
        paths.append(path)
    print(report([p for p in paths if os.path.exists(p)], out_dir))
    return failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="one workload: warm-up, then one iteration marked for ncu")
    run_parser.add_argument("workload", choices=sorted(WORKLOADS))
    run_parser.add_argument("--sweep", choices=sorted(profile_kernels.SHAPES), default="deit_small")
    run_parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ncu_parser = commands.add_parser("ncu", help="every workload under ncu, then the report")
    ncu_parser.add_argument("--sweep", choices=sorted(profile_kernels.SHAPES), default="deit_small")
    ncu_parser.add_argument("--out", default=None)
    report_parser = commands.add_parser("report", help="counters.md/json from ncu raw CSV pages")
    report_parser.add_argument("csv", nargs="+")
    report_parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    missing = [path for path in getattr(args, "csv", []) if not os.path.isfile(path)]
    if missing:
        parser.error(f"no such CSV file: {missing[0]}")
    if args.command == "run":
        run(args.workload, args.sweep, torch.device(args.device))
        return 0
    out_dir = args.out or common.default_out_dir(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if args.command == "ncu":
        return 1 if profile_all(args.sweep, out_dir) else 0
    print(report(args.csv, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
