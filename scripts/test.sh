#!/usr/bin/env bash
# From nothing to a full test run: environment + build (scripts/setup_env.sh),
# the C library's build, install, example and ctest (plain and under ASan +
# UBSan; with CUDA too where nvcc is installed), then the whole test suite
# (which includes the nvcc-alone compile check of the CUDA kernels), the dry
# run of scripts/gpu_check.sh, and the tests that use transformers once more
# against the oldest supported transformers
# (requirements/oldest-transformers.txt, installed beside the environment;
# TACQ_TEST_OLDEST=0 skips that pass). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"

# The torch-free C library (docs/c-api.md): built and installed without torch
# into $venv/tacq-c, examples/c built against the installed package, ctest,
# then the C tests again under ASan + UBSan. tests/test_c_library.py (in the
# pytest run below) compares the example's y with the torch op's.
c_prefix="$venv/tacq-c"
c_build="$root/build/c-lib"
cmake -S "$root" -B "$c_build" -G Ninja -DTACQ_TORCH=OFF -DTACQ_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$c_build" -j 2
cmake --install "$c_build" --prefix "$c_prefix" >/dev/null
cmake -S "$root/examples/c" -B "$c_build/example" -G Ninja -DCMAKE_PREFIX_PATH="$c_prefix" >/dev/null
cmake --build "$c_build/example"
(cd "$c_build" && ctest --output-on-failure)
cmake -S "$root" -B "$root/build/c-sanitize" -G Ninja -DTACQ_TORCH=OFF -DTACQ_CUDA=OFF \
      -DTACQ_BUILD_SHARED=OFF -DTACQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build/c-sanitize" -j 2
(cd "$root/build/c-sanitize" && \
  ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --output-on-failure)
export TACQ_C_EXAMPLE="$c_build/example/tacq_example"

# The C library with CUDA where nvcc is installed (CI's machine has it): built for
# one architecture with unoptimized device code (the optimized build and the
# kernel's run on a GPU are scripts/gpu_check.sh's), linked with the CUDA runtime,
# and its two CUDA ctests run: cuda_arguments checks tacq_mixed_gemv_cuda's
# statuses without a GPU, cuda skips where no GPU is visible. About a minute.
nvcc_bin="$(command -v nvcc || true)"
[ -n "$nvcc_bin" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || nvcc_bin=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc_bin" ]; then
  c_cuda="$root/build/c-cuda"
  cmake -S "$root" -B "$c_cuda" -G Ninja -DTACQ_TORCH=OFF -DTACQ_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS="-Xcicc -O0 -Xptxas -O0" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$c_cuda" -j 2 --target tacq_test_cuda tacq_test_cuda_arguments
  (cd "$c_cuda" && ctest --output-on-failure -R '^cuda(_arguments)?$')
else
  echo "[tacq] nvcc not found: the C library's CUDA build and its cuda ctests are skipped"
fi

python -m pytest -q -p no:cacheprovider "$@"
TACQ_GPU_CHECK_DRY_RUN=1 bash scripts/gpu_check.sh "$venv/gpu-check-dry-run"

if [ "${TACQ_TEST_OLDEST:-1}" = 1 ]; then
  oldest="$venv/oldest-transformers"
  if [ ! -d "$oldest" ]; then
    # every other package at its pinned version, so only the listed ones differ
    grep -v -i -E '^(transformers|tokenizers|huggingface[-_]hub|requests)==' requirements/constraints.txt \
      > "$venv/constraints-without-hf.txt"
    pip install -q --target "$oldest" -c "$venv/constraints-without-hf.txt" -r requirements/oldest-transformers.txt
  fi
  echo "[tacq] the tests that use transformers, on transformers" \
       "$(PYTHONPATH="$oldest" python -c 'import transformers; print(transformers.__version__)')"
  PYTHONPATH="$oldest" python -m pytest -q -p no:cacheprovider tests/test_method_*.py tests/test_demo_*.py
fi
