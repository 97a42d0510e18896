"""Shared fixtures: the backends every op test runs on, and NaN-poisoned fresh memory.

Without a GPU the Triton kernels run on CPU tensors under TRITON_INTERPRET=1, which must be set
before triton is first imported, hence here at the top. torch.compile gets a fresh cache folder per
session: Inductor's graph cache does not key on the effkernels ops' code, so a graph compiled by
another checkout (or before an op's fake kernel changed) would otherwise be reused.
"""
import contextlib
import os
import shutil
import sys
import tempfile

FRESH_INDUCTOR_CACHE = None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="effkernels-inductor-")
if FRESH_INDUCTOR_CACHE:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = FRESH_INDUCTOR_CACHE

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import effkernels  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
HAS_CUDA_CPP = hasattr(torch.ops.effkernels, "separable_map_cuda")


def pytest_addoption(parser):
    parser.addoption(
        "--device-only", action="store_true",
        help="leave out the cases that run only the C++ CPU kernels or the CPU torch stages (backend cpu, "
             "pixel_kernels torch), which CI runs: a GPU machine's short device time goes to the GPU's code paths",
    )


# The parametrisations that select a CPU-only code path, whatever machine the test runs on.
CPU_ONLY_PARAMETERS = {"backend": "cpu", "pixel_kernels": "torch"}


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--device-only"):
        return
    kept, left_out = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        cpu_only = any(params.get(name) == value for name, value in CPU_ONLY_PARAMETERS.items())
        (left_out if cpu_only else kept).append(item)
    config.hook.pytest_deselected(items=left_out)
    items[:] = kept


def pytest_sessionfinish(session, exitstatus):
    if FRESH_INDUCTOR_CACHE:
        shutil.rmtree(FRESH_INDUCTOR_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def poison_fresh_memory():
    """torch.empty returns NaNs (ints: their max), so an element a kernel forgot to write shows."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(previous[0])
    torch.utils.deterministic.fill_uninitialized_memory = previous[1]


@contextlib.contextmanager
def triton_kernel_on_cpu():
    """Route CPU calls of the effkernels ops to their Triton kernels (run by the interpreter)."""
    from effkernels.triton.dwconv_act import dwconv_act_backward_triton, dwconv_act_triton
    from effkernels.triton.separable_map import separable_map_triton

    with torch.library._scoped_library("effkernels", "IMPL") as lib:
        lib.impl("separable_map", separable_map_triton, "CPU", allow_override=True)
        lib.impl("dwconv_act", dwconv_act_triton, "CPU", allow_override=True)
        lib.impl("dwconv_act_backward", dwconv_act_backward_triton, "CPU", allow_override=True)
        yield


@pytest.fixture
def triton_device(monkeypatch):
    """The device on which the ops run their Triton kernels: the GPU, or the CPU under the interpreter."""
    if HAS_CUDA:
        monkeypatch.setenv("EFFKERNELS_BACKEND", "triton")
        yield "cuda"
    else:
        with triton_kernel_on_cpu():
            yield "cpu"


@pytest.fixture(params=["cpu", "triton", "cuda"])
def backend(request, monkeypatch):
    """(device, name): the C++ CPU kernel, the Triton kernel, the CUDA C++ kernel."""
    name = request.param
    if name == "cpu":
        yield "cpu"
    elif name == "triton" and not HAS_CUDA:
        with triton_kernel_on_cpu():
            yield "cpu"
    else:
        if not HAS_CUDA:
            pytest.skip("the CUDA C++ kernels run on a GPU only")
        if name == "cuda" and not HAS_CUDA_CPP:
            pytest.skip("effkernels was built without its CUDA C++ kernels")
        monkeypatch.setenv("EFFKERNELS_BACKEND", name)
        yield "cuda"


PERF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "perf")


@pytest.fixture
def sm90():
    """perf/sm90.py, which compiles Triton kernels for Hopper (sm_90) in processes without the
    interpreter, so no GPU is needed (perf/ goes on sys.path, for the tuners too); the test is
    skipped where this Triton ships no ptxas."""
    if PERF not in sys.path:
        sys.path.insert(0, PERF)
    import sm90 as compiler

    if not compiler.has_ptxas():
        pytest.skip("this triton has no bundled ptxas")
    return compiler


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 3e-3,
    torch.bfloat16: 1e-2,
}


class PythonGraphs:
    """effkernels.train_step.CudaGraphs' contract without a GPU: `capture` records a step and runs none
    of it, as a CUDA graph capture does; a replay runs the recorded step, which reads its static
    inputs, so the bookkeeping around graphs (warm-ups, inputs, learning rate) is checked on the CPU."""

    def __init__(self):
        self.captures = 0
        self.eager_steps = 0

    def side_stream(self):
        return contextlib.nullcontext()

    def run(self, step):
        self.eager_steps += 1
        return step()

    def capture(self, step):
        self.captures += 1
        return step
