#!/usr/bin/env bash
# Compiles and links the whole extension WITH its CUDA kernels and glue on a
# machine without a GPU, against a CUDA build of torch in another venv (nothing
# runs). Catches glue errors that the nvcc-alone check (tests/test_cuda_compile.py)
# cannot see. Usage: scripts/check_cuda_build.sh /path/to/cuda-torch-venv [build-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 /path/to/a-venv-with-a-CUDA-build-of-torch [build-dir]" >&2
  exit 2
fi
venv="$1"
build="${2:-$root/build/cuda-check}"
cuda_root="$(readlink -f "${CUDA_HOME:-/usr/local/cuda}")"
nvrtc="$(ls "$venv"/lib/python3*/site-packages/nvidia/cu*/lib/libnvrtc.so* 2>/dev/null | head -1 || true)"
PATH="$venv/bin:$PATH" cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$venv/bin/python" -DTACQ_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" -DCUDA_TOOLKIT_ROOT_DIR="$cuda_root" \
  -DCUDAToolkit_ROOT="$cuda_root" ${nvrtc:+-DCUDA_nvrtc_LIBRARY="$nvrtc"} >/dev/null
PATH="$venv/bin:$PATH" cmake --build "$build" -j "${JOBS:-2}"
echo "CUDA build OK: $(ls "$build"/_C*.so)"
