#!/usr/bin/env bash
# The test command of the README (and of CI): set up if needed, then run the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TRITON_INTERPRET=1  # Triton kernels run on the CPU through the interpreter
exec .venv/bin/python -m pytest -q "$@"
