#!/usr/bin/env bash
# Quickstart command 1: set up .venv (idempotent), then run the embedded demo end to end with DVC:
# sample subject -> masks -> augment -> bands -> prior -> train (A and F) -> generate -> evaluate -> report -> MLflow.
# The demo runs the world preset (a small model trained from scratch on the procedural world, docs/world.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The DVC stages call `eqdiff` and `python -m tasks.tracking`: they must come from this project's .venv.
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ ! -d .git ]; then
  echo "error: run the demo from a git clone of the project (DVC records its pipeline state beside git)" >&2
  exit 1
fi
start=$(date +%s)
dvc repro
echo
echo "demo finished in $(( $(date +%s) - start )) s. Where to look:"
echo "  HTML report      reports/index.html (open it in a browser)"
echo "  metrics          source .venv/bin/activate && dvc metrics show"
echo "  MLflow runs      source .venv/bin/activate && mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1"
echo "  masks / bands    runs/demo_ball/masks/overlay.png, runs/demo_ball/bands/sheet.png"
echo "  concepts         runs/demo_ball/A/concept/ (the baseline), runs/demo_ball/F/concept/ (the full method)"
echo "  samples          runs/demo_ball/A/samples/grid.png, runs/demo_ball/F/samples/grid.png"
echo "The subject's photos are watercolors: the report's first screen shows A and F side by side with their style leak."
echo "World-T / World-I / leaks come from the world evaluators; the CLIP/DINO columns are random-weight (uncalibrated)."
