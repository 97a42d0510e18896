"""Shared fixtures: the backends every op test runs on, and NaN-poisoned fresh memory.

Without a GPU the Triton kernels run on CPU tensors under TRITON_INTERPRET=1, which must be set
before triton is first imported, hence here at the top; the CUDA C++ kernels run on CPU tensors
through their emulated build (python_tests/cuda_emulation) in the tests marked `cuda_emulated`.
torch.compile gets a fresh cache folder per session: Inductor's graph cache does not key on the
effkernels ops' code, so a graph compiled by another checkout (or before an op's fake kernel
changed) would otherwise be reused.
"""
import contextlib
import functools
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
    """Mark the tests that use the sm90 fixture (`.ci/check_gpu_image -m sm90 python_tests` runs just
    those under the GPU image's Triton); with --device-only, leave out the CPU-only cases."""
    for item in items:
        if "sm90" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sm90)
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


CUDA_EMULATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emulation")


@functools.cache
def cuda_emulated_kernels():
    """The CUDA C++ kernels built for the CPU by the emulator (compiled once, ~40 s; the build is
    kept in build/cuda-emulation and redone only when a source or header changed)."""
    from torch.utils import cpp_extension

    build = os.path.join(CUDA_EMULATION, "..", "..", "build", "cuda-emulation")
    os.makedirs(build, exist_ok=True)
    return cpp_extension.load(
        "effkernels_cuda_emulated", [os.path.join(CUDA_EMULATION, "emulated_kernels.cpp")],
        extra_cflags=["-O1", "-pthread"], extra_ldflags=["-pthread"], build_directory=build,
    )


@contextlib.contextmanager
def cuda_kernel_on_cpu():
    """Route CPU calls of dwconv_act, its backward and separable_map to the CUDA C++ kernels, emulated on
    the CPU, as EFFKERNELS_BACKEND=cuda routes CUDA calls (a rank-one term becomes a dense K-term)."""
    kernels = cuda_emulated_kernels()

    def separable_map(x, rows, cols, scale=None, shift=None, out_dtype=None, row_u=None, row_v=None, col_u=None,
                      col_v=None):
        if row_u is not None:
            rows = effkernels.ops._with_dense_term(rows, row_u, row_v)
            cols = effkernels.ops._with_dense_term(cols, col_u, col_v)
        return kernels.separable_map(x, rows, cols, scale, shift, out_dtype)

    def forward(h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None, act="hardswish"):
        return kernels.dwconv_act(h, list(grid_size), weight, bias, num_prefix_tokens, prefix, pre_act, act)

    def backward(grad, h, grid_size, weight, bias=None, *, num_prefix_tokens=0, prefix="mlp", pre_act=None,
                 act="hardswish"):
        return kernels.dwconv_act_backward(grad, h, list(grid_size), weight, bias, num_prefix_tokens, prefix,
                                           pre_act, act)

    with torch.library._scoped_library("effkernels", "IMPL") as lib:
        lib.impl("dwconv_act", forward, "CPU", allow_override=True)
        lib.impl("dwconv_act_backward", backward, "CPU", allow_override=True)
        lib.impl("separable_map", separable_map, "CPU", allow_override=True)
        yield


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cuda_emulated: without a GPU, the backend fixture's 'cuda' runs the emulated CUDA C++ kernels"
    )
    config.addinivalue_line(
        "markers", "sm90: compiles kernels for Hopper without a GPU (the sm90 fixture); `-m sm90` selects them"
    )


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
    """The device of the C++ CPU kernel, the Triton kernel, the CUDA C++ kernel. Without a GPU the
    Triton kernel runs under the interpreter, and the CUDA C++ one emulated where the test or its
    module is marked cuda_emulated (else the case is skipped)."""
    name = request.param
    if name == "cpu":
        yield "cpu"
    elif name == "triton" and not HAS_CUDA:
        with triton_kernel_on_cpu():
            yield "cpu"
    elif name == "cuda" and not HAS_CUDA and request.node.get_closest_marker("cuda_emulated"):
        with cuda_kernel_on_cpu():
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
