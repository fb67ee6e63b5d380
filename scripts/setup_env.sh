#!/usr/bin/env bash
# Creates (or reuses) a virtual environment, installs torch and the build and
# test requirements, and builds + installs tacq_ext into it. Sourced by
# scripts/test.sh and scripts/demo.sh; safe to re-run (the build is incremental).
#   TACQ_VENV      where the environment lives        (default: .venv)
#   TORCH_VERSION  the torch release to install       (default: 2.13.0)
#   TORCH_SPEC     full pip spec, overrides the above (e.g. "torch==2.11.0")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TACQ_VENV:-$root/.venv}"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[tacq] creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
pip install -q --upgrade pip >/dev/null
pip install -q "${TORCH_SPEC:-torch==${TORCH_VERSION:-2.13.0}}"
pip install -q scikit-build-core pybind11 cmake ninja numpy
echo "[tacq] building tacq_ext (torch $(python -c 'import torch; print(torch.__version__)'))"
pip install -q --no-build-isolation "$root[test]"
python -c "import tacq_ext; print('[tacq] built:', tacq_ext.build_info())"
