"""The extension was built with every kernel this machine can compile."""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch

import effkernels  # noqa: F401


def test_cpu_kernels_are_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("effkernels::separable_map", "CPU")


CUDA_CPP_WANTED = os.environ.get("EFFKERNELS_CUDA") == "1" or (
    torch.cuda.is_available() and os.environ.get("EFFKERNELS_CUDA") != "0"
)


@pytest.mark.skipif(torch.version.cuda is None or shutil.which("nvcc") is None, reason="no CUDA toolkit or CPU-only torch")
@pytest.mark.skipif(not CUDA_CPP_WANTED, reason="no GPU and EFFKERNELS_CUDA is not 1: the CUDA C++ kernels are not built")
def test_cuda_kernels_are_compiled_when_a_gpu_or_ci_asks():
    # setup.py builds the CUDA C++ kernels on a GPU machine and wherever EFFKERNELS_CUDA=1 (CI): a
    # CPU-only build then means it did not find the toolkit (CUDA_HOME) and silently dropped them.
    assert hasattr(torch.ops.effkernels, "separable_map_cuda")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("effkernels::separable_map_cuda", "CUDA")


def test_each_op_runs_its_measured_default_unless_the_environment_names_one(monkeypatch):
    built = hasattr(torch.ops.effkernels, "separable_map_cuda")
    monkeypatch.delenv("EFFKERNELS_BACKEND", raising=False)
    monkeypatch.setitem(effkernels.ops.DEFAULT_GPU_BACKENDS, "dwconv_act", "cuda")
    monkeypatch.setitem(effkernels.ops.DEFAULT_GPU_BACKENDS, "separable_map", "triton")
    assert effkernels.ops.gpu_backend("dwconv_act") == ("cuda" if built else "triton")
    assert effkernels.ops.gpu_backend("separable_map") == "triton"
    monkeypatch.setenv("EFFKERNELS_BACKEND", "triton")
    assert effkernels.ops.gpu_backend("dwconv_act") == "triton"


def test_unknown_gpu_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("EFFKERNELS_BACKEND", "opencl")
    with pytest.raises(ValueError, match="EFFKERNELS_BACKEND must be one of"):
        effkernels.ops.gpu_backend("dwconv_act")


# Outputs of the CPU kernels whose passes are compiled per instruction set, on fixed inputs: the
# folded separable_map path (lowfreq_crop, normalised float32 out: centring and the rank-one term),
# the generic path (per-sample operators, K = 2, per-sample rank-one factors, centring) and dwconv_act
# forward and backward (prefix token, h-swish around the conv).
_ISA_OUTPUTS = """
import sys, torch, effkernels
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
x = torch.randint(0, 256, (2, 3, 40, 36), dtype=torch.uint8, generator=g)
outs = [effkernels.lowfreq_crop(x, (16, 14), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), out_dtype=torch.float32)]
rows, cols = torch.randn(2, 2, 11, 40, generator=g) / 6, torch.randn(2, 2, 9, 36, generator=g) / 6
factors = (torch.randn(1, 11, generator=g), torch.randn(2, 40, generator=g) / 6, torch.randn(1, 9, generator=g),
           torch.randn(2, 36, generator=g) / 6)
outs.append(torch.ops.effkernels.separable_map(x, rows, cols, torch.rand(3, generator=g), torch.randn(3, generator=g),
                                               torch.float32, *factors))
h = torch.randn(3, 1 + 5 * 7, 40, generator=g, requires_grad=True)
weight, bias = torch.randn(40, 1, 3, 3, generator=g, requires_grad=True), torch.randn(40, generator=g, requires_grad=True)
z = effkernels.dwconv_act(h, (5, 7), weight, bias, num_prefix_tokens=1, prefix="mlp", pre_act="hardswish", act="hardswish")
outs += [z, *torch.autograd.grad(z, (h, weight, bias), torch.randn(z.shape, generator=g))]
torch.save([o.detach() for o in outs], sys.argv[1])
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the AVX2 build exists on x86-64 only")
def test_baseline_cpu_kernels_match_the_default_ones(tmp_path):
    """EFFKERNELS_CPU_ISA=baseline runs the kernels' baseline build (the default is AVX2 where the CPU
    has it): both builds give the same results to float32 rounding."""
    import subprocess
    import sys

    results = {}
    for isa in ("default", "baseline"):
        env = {**os.environ, "EFFKERNELS_CPU_ISA": isa}
        subprocess.run([sys.executable, "-c", _ISA_OUTPUTS, str(tmp_path / isa)], env=env, check=True)
        results[isa] = torch.load(tmp_path / isa)
    for default, baseline in zip(results["default"], results["baseline"]):
        torch.testing.assert_close(baseline, default, rtol=1e-5, atol=1e-5)


def test_sdist_holds_everything_a_build_from_it_compiles(tmp_path):
    # setuptools puts only the sources setup.py names into an sdist: without MANIFEST.in the headers
    # and the CUDA C++ sources were missing, and `pip install effkernels-*.tar.gz` failed to compile.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = "from setuptools import build_meta; import sys; print(build_meta.build_sdist(sys.argv[1]))"
    made = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=root, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    sdist = tmp_path / made.stdout.split()[-1]
    with tarfile.open(sdist) as archive:
        packed = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {"setup.py", "pyproject.toml", "README.md"}
    for folder in ("csrc", "effkernels"):
        for directory, _, files in os.walk(os.path.join(root, folder)):
            needed |= {os.path.relpath(os.path.join(directory, f), root) for f in files
                       if not f.endswith((".pyc", ".so")) and "__pycache__" not in directory}
    assert not needed - packed, f"missing from the sdist: {sorted(needed - packed)}"
