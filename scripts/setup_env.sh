#!/usr/bin/env bash
# Creates (or reuses) a virtual environment, installs torch and the build and
# test requirements, and builds + installs tacq_ext into it. Sourced by
# scripts/test.sh and scripts/demo.sh; safe to re-run (the build is incremental).
#   TACQ_VENV   where the environment lives                 (default: .venv)
#   TACQ_DEPS   pinned: torch 2.13.0 and the tested set in
#                       requirements/constraints.txt (default)
#               latest: the newest releases the package index serves, torch's too
#   TORCH_SPEC  the pip requirement for torch  (default: torch==2.13.0 pinned, torch latest)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TACQ_VENV:-$root/.venv}"
python_bin="${PYTHON:-python3}"
case "${TACQ_DEPS:-pinned}" in
  pinned) deps=(-c "$root/requirements/constraints.txt") default_torch=torch==2.13.0 ;;
  latest) deps=(--upgrade --upgrade-strategy eager) default_torch=torch ;;
  *) echo "TACQ_DEPS must be 'pinned' or 'latest', got '${TACQ_DEPS}'" >&2; exit 2 ;;
esac
torch_spec="${TORCH_SPEC:-$default_torch}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[tacq] creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
pip install -q --upgrade pip >/dev/null
# torch and the build requirements first: the build below runs without isolation
pip install -q "${deps[@]}" "$torch_spec" scikit-build-core pybind11 cmake ninja numpy
echo "[tacq] building tacq_ext (torch $(python -c 'import torch; print(torch.__version__)'), ${TACQ_DEPS:-pinned} dependencies)"
pip install -q "${deps[@]}" --no-build-isolation "$torch_spec" "$root[test,plot]"
python -c "import tacq_ext, transformers; print('[tacq] built:', tacq_ext.build_info(), '| transformers', transformers.__version__)"
