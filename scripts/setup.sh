#!/usr/bin/env bash
# Idempotent setup of .venv on a CPU machine: torch pinned to the local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.daefr-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-cpu.txt -nt "$stamp" ]; then
  echo "setting up .venv (log: .venv/install.log)..."
  if ! .venv/bin/python -m pip install -q -c constraints-cpu.txt -e ".[dev]" >.venv/install.log 2>&1; then
    tail -n 40 .venv/install.log
    echo "setup failed; the full log is .venv/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
# daefr-serve runs in its own .venv-serve: PyTriton 0.7.0 pins numpy<2 (and answers with empty
# outputs under numpy 2), while .venv has numpy 2 for opencv-python 5. Tests start the server
# from .venv-serve and talk to it from .venv with tritonclient (numpy 2 is fine on that side).
if [ ! -x .venv-serve/bin/python ]; then
  python3 -m venv .venv-serve
fi
serve_stamp=.venv-serve/.daefr-installed
if [ ! -f "$serve_stamp" ] || [ pyproject.toml -nt "$serve_stamp" ] || [ constraints-cpu.txt -nt "$serve_stamp" ]; then
  echo "setting up .venv-serve (log: .venv-serve/install.log)..."
  if ! .venv-serve/bin/python -m pip install -q -c constraints-cpu.txt -e ".[serve]" >.venv-serve/install.log 2>&1; then
    tail -n 40 .venv-serve/install.log
    echo "setup of .venv-serve failed; the full log is .venv-serve/install.log" >&2
    exit 1
  fi
  touch "$serve_stamp"
fi
