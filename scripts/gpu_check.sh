#!/usr/bin/env bash
# GPU verification in one run, for a lent GPU machine (torch with CUDA, nvcc,
# pybind11, scikit-build-core, cmake, ninja, transformers, safetensors and
# pytest installed; no network), in the order that puts the most at stake first:
#   1. builds the extension with TACQ_CUDA=ON for this GPU's architecture only
#      (build/gpu, used via PYTHONPATH)
#   2. runs the CUDA tests
#   3. runs the kernel benchmarks on the GPU (bench/run.py --device cuda)
#   4. quantizes the demo model on the GPU and checks that the checkpoint's
#      logits on CUDA match its logits on the CPU, and that generate() compiled
#      by transformers (CUDA graphs) decodes as eager (scripts/gpu_demo_check.py)
#   5. builds the C library with CUDA and runs its ctest, tacq_mixed_gemv_cuda included
#   6. compute-sanitizer memcheck over the CUDA op tests (opcheck left out: it
#      compiles, slowly, and launches the same kernels), with what time is left
# The whole run keeps within TACQ_GPU_CHECK_BUDGET_S seconds (default 540, so
# that it fits a 10-minute call): each step's timeout is cut to what is left, and
# a step with under 15 s left is skipped (summary.txt says so; it counts as failed).
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
deadline=$((SECONDS + ${TACQ_GPU_CHECK_BUDGET_S:-540}))
cd "$root"

# step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in logs/NAME.log
step() {
  local name="$1" limit="$2" left=$((deadline - SECONDS))
  shift 2
  if [ "$left" -lt 15 ]; then
    echo "$name skipped: ${left} s of the run's budget left" | tee -a "$out/summary.txt"
    failed=1
    return
  fi
  [ "$limit" -le "$left" ] || limit="$left"
  echo "[gpu_check] $name (timeout ${limit} s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/logs/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$out/summary.txt"
  [ "$rc" -eq 0 ] || failed=1
}

# The CUDA tests are the `cuda` cases of the tests (their ids hold "cuda":
# tests/conftest.py) plus the nvcc-alone compile check; compute-sanitizer runs
# the op tests' CUDA cases but opcheck.
memcheck_tests=(tests/test_pack.py tests/test_dequantize.py tests/test_mixed_gemv.py tests/test_mixed_gemv_stored.py
                tests/test_mixed_gemv_int8.py tests/test_quantize.py tests/test_saliency.py tests/test_error_messages.py)
memcheck_filter="cuda and not opcheck"

step versions 60 bash -c "date -u; git rev-parse HEAD; nvidia-smi || true; nvcc --version || true; \
  $python_bin -c 'import torch, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
  \"gpu\", torch.cuda.get_device_name() if torch.cuda.is_available() else None, \"transformers\", transformers.__version__)'"
cp "$out/logs/versions.log" "$out/versions.txt" 2>/dev/null

if [ "$dry" = 1 ]; then  # the installed tacq_ext (scripts/setup_env.sh) stands in for the GPU build
  step build 120 bash -c "test -f CMakeLists.txt && cmake --version && bash -n scripts/dev_build.sh"
  step cuda_tests 300 bash -c "$python_bin -m pytest -q -p no:cacheprovider --collect-only tests -k cuda"
  step bench 300 bash -c "$python_bin bench/run.py --help > /dev/null && \
    $python_bin bench/run.py --device cpu --quick --only cpu_gemv --name gpu-check-dry-run && \
    rm -f bench/results/gpu-check-dry-run.*"
  step demo 300 "$python_bin" scripts/gpu_demo_check.py "$out/demo" --dry-run
  step c_library 120 bash -c "cmake -S . -B '$out/c-build' -G Ninja -DTACQ_TORCH=OFF -DTACQ_CUDA=OFF >/dev/null && \
    test -f tests/c/test_cuda.cpp"
  step memcheck 120 bash -c "(command -v compute-sanitizer || echo 'compute-sanitizer: not on this machine (dry run)') && \
    $python_bin -m pytest -q -p no:cacheprovider --collect-only ${memcheck_tests[*]} -k '$memcheck_filter'"
else
  # this GPU's architecture only (torch's flags read TORCH_CUDA_ARCH_LIST, ours CUDAARCHS): half the compile
  arch="$($python_bin -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo 9.0)"
  export TACQ_CUDA=ON JOBS="${JOBS:-16}" TORCH_CUDA_ARCH_LIST="$arch" CUDAARCHS="${arch/./}"
  step build 300 bash scripts/dev_build.sh "$root/build/gpu"
  export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
  step cuda_tests 240 "$python_bin" -m pytest -q -p no:cacheprovider tests -k cuda
  step bench 240 "$python_bin" bench/run.py --device cuda --name cuda-kernels  # written module by module
  cp bench/results/cuda-kernels.* "$out/" 2>/dev/null || true
  step demo 180 "$python_bin" scripts/gpu_demo_check.py "$out/demo"
  # the torch-free C library with its CUDA entry point, and its ctest (tests/c/test_cuda.cpp;
  # not the kernels' CPU emulations, which CI runs)
  step c_library 180 bash -c "cmake -S . -B build/gpu-c -G Ninja -DTACQ_TORCH=OFF -DTACQ_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=native >/dev/null && cmake --build build/gpu-c -j $JOBS && \
    cd build/gpu-c && ctest --output-on-failure -E cuda_emulation"
  step memcheck 600 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$python_bin" -m pytest -q -p no:cacheprovider -x "${memcheck_tests[@]}" -k "$memcheck_filter"
fi

echo "[gpu_check] results in $out"
cat "$out/summary.txt"
exit "$failed"
