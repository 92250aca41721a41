#!/usr/bin/env bash
# The README's main job on a fresh CPU machine: set up, then restore the bundled example face
# with the full-size (official) DAEFR network and seeded RANDOM weights. Pass --ckpt PATH
# (the official DAEFR_model.ckpt) instead of relying on the default for real results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- --random-weights
fi
.venv/bin/daefr-restore daefr/assets/astronaut.png -o out/ "$@"
echo "restored image: out/astronaut.png"
