"""The extension was built with every kernel this machine can compile."""
import os
import shutil

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


def test_unknown_gpu_backend_is_rejected(monkeypatch):
    monkeypatch.setenv("EFFKERNELS_BACKEND", "opencl")
    with pytest.raises(ValueError, match="EFFKERNELS_BACKEND must be one of"):
        effkernels.ops.gpu_backend()
