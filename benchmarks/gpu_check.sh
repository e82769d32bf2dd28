#!/usr/bin/env bash
# The GPU check from a fresh virtual environment: install the project (its pip install brings the
# CUDA build of torch), then benchmarks/gpu_check.py. Each stage has a time limit; the whole takes
# under 8 minutes on one GPU once the wheels are in pip's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
timeout 600 .venv-gpu/bin/pip install --quiet -e ".[dev]"
exec timeout 540 .venv-gpu/bin/python benchmarks/gpu_check.py "$@"
