#!/usr/bin/env bash
# The test command of the README (and of CI): set up if needed, then run the CPU test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report's HTML is checked in Debian's headless Chromium; install it where we can.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/daefr-chromium.log 2>&1 \
    || echo "chromium could not be installed (see /tmp/daefr-chromium.log); its test will skip"
fi
export TRITON_INTERPRET=1  # Triton kernels run on the CPU through the interpreter
exec .venv/bin/python -m pytest -q "$@"
