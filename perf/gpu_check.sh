#!/usr/bin/env bash
# The GPU check: build the extension here, run the test suite's GPU cases on CUDA (every GPU
# backend: Triton, CUDA C++), run the benchmarks, and leave logs and results in one folder.
# Usage: bash perf/gpu_check.sh [results-folder]   (default perf/results/<device>-<date>)
#
# A task lent a GPU has 15 device-minutes, a cold start (1-2 min) included, and 10 minutes per
# command, so the phases come in calls that each fit one command:
#   call 1 (the default, ~7-9 min): PHASES="build tests lowfreq local_ffn"
#   call 2 on the still-warm machine (~5-7 min): PHASES="pipeline train"
#   a later session: PHASES="profile counters", PHASES="breakdown tune", PHASES="timm e2e" (e2e alone ~9 min)
# Without "build" the extension must already be importable (a _C library built by an earlier call
# on the same warm machine). `make gpu-extension` here and `carry: ["gpu-extension"]` there spare
# the build's device time (see perf/prebuilt_extension.py). ARCHIVE=FILE.tgz packs the results
# folder into one file after every phase: the device tool brings back at most 8 files, and a
# command stopped at its time limit keeps what the finished phases wrote.
#
# Every phase runs under its own time limit (seconds, overridable as BUILD_LIMIT, TEST_LIMIT,
# LOWFREQ_LIMIT, LOCAL_FFN_LIMIT, PROFILE_LIMIT, BREAKDOWN_LIMIT, ATTENTION_LIMIT, COUNTERS_LIMIT, TIMM_LIMIT, AUGMENT_LIMIT, PIPELINE_LIMIT,
# TRAIN_LIMIT, E2E_LIMIT, TUNE_LIMIT) and appends its outcome to summary.txt the moment it ends (ok,
# failed, or over its limit), so a slow phase never costs the results of the others. The summary
# carries pytest's failure lines and its slowest tests. TEST_SCOPE=device (the default) runs
# pytest --device-only: the cases that run only CPU kernels, which CI runs, are left out;
# TEST_SCOPE=all runs every case. PHASES="tune" sweeps the Triton kernels' launch shapes
# (perf/tune_*.py), which choose their defaults; PHASES="counters" reads Nsight Compute's hardware
# counters of the target kernels (perf/kernel_counters.py).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # effkernels from this checkout, installed or not
python=${PYTHON:-python}
out=${1:-perf/results/$($python -c "import torch, sys; sys.path.insert(0, 'perf'); import common; print(common.default_out_dir(torch.device('cuda')).split('/')[-1])")}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
status=0
phases=${PHASES:-build tests lowfreq local_ffn}
wanted() { [[ " $phases " == *" $1 "* ]]; }

# phase NAME LIMIT LOG COMMAND...: run COMMAND under LIMIT seconds with its output in LOG, then
# append "NAME: ok|failed (exit N)|over its LIMIT s limit, in S s" to the summary.
phase() {
  local name=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS rc verdict
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$log" 2>&1
  rc=$?
  case $rc in
    0) verdict="ok" ;;
    124 | 137) verdict="OVER ITS ${limit} s LIMIT (stopped)"; status=1 ;;
    *) verdict="failed (exit $rc)"; status=1 ;;
  esac
  echo "== $name: $verdict, in $((SECONDS - start)) s (log: $(basename "$log"))" | tee -a "$summary"
  pack
  return $rc
}

# pack: the results so far into $ARCHIVE (when set), after every phase, so that a command stopped at
# the device's time limit still brings back what the phases before finished.
pack() {
  [ -n "${ARCHIVE:-}" ] && tar -czf "$ARCHIVE" -C "$(dirname "$out")" "$(basename "$out")"
  return 0
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
$python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())" | tee -a "$summary"

# Build for this GPU only: half the nvcc time of the default sm_80 + sm_90.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
# A library built for this image on a CPU machine (make gpu-extension, carried as gpu-extension/) takes
# the build's place when it matches this checkout, torch and GPU.
if wanted build && ! $python perf/prebuilt_extension.py install gpu-extension 2>&1 | tee -a "$summary" \
    && ! phase build "${BUILD_LIMIT:-120}" "$out/build.log" $python -m pip install --no-build-isolation --no-deps -v -e .; then
  tail -40 "$out/build.log" | tee -a "$summary"
  pack
  exit 1
fi
$python -c "import torch, effkernels; print('CUDA C++ kernels built:', hasattr(torch.ops.effkernels, 'separable_map_cuda'))" | tee -a "$summary"
# Optional packages the GPU image lacks and cannot download (it has no package registry): wheels
# fetched here by `make gpu-wheels` into wheels/ and carried along (nvImageCodec for the pipeline's
# decoder="nvimgcodec").
if compgen -G "wheels/*.whl" > /dev/null; then
  $python -m pip install -q --no-deps --no-index wheels/*.whl 2>&1 | tail -3 | tee -a "$summary"
fi
$python -c "from effkernels import image_decode; image_decode.import_nvimgcodec(); print('nvImageCodec: installed')" \
  2>&1 | tail -1 | tee -a "$summary"

# Tests: in parallel processes when pytest-xdist is there (the GPU image has it).
workers=()
# Each process gets its share of the cores' threads: 8 processes of 16 threads each oversubscribe
# the cores (CPU-side tests took up to 33 s each on the H100 machine, 2026-11-23).
threads=$(nproc)
$python -c "import xdist" 2> /dev/null && workers=(-n 8) && threads=$(( $(nproc) / 8 > 0 ? $(nproc) / 8 : 1 ))
scope=()
[ "${TEST_SCOPE:-device}" = device ] && scope=(--device-only)
wanted tests && phase tests "${TEST_LIMIT:-200}" "$out/tests.log" env OMP_NUM_THREADS=$threads $python -m pytest -q -rfE --durations=10 "${scope[@]}" "${workers[@]}" python_tests
wanted tests && {
  grep -E "^(FAILED|ERROR) " "$out/tests.log"
  grep -E "(passed|failed|error).* in [0-9.]+s" "$out/tests.log" | tail -1
  sed -n '/slowest .*durations/,/^$/p' "$out/tests.log" | head -12
  grep -E "Fatal Python error|Segmentation fault" -A 12 "$out/tests.log" | head -30
} | tee -a "$summary"

if wanted lowfreq; then
  phase "benchmark lowfreq_crop" "${LOWFREQ_LIMIT:-120}" "$out/bench_lowfreq_crop.log" \
    $python perf/bench_lowfreq_crop.py --sweep full --out "$out"
  tail -25 "$out/bench_lowfreq_crop.log" >> "$summary"
fi
if wanted local_ffn; then  # the DeiT-S cases of GPU-FACTS.md; --sweep full compiles 45 variants
  phase "benchmark local_ffn" "${LOCAL_FFN_LIMIT:-200}" "$out/bench_local_ffn.log" \
    $python perf/bench_local_ffn.py --sweep deit_small --out "$out"
  grep -v "^[WI][0-9]" "$out/bench_local_ffn.log" | tail -25 >> "$summary"
fi
if wanted profile; then  # the heaviest kernels of the LocalFFN block and lowfreq_crop at the issues' shapes
  phase "kernel profile" "${PROFILE_LIMIT:-90}" "$out/profile_kernels.log" $python perf/profile_kernels.py --out "$out"
  grep -E "^[a-z_]+ .*: .* ms" "$out/profile_kernels.log" >> "$summary"
fi
if wanted breakdown; then  # a training step's device time by kernel kind across sizes, then SDPA's backends (issue 15)
  phase "step breakdown" "${BREAKDOWN_LIMIT:-300}" "$out/step_breakdown.log" $python perf/step_breakdown.py --out "$out"
  grep -E "all kernels|whole-step graph|graph - kernels" "$out/step_breakdown.log" >> "$summary"
  phase "benchmark attention" "${ATTENTION_LIMIT:-120}" "$out/bench_attention.log" $python perf/bench_attention.py --sweep deit_small --out "$out"
  grep -E "^\| deit" "$out/bench_attention.log" >> "$summary"
fi
if wanted counters; then  # Nsight Compute's counters of the same kernels: why each takes its time
  phase "kernel counters" "${COUNTERS_LIMIT:-240}" "$out/kernel_counters.log" $python perf/kernel_counters.py ncu --out "$out"
  grep -E "^\| [a-z]" "$out/kernel_counters.log" | cut -c1-220 >> "$summary"
fi
if wanted tune; then  # launch-shape sweeps that choose the kernels' defaults (not in the default phases)
  phase "tune dwconv_act" "${TUNE_LIMIT:-300}" "$out/tune_dwconv_act.log" $python perf/tune_dwconv_act.py --out "$out"
  grep -E "^(forward|backward) " "$out/tune_dwconv_act.log" >> "$summary"
  phase "tune separable_map" "${TUNE_LIMIT:-300}" "$out/tune_separable_map.txt" $python perf/tune_separable_map.py
  grep -E "^band " "$out/tune_separable_map.txt" >> "$summary"
fi
if wanted timm; then
  phase "benchmark timm fuse" "${TIMM_LIMIT:-80}" "$out/bench_timm_fuse.log" \
    $python perf/bench_timm_fuse.py --sweep small --out "$out"
  tail -12 "$out/bench_timm_fuse.log" >> "$summary"
fi
if wanted pipeline; then  # RandAugment's kernels vs its torch stages; then the issue's setting: 4 CPU cores
  phase "benchmark rand_augment" "${AUGMENT_LIMIT:-60}" "$out/bench_augment.log" \
    $python perf/bench_augment.py --sweep full --out "$out"
  tail -8 "$out/bench_augment.log" >> "$summary"
  phase "benchmark input pipeline" "${PIPELINE_LIMIT:-120}" "$out/bench_pipeline.log" \
    $python perf/bench_pipeline.py --cores 4 --out "$out"
  tail -12 "$out/bench_pipeline.log" >> "$summary"
fi
if wanted train; then
  phase "train step vs FLOPs" "${TRAIN_LIMIT:-240}" "$out/train_step.log" \
    $python perf/train_step.py --sweep full --compile --out "$out"
  tail -20 "$out/train_step.log" >> "$summary"
fi
# E2E_SETTINGS: bench_train.py's settings, ';'-separated (e.g. "gpu path;gpu path, input on the step's thread").
IFS=';' read -r -a e2e_settings <<< "${E2E_SETTINGS:-gpu path, replay;gpu path;cpu path, eager}"
if wanted e2e; then  # whole EfficientTrain++ runs: several compilations per run
  phase "end-to-end training" "${E2E_LIMIT:-550}" "$out/bench_train.log" \
    $python perf/bench_train.py --settings "${e2e_settings[@]}" --out "$out"
  tail -10 "$out/bench_train.log" >> "$summary"
fi
echo "== done: $([ $status = 0 ] && echo 'every phase ok' || echo 'some phase failed or ran over, see above')" | tee -a "$summary"
pack && [ -n "${ARCHIVE:-}" ] && echo "results packed into $ARCHIVE"
exit $status
