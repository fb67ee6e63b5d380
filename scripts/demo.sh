#!/usr/bin/env bash
# From nothing to the main job: environment + build (scripts/setup_env.sh), then
# the example that quantizes a random layer and compares it with fp32.
# Extra arguments go to the example.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/setup_env.sh"
python "$root/examples/quantize_random_layer.py" "$@"
