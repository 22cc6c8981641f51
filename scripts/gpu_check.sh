#!/usr/bin/env bash
# The prepared GPU check: one call of at most 8 minutes on one CUDA GPU (an H200 when one is lent) that runs
#   1. the GPU-marked tests (`pytest -m gpu`: no host sync in a step, bf16/fp16 against fp32 on CUDA, bands CPU vs
#      GPU) and the device-placement tests,
#   2. `eqdiff train` + `eqdiff generate` on CUDA through the CLI, full-size SD v1.x (`sd-v1-random`) at 512 px,
#   3. `bench/bench.py --preset sd-v1-random --device cuda` (training A vs F, inference at batch 1 and 8 against
#      diffusers' StableDiffusionPipeline, peak memory),
# and leaves the BENCHMARKS.md section, the raw JSON and the logs in $OUT (default: gpu-check-out/).
#
#   bash scripts/gpu_check.sh --fetch-wheels   # here, with network: wheels the bare device machine lacks -> .whl/
#   bash scripts/gpu_check.sh                  # on the device machine (carry .whl); see BENCHMARKS.md
#   bash scripts/gpu_check.sh --dry-run        # CPU, tiny preset: every step in a minute or two (CI runs it)
#
# The device machine is offline with Python 3.12, torch, transformers and accelerate but no diffusers or
# open-clip-torch (its tokenizer vocabulary builds the CLIP tokenizer): those travel as wheels in .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# Pure-Python wheels the device machine lacks, at the versions pyproject.toml's stack resolves to here.
WHEELS=(diffusers==0.42.1 importlib-metadata==9.1.0 open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4)

mode=device
case "${1:-}" in
  "") ;;
  --dry-run) mode=dry ;;
  --fetch-wheels) mode=fetch ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "gpu_check.sh: unknown option ${1} (expected --dry-run, --fetch-wheels or nothing)" >&2; exit 2 ;;
esac

if [ "$mode" = fetch ]; then
  mkdir -p .whl
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  ls .whl
  echo "now run it on the device machine: run(command='bash scripts/gpu_check.sh', carry=['.whl'], timeout_s=540)"
  exit 0
fi

if [ "$mode" = dry ]; then
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  OUT="${OUT:-$(mktemp -d)}"
  DEVICE=cpu PRESET=tiny RES=32 TRAIN_STEPS=2 GEN_STEPS=2 CLASS_IMAGES=2 PRIOR_STEPS=2
  BENCH=(--preset tiny --device cpu --resolution 32 --train-steps 1 --warmup 0 --rounds 1 --inference-steps 2 --batches 1,2)
  PYTEST=(-m gpu --collect-only -q)  # the GPU tests need a GPU: here they must only collect
else
  PY="${PYTHON:-python3}"
  OUT="${OUT:-$ROOT/gpu-check-out}"
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  DEVICE=cuda PRESET=sd-v1-random RES=512 TRAIN_STEPS=20 GEN_STEPS=25 CLASS_IMAGES=2 PRIOR_STEPS=10
  BENCH=(--preset sd-v1-random --device cuda)
  PYTEST=(-m gpu -q -x -p no:cacheprovider)
fi
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export EQDIFF_CACHE="${EQDIFF_CACHE:-$OUT/cache}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$OUT/cache"' EXIT
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

step() {  # step NAME COMMAND...: run it, log it, time it; the check goes on past a failed step
  local name=$1; shift
  local start=$SECONDS status=0
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1 || status=$?
  tail -n 5 "$OUT/$name.log"
  printf '%-10s %-6s %4d s\n' "$name" "$([ $status -eq 0 ] && echo ok || echo FAIL:$status)" \
    $((SECONDS - start)) | tee -a "$SUMMARY"
}

step env "$PY" -c "import sys, torch, diffusers, transformers; print(sys.version.split()[0], 'torch', torch.__version__,
  'diffusers', diffusers.__version__, 'transformers', transformers.__version__,
  'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
step tests "$PY" -m pytest "${PYTEST[@]}" tests/pipelines/test_fast_paths.py tests/prep/test_bands.py tests/models/test_device_placement.py

printf '{} on the beach\na watercolor painting of a {}\n' > "$WORK/prompts.txt"
overrides=(-S "model.preset=$PRESET" -S "train.resolution=$RES" -S "train.steps=$TRAIN_STEPS"
  -S "train.num_class_images=$CLASS_IMAGES" -S "prior.num_inference_steps=$PRIOR_STEPS" -S train.checkpointing_steps=0
  -S "generate.num_inference_steps=$GEN_STEPS" -S generate.num_images_per_prompt=2)
step sample "$PY" -m eqdiff.cli sample --out "$WORK/subject" --num-photos 3 --seed 0
step train "$PY" -m eqdiff.cli train --params params.yaml "${overrides[@]}" --device "$DEVICE" \
  --subject-dir "$WORK/subject" --class-noun toy --masks "$WORK/subject/masks" --out "$WORK/concept"
step generate "$PY" -m eqdiff.cli generate --params params.yaml "${overrides[@]}" --device "$DEVICE" \
  --concept "$WORK/concept" --out "$WORK/samples" --prompts "check=$WORK/prompts.txt"
[ -f "$WORK/samples/grid.png" ] && cp "$WORK/samples/grid.png" "$OUT/samples-grid.png"
step bench "$PY" bench/bench.py "${BENCH[@]}" --markdown "$OUT/BENCHMARKS-section.md" --json "$OUT/bench.json"

echo
echo "gpu_check ($mode) results in $OUT; append BENCHMARKS-section.md to BENCHMARKS.md:"
cat "$SUMMARY"
! grep -q FAIL "$SUMMARY"
