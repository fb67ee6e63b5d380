#!/usr/bin/env bash
# From nothing to the main job: environment + build (scripts/setup_env.sh), then
# `tacq demo`: quantize the shipped demo Llama with TACQ and the baselines and
# print the accuracy table (writes results.json and a plot to --out, default demo_out/).
# Extra arguments go to `tacq demo` (e.g. --full, --limit 20, --bits 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/setup_env.sh"
tacq demo "$@"
