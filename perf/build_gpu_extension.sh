#!/usr/bin/env bash
# Build effkernels._C here for the GPU image (its Python 3.12 and torch 2.11.0+cu130, CUDA C++ kernels
# for sm_90: H100 and H200) and save it in gpu-extension/ with its stamp (perf/prebuilt_extension.py).
# Carry gpu-extension to the GPU machine: perf/gpu_check.sh uses it instead of building there when
# it matches the checkout, torch and GPU.
# Usage: bash perf/build_gpu_extension.sh   (make gpu-extension)
# PYTHON312: the Python 3.12 to build with (default: python3.12 on PATH, else pyenv's);
# GPU_EXTENSION_VENV: its venv (default .venv-gpu-extension); GPU_ARCHS: the GPU targets (default 9.0).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(realpath -m "${GPU_EXTENSION_VENV:-.venv-gpu-extension}")
torch_pin=$(grep -E '^torch==' requirements-gpu-image.txt)
if [ ! -f "$venv/.requirements" ] || [ requirements-gpu-image.txt -nt "$venv/.requirements" ]; then
  python312=${PYTHON312:-}
  for candidate in python3.12 "$(pyenv root 2> /dev/null)"/versions/3.12*/bin/python3.12; do
    [ -z "$python312" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2> /dev/null \
      && python312=$candidate
  done
  [ -n "$python312" ] || { echo "no Python 3.12 here: set PYTHON312 to one" >&2; exit 1; }
  "$python312" -m venv "$venv"
  "$venv/bin/pip" install -q "$torch_pin" numpy setuptools wheel ninja
  touch "$venv/.requirements"
fi
"$venv/bin/python" -c "import sys, torch; print('Python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

# A copy of the tracked and untracked (not ignored) files, so that the main venv's library stays;
# unchanged files keep their times, so the build is incremental.
tree=build/gpu-extension/tree
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$tree"
archs=${GPU_ARCHS:-9.0}
(cd "$tree" && EFFKERNELS_CUDA=1 TORCH_CUDA_ARCH_LIST="$archs" "$venv/bin/python" setup.py -q build_ext --inplace)
built=$(ls "$tree"/effkernels/_C.cpython-3*.so)
# Without its host debug information (29.8 MiB -> 7.1 MiB): a call carries at most 64 MiB.
library=build/gpu-extension/$(basename "$built")
strip --strip-debug -o "$library" "$built"
# It loads against this torch and registers the CUDA C++ kernels (effkernels itself needs timm, which
# this venv leaves out).
"$venv/bin/python" -c "import sys, torch; torch.ops.load_library(sys.argv[1]); torch.ops.effkernels.separable_map_cuda" "$library"
"$venv/bin/python" perf/prebuilt_extension.py save gpu-extension "$library" "$archs"
