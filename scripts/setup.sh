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
