#!/usr/bin/env bash
# Incremental developer build: configures build/dev once, rebuilds what changed,
# and copies tacq_ext/_C*.so next to the Python sources, so that
#   PYTHONPATH=python python -c "import tacq_ext"
# uses the fresh build without reinstalling. Usage: scripts/dev_build.sh [build-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build/dev}"
python="${PYTHON:-python}"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DPython_EXECUTABLE="$(command -v "$python")" -DTACQ_CUDA="${TACQ_CUDA:-AUTO}" >/dev/null
fi
cmake --build "$build" -j "${JOBS:-2}"
# Replaced by rename, never overwritten in place: a process that has the old
# module loaded (a test run) keeps its mapping intact.
for so in "$build"/_C*.so; do
  cp "$so" "$root/python/tacq_ext/.$(basename "$so").tmp"
  mv -f "$root/python/tacq_ext/.$(basename "$so").tmp" "$root/python/tacq_ext/$(basename "$so")"
done
