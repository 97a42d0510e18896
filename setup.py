"""Build effkernels._C: C++ CPU kernels always; CUDA C++ kernels with a GPU (or EFFKERNELS_CUDA=1),
a CUDA toolkit and a CUDA build of torch.

Environment switches:
  EFFKERNELS_CUDA=0/1        never / always build the CUDA C++ kernels (default: when a GPU is visible
                             and a toolkit and a CUDA torch exist; a machine with no GPU cannot run them)
  TORCH_CUDA_ARCH_LIST       GPU targets; defaults to "8.0;9.0" when no GPU is visible
  EFFKERNELS_PTXAS_VERBOSE=1 print ptxas register/spill reports while compiling
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup


def find_cuda_home():
    """The toolkit root: CUDA_HOME/CUDA_PATH, then the default install, then nvcc's real location.

    The `nvcc` on PATH may be a launcher script outside the toolkit, which makes torch's own
    guess (dirname of nvcc) point at a folder without libcudart, so the default location wins.
    """
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for root in filter(None, candidates):
        if os.path.exists(os.path.join(root, "bin", "nvcc")) and glob.glob(
            os.path.join(root, "lib*", "libcudart.so*")
        ) + glob.glob(os.path.join(root, "targets", "*", "lib", "libcudart.so*")):
            return root
    return None


def pip_cuda_include_dirs():
    """Header folders of the nvidia-* pip packages (cublas, cusparse, ...) that torch's headers need."""
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # read by torch.utils.cpp_extension at import time

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def want_cuda():
    flag = os.environ.get("EFFKERNELS_CUDA")
    if flag not in (None, "", "0", "1"):
        raise RuntimeError(f"EFFKERNELS_CUDA must be 0 or 1, got {flag!r}")
    possible = CUDA_HOME is not None and torch.version.cuda is not None
    if flag == "0":
        return False
    if flag == "1" and not possible:
        raise RuntimeError(
            "EFFKERNELS_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME) "
            f"or torch {torch.__version__} is not a CUDA build"
        )
    # Without a GPU the CUDA C++ kernels cannot run: compiling them only costs minutes.
    return possible and (flag == "1" or torch.cuda.is_available())


class IncrementalBuildExtension(BuildExtension):
    """torch's ninja build in a persistent folder, so that an unchanged source is never recompiled.

    `pip install -e .` builds in a fresh temporary folder each time, which recompiles everything;
    ninja in build/<python>-<torch>/ recompiles only what changed (or whose command changed).
    """

    def finalize_options(self):
        super().finalize_options()
        tag = f"{sys.implementation.cache_tag}-torch{torch.__version__}"
        self.build_temp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build", tag)


def extension():
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # at::parallel_for runs serially unless the extension itself is compiled with OpenMP.
    cxx_flags = ["-O3", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if not want_cuda():
        return CppExtension(
            "effkernels._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags
        )
    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo"]
    if os.environ.get("EFFKERNELS_PTXAS_VERBOSE") == "1":
        nvcc_flags.append("-Xptxas=-v")
    return CUDAExtension(
        "effkernels._C",
        sources + sorted(glob.glob("csrc/cuda/*.cu")),
        include_dirs=pip_cuda_include_dirs(),
        define_macros=[("EFFKERNELS_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags,
    )


setup(
    name="effkernels",
    version="0.1.0",
    description="Fused Triton/CUDA/C++ kernels for curriculum training of vision backbones",
    packages=find_packages(include=["effkernels", "effkernels.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "torchvision", "timm>=1.0.20", "tqdm", "matplotlib"],
    # The pipeline's decoder="nvimgcodec": nvImageCodec and the nvJPEG library it loads.
    extras_require={"nvimgcodec": ["nvidia-nvimgcodec-cu13[nvjpeg]>=0.9"]},
    ext_modules=[extension()],
    entry_points={"console_scripts": ["effkernels-train = effkernels.train:main"]},
    cmdclass={"build_ext": IncrementalBuildExtension.with_options(use_ninja=True)},
)
