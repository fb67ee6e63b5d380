#!/usr/bin/env bash
# From nothing to a full test run: environment + build (scripts/setup_env.sh),
# then the whole test suite, which includes the nvcc-alone compile check of the
# CUDA kernels. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
python -m pytest -q -p no:cacheprovider "$@"
