#!/usr/bin/env bash
# GPU verification in one run, for a lent GPU machine (torch with CUDA, nvcc,
# pybind11, scikit-build-core, cmake, ninja, transformers, safetensors and
# pytest installed; no network). Budget: about 10 minutes on an H100/H200.
#   1. builds the extension with TACQ_CUDA=ON (build/gpu, used via PYTHONPATH)
#   2. runs the CUDA tests, then compute-sanitizer memcheck over the CUDA op tests
#   3. runs the kernel benchmarks on the GPU (bench/run.py --device cuda)
#   4. quantizes the demo model on the GPU and checks that the checkpoint's
#      logits on CUDA match its logits on the CPU (scripts/gpu_demo_check.py)
# Every log, versions.txt, summary.txt and the bench/results/cuda-* files go to
# OUT_DIR (default: $OUT if set, else gpu_check_out). Each step's exit status is
# in summary.txt; the script exits 1 if any step failed.
#
# Dry run, on any machine: TACQ_GPU_CHECK_DRY_RUN=1 bash scripts/gpu_check.sh DIR
# checks every step's inputs (files, collected tests, the bench and demo
# scripts on the CPU) without building for or running on a GPU. CI runs it.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-${OUT:-gpu_check_out}}" && cd "${1:-${OUT:-gpu_check_out}}" && pwd)"
dry="${TACQ_GPU_CHECK_DRY_RUN:-0}"
python_bin="${PYTHON:-python}"
mkdir -p "$out/logs"
: > "$out/summary.txt"
failed=0
cd "$root"

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in logs/NAME.log
step() {
  local name="$1" limit="$2"
  shift 2
  echo "[gpu_check] $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/logs/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$out/summary.txt"
  [ "$rc" -eq 0 ] || failed=1
}

cuda_tests=(tests/test_cuda_inference.py tests/test_cuda_quantization.py)

step versions 60 bash -c "date -u; git rev-parse HEAD; nvidia-smi || true; nvcc --version || true; \
  $python_bin -c 'import torch, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
  \"gpu\", torch.cuda.get_device_name() if torch.cuda.is_available() else None, \"transformers\", transformers.__version__)'"
cp "$out/logs/versions.log" "$out/versions.txt"

if [ "$dry" = 1 ]; then  # the installed tacq_ext (scripts/setup_env.sh) stands in for the GPU build
  step build 120 bash -c "test -f CMakeLists.txt && cmake --version && bash -n scripts/dev_build.sh"
  step cuda_tests 300 "$python_bin" -m pytest -q -p no:cacheprovider --collect-only "${cuda_tests[@]}" tests -k cuda
  step memcheck 60 bash -c "command -v compute-sanitizer || echo 'compute-sanitizer: not on this machine (dry run)'"
  step bench 300 bash -c "$python_bin bench/run.py --help > /dev/null && \
    $python_bin bench/run.py --device cpu --quick --only cpu_gemv --name gpu-check-dry-run && \
    rm -f bench/results/gpu-check-dry-run.*"
  step demo 300 "$python_bin" scripts/gpu_demo_check.py "$out/demo" --dry-run
else
  export TACQ_CUDA=ON JOBS="${JOBS:-16}"
  step build 420 bash scripts/dev_build.sh "$root/build/gpu"
  export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
  step cuda_tests 300 "$python_bin" -m pytest -q -p no:cacheprovider -x "${cuda_tests[@]}"
  step cuda_device_tests 300 "$python_bin" -m pytest -q -p no:cacheprovider tests -k cuda \
    --deselect tests/test_cuda_inference.py --deselect tests/test_cuda_quantization.py
  step memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$python_bin" -m pytest -q -p no:cacheprovider -x tests/test_cuda_inference.py -k "not slow"
  step bench 420 "$python_bin" bench/run.py --device cuda --name cuda-kernels
  cp bench/results/cuda-kernels.* "$out/" 2>/dev/null || true
  step demo 300 "$python_bin" scripts/gpu_demo_check.py "$out/demo"
fi

echo "[gpu_check] results in $out"
cat "$out/summary.txt"
exit "$failed"
