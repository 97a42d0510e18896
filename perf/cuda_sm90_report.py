"""What the CUDA C++ dwconv_act kernels compile to for sm_90 (H100), on any machine with nvcc: per
kernel, registers and spill bytes (ptxas -v) and SASS instructions per value in the row loop, the
figure the kernels are written for (at these sizes they are likely bound by instruction issue, see
effkernels/triton/dwconv_act.py; its tuner, tune_dwconv_act.py --sm90, reports the same figure for
the Triton kernels).

    python perf/cuda_sm90_report.py [--dtype bfloat16] [--out DIR]

The row loop is the largest innermost loop of a kernel's SASS (sm90.hot_loop_instructions); it is
unrolled by the load ring's length, kRowsAhead, and each step handles V values per thread (the
kernel's last template argument), so per value = loop instructions / (kRowsAhead x V). Needs nvcc
and the nvdisasm that Triton ships; no GPU. One compile of csrc/cuda/dwconv_act.cu: ~1-2 min.
"""
import argparse
import glob
import os
import re
import site
import subprocess
import sys
import sysconfig
import tempfile

import torch
from torch.utils import cpp_extension

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import sm90  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "csrc", "cuda", "dwconv_act.cu")
ACTIVATIONS = ["identity", "relu", "hardswish", "gelu", "gelu_tanh"]  # effkernels::Activation's order
SCALARS = {"bfloat16": "c10::BFloat16", "float16": "c10::Half", "float32": "float", "float64": "double"}


def rows_ahead() -> int:
    header = open(os.path.join(ROOT, "csrc", "cuda", "dwconv_act_stencil.cuh")).read()
    return int(re.search(r"constexpr int kRowsAhead = (\d+);", header).group(1))


def compile_cubin(cubin: str) -> str:
    """Compiles dwconv_act.cu for sm_90 into `cubin`; returns ptxas's -v report."""
    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"], *setup_cuda_includes()]
    # torch 2.14's headers need C++20; older ones build extensions as C++17 (CI also builds against torch
    # 2.11: .ci/check_gpu_image).
    standard = "c++20" if tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 14) else "c++17"
    command = ["nvcc", f"-std={standard}", "-O3", "--use_fast_math", "-arch=sm_90", "-cubin", "-Xptxas=-v",
               "--expt-relaxed-constexpr", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
               "-DEFFKERNELS_WITH_CUDA", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
               "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
               *[part for path in includes for part in ("-isystem", path)], "-o", cubin, SOURCE]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{done.stderr[-3000:]}")
    return done.stderr + done.stdout


def setup_cuda_includes():
    """The pip CUDA headers (site-packages/nvidia/*/include), which setup.py adds too."""
    return [folder for root in site.getsitepackages()
            for folder in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include")))]


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    return dict(zip(names, out))


def kernel_rows(report: str, sass: str, dtype: str):
    """A row per forward/backward kernel of `dtype`: activations, V, registers, spills, SASS per value."""
    resources, current = {}, None
    for line in report.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)'", line):
            current = m.group(1)
        elif current and (m := re.search(r"(\d+) bytes spill stores", line)):
            resources.setdefault(current, {})["spill bytes"] = int(m.group(1))
        elif current and (m := re.search(r"Used (\d+) registers", line)):
            resources.setdefault(current, {})["registers"] = int(m.group(1))
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"\.text\.(\S+):\n(.*?)(?=\n\s*\.section|\Z)", sass, re.S)}
    names = demangle(list(resources))
    pattern = re.compile(r"stencil::(forward|backward)_kernel<\(effkernels::Activation\)(\d), "
                         r"\(effkernels::Activation\)(\d), ([\w:]+), \w+, (\d+)>")
    unroll, rows = rows_ahead(), []
    for mangled, name in names.items():
        m = pattern.search(name)
        if not m or m.group(4) != SCALARS[dtype]:
            continue
        kind, pre, act, _, vec = m.groups()
        loop = sm90.hot_loop_instructions(bodies.get(mangled, ""))
        rows.append({"kernel": kind, "pre_act": ACTIVATIONS[int(pre)], "act": ACTIVATIONS[int(act)], "V": int(vec),
                     **resources[mangled], "SASS per value": loop / (unroll * int(vec)) if loop else None})
    return sorted(rows, key=lambda r: (r["kernel"] != "forward", -r["V"], r["pre_act"], r["act"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=sorted(SCALARS), default="bfloat16")
    parser.add_argument("--out", default=None, help="results folder (default: a temporary one; the table is printed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "dwconv_act.cubin")
        report = compile_cubin(cubin)
        nvdisasm = os.path.join(sm90.tools_dir(), "nvdisasm")
        sass = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
    rows = kernel_rows(report, sass, args.dtype)
    meta = {**common.run_meta(torch.device("cpu")), "dtype": args.dtype, "rows ahead (row-loop unroll)": rows_ahead()}
    meta["device"] = f"sm_90 SASS by nvcc (compiled on {meta['device']}, not run)"
    columns = ["kernel", "pre_act", "act", "V", "registers", "spill bytes", "SASS per value"]
    print(common.write_results(args.out or tempfile.mkdtemp(), f"cuda_sm90_{args.dtype}", meta, rows, columns))
    return rows


if __name__ == "__main__":
    main()
