#!/usr/bin/env bash
# From nothing to a full test run: environment + build (scripts/setup_env.sh),
# then the whole test suite (which includes the nvcc-alone compile check of the
# CUDA kernels), the dry run of scripts/gpu_check.sh, and the tests that use
# transformers once more against the oldest supported transformers
# (requirements/oldest-transformers.txt, installed beside the environment;
# TACQ_TEST_OLDEST=0 skips that pass). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/setup_env.sh"
cd "$root"
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
