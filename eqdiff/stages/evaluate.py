"""``eqdiff evaluate``: CLIP-T, CLIP-I, DINO-I of one samples directory (DESIGN §5) -> ``metrics.evaluate``.

Reads params section ``evaluate``. Writes ``--out`` (``metrics.json``, read by ``dvc metrics show/diff`` and
by ``eqdiff report``) atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.artifacts import write_json
from eqdiff.config import EvaluateConfig
from eqdiff.metrics import evaluate
from eqdiff.output_safety import claim_output, optional_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=Path, required=True, help="samples folder of `eqdiff generate`")
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's real photos")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON file to write")


def evaluate_stage(samples: Path, subject_dir: Path, out: Path, params: dict[str, Any]) -> Path:
    """The stage (every door calls this): CLIP-T, CLIP-I, DINO-I of ``samples`` written to ``out`` (JSON)."""
    config = EvaluateConfig.from_mapping(params.get("evaluate"))
    reads = [samples, optional_path(config.clip_model), optional_path(config.dino_model)]
    claim_output(out, "evaluate", reads=reads, folders=[subject_dir], file_check=lambda data: "calibrated" in data)
    write_json(out, evaluate(samples, subject_dir, config))
    return Path(out)


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    evaluate_stage(args.samples, args.subject_dir, args.out, params)
