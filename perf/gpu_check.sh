#!/usr/bin/env bash
# The one-call GPU check: build the extension here, run the whole test suite on CUDA (every GPU
# backend: Triton, CUDA C++), run the benchmarks, and leave logs and results in one folder.
# Usage: bash perf/gpu_check.sh [results-folder]   (default perf/results/<device>-<date>)
# Each phase has a time limit (seconds: TEST_LIMIT, BENCH_LIMIT) so that one call stays under 10
# minutes and a slow phase still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=${1:-perf/results/$($python -c "import torch, sys; sys.path.insert(0, 'perf'); import common; print(common.default_out_dir(torch.device('cuda')).split('/')[-1])")}
mkdir -p "$out"
status=0
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
# Build for this GPU only: half the nvcc time of the default sm_80 + sm_90.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
echo "== build" | tee "$out/summary.txt"
if ! $python -m pip install --no-build-isolation --no-deps -v -e . > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  exit 1
fi
$python -c "import torch, effkernels; print('cuda kernels:', hasattr(torch.ops.effkernels, 'separable_map_cuda'))" | tee -a "$out/summary.txt"
echo "== tests" | tee -a "$out/summary.txt"
timeout "${TEST_LIMIT:-270}" $python -m pytest -q -rs python_tests > "$out/tests.log" 2>&1 || status=1
tail -3 "$out/tests.log" | tee -a "$out/summary.txt"
echo "== benchmarks" | tee -a "$out/summary.txt"
timeout "${BENCH_LIMIT:-200}" $python perf/run_all.py --sweep full --compile --out "$out" >> "$out/summary.txt" 2>&1 || status=1
EFFKERNELS_BACKEND=cuda $python perf/bench_lowfreq_crop.py --sweep small --out "$out/cuda-backend" >> "$out/summary.txt" 2>&1 || status=1
EFFKERNELS_BACKEND=cuda $python perf/bench_local_ffn.py --sweep small --out "$out/cuda-backend" >> "$out/summary.txt" 2>&1 || status=1
cat "$out/summary.txt"
exit $status
