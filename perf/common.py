"""Timing and reporting shared by the perf/ benchmarks: medians, device names, result files."""
import argparse
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import time
import warnings

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()}, {torch.get_num_threads()} threads"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu{torch.get_num_threads()}"
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def default_out_dir(device: torch.device) -> str:
    return os.path.join("perf", "results", f"{device_slug(device)}-{datetime.date.today().isoformat()}")


class BenchmarkParser(argparse.ArgumentParser):
    """The command line every benchmark shares: --device and --out, and where a script has them --sweep
    (`sweeps`' names, default `sweep`) and --repeats (`repeats`: its GPU and CPU defaults). Parsing
    gives a torch.device, the device's repeat count where none was asked for, and the default
    results folder where no --out was."""

    def __init__(self, doc: str, *, sweeps=None, sweep=None, sweep_help=None, repeats=None,
                 repeats_of="timed runs per case"):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        self._repeats = repeats
        self.add_argument("--device", type=torch.device, default="cuda" if torch.cuda.is_available() else "cpu")
        if sweeps is not None:
            self.add_argument("--sweep", choices=sorted(sweeps), default=sweep, help=sweep_help)
        if repeats is not None:
            self.add_argument("--repeats", type=int, default=None,
                              help=f"{repeats_of} (default {repeats[0]} GPU, {repeats[1]} CPU)")
        self.add_argument("--out", default=None, help="results folder (default perf/results/<device>-<date>)")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if self._repeats is not None and parsed.repeats is None:
            parsed.repeats = self._repeats[0] if parsed.device.type == "cuda" else self._repeats[1]
        parsed.out = parsed.out or default_out_dir(parsed.device)
        return parsed


def calls_per_sample(fn, device: torch.device, target_ms: float = 2.0, most: int = 20) -> int:
    """Back-to-back calls per GPU timing sample: about target_ms of work (at most `most` calls)."""
    if device.type != "cuda":
        return 1
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return max(1, min(most, round(target_ms / max(start.elapsed_time(end), 1e-3))))


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 3, calls: int | None = None) -> float:
    """Median time per call of fn() in milliseconds.

    On the GPU a sample times `calls` back-to-back calls between two CUDA events (default: about
    2 ms of work), so the device runs them without waiting for the host in between: the time is
    the device's, and the host's cost per call shows only where it exceeds it (that is then the
    honest rate of an eager loop; the benchmarks report host µs per call apart). A single
    synchronised call would add the host's launch time to every kernel. On the CPU: perf_counter
    around one call.
    """
    for _ in range(warmup):
        fn()
    calls = calls or calls_per_sample(fn, device)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / calls)
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)


def wall_us_per_call(fn, device: torch.device, calls: int, warmup: int = 10) -> float:
    """µs per call of fn() called back to back, the device synchronised once at the end: on a GPU,
    where each call's work is small, the host's cost per call (what a launch-bound loop pays)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    begin = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - begin) / calls * 1e6


def with_backend(name, fn):
    """fn run with EFFKERNELS_BACKEND=name: the GPU kernel family of every effkernels op in the call
    (cached plans key on it), the environment restored after."""
    def call():
        previous = os.environ.get("EFFKERNELS_BACKEND")
        os.environ["EFFKERNELS_BACKEND"] = name
        try:
            return fn()
        finally:
            if previous is None:
                del os.environ["EFFKERNELS_BACKEND"]
            else:
                os.environ["EFFKERNELS_BACKEND"] = previous
    return call


def has_cuda_cpp(device: torch.device) -> bool:
    """Whether the CUDA C++ kernels can run here: a GPU, and effkernels built with them."""
    return device.type == "cuda" and hasattr(torch.ops.effkernels, "separable_map_cuda")


def graphed(fn, device: torch.device, warmup: int = 3):
    """A function replaying fn() from a CUDA graph captured once, or None off CUDA (or where fn cannot
    be captured: a warning says why). Timed, it gives the device's time for fn's work with no host
    launch cost: what a captured (reduce-overhead) training step pays, where an eager loop on a slow
    host may time the host instead. fn is warmed up on a side stream first (compiled functions
    compile there), as torch.cuda.graph asks."""
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as error:  # e.g. an op that synchronises with the host: report, time the rest
        warnings.warn(f"not timed from a CUDA graph: {fn} could not be captured ({error})")
        return None
    return graph.replay


def interleaved_median_ms(fns: dict, device: torch.device, repeats: int, warmup: int = 3) -> dict:
    """Median ms per call of each fn, timed round-robin so that a noisy neighbour hits every peer alike."""
    samples = {name: [] for name in fns}
    calls = {}
    for name, fn in fns.items():
        median_ms(fn, device, repeats=1, warmup=warmup)
        calls[name] = calls_per_sample(fn, device)
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(median_ms(fn, device, repeats=1, warmup=0, calls=calls[name]))
    return {name: statistics.median(values) for name, values in samples.items()}


def cycling(first: torch.Tensor, copies: int = 3):
    """A function returning `first` and copies of it in turn: on the GPU, a batch that fits in L2
    (50 MB on an H100) would otherwise be timed from the cache, call after call."""
    items = [first] + [first.clone() for _ in range(copies - 1 if first.is_cuda else 0)]
    turn = itertools.cycle(items)
    return lambda: next(turn)


def copy_bandwidth_gbs(device: torch.device, megabytes: int = 256) -> float:
    """Measured peak copy bandwidth (read + write bytes per second): the roofline's memory roof."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.numel() / ms / 1e6


def write_results(out_dir: str, name: str, meta: dict, rows: list[dict], columns: list[str], plot=None) -> str:
    """Write <name>.json (meta + rows) and <name>.md (a table of `columns`); return the table.

    plot: (label column, value column, axis title) adds <name>.png, a bar per row.
    """
    if plot is not None:
        _plot(os.path.join(out_dir, f"{name}.png"), f"{name}: {meta['device']}", rows, *plot)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    lines = [
        f"{name}: {meta['device']}, torch {meta['torch']}, {meta['date']}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(col, "")) for col in columns) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table)
    return table


def _plot(path, title, rows, label_key, value_key, axis_title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    labels = [" ".join(str(row[k]) for k in ([label_key] if isinstance(label_key, str) else label_key)) for row in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), [row.get(value_key, math.nan) for row in rows])  # no bar for a failed row
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(axis_title)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_meta(device: torch.device) -> dict:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
    }


def _format(value) -> str:
    if value is None:  # not measured for this row
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
