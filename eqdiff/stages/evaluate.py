"""``eqdiff evaluate``: CLIP-T, CLIP-I, DINO-I of one samples directory (DESIGN §5) -> ``metrics.evaluate``.

Reads params section ``evaluate``. Writes, atomically, ``--out`` (``metrics.json``: numbers only, per prompt set
``clip_t``, ``clip_t_cosine``, ``clip_i``, ``dino_i``, ``n_images``, ``n_prompts``, and ``n_real_images``; what
``dvc metrics show/diff`` tabulate) and ``--info`` (default ``evaluation.json`` beside it: the calibration
flags, metric model ids, subject, variant, ``subject_dir`` and per-prompt CLIP-T). ``eqdiff report`` reads both.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eqdiff.artifacts import write_json
from eqdiff.config import EvaluateConfig
from eqdiff.evaluations import INFO_FILE
from eqdiff.metrics import evaluate
from eqdiff.output_safety import claim_output, optional_path
from eqdiff.samples import PROMPT_SETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=Path, required=True, help="samples folder of `eqdiff generate`")
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's real photos")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON file to write (numbers only)")
    parser.add_argument("--info", type=Path, help="JSON of what was measured (default: evaluation.json beside --out)")


def split_metrics(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``metrics.evaluate``'s mapping as (numbers: the prompt-set blocks and ``n_real_images``, the rest)."""
    numeric = {k for k, v in result.items() if k in PROMPT_SETS or (isinstance(v, int) and not isinstance(v, bool))}
    return {k: result[k] for k in numeric}, {k: v for k, v in result.items() if k not in numeric}


def info_path(metrics: Path) -> Path:
    """Where ``eqdiff evaluate`` writes the sidecar of ``metrics`` by default (and ``eqdiff report`` reads it)."""
    return Path(metrics).with_name(INFO_FILE)


def evaluate_stage(
    samples: Path, subject_dir: Path, out: Path, params: dict[str, Any], info: Path | None = None
) -> Path:
    """The stage (every door calls this): CLIP-T, CLIP-I, DINO-I of ``samples`` written to ``out`` (JSON)."""
    config = EvaluateConfig.from_mapping(params.get("evaluate"))
    info = info or info_path(out)
    reads = [samples, optional_path(config.clip_model), optional_path(config.dino_model)]
    # An existing file is replaced only when it is an earlier output: numbers (metrics.json; older versions also
    # held the flags) or the sidecar of what was measured.
    earlier = lambda data: "n_real_images" in data or "calibrated" in data  # noqa: E731
    for path in (out, info):
        claim_output(path, "evaluate", reads=reads, folders=[subject_dir], file_check=earlier)
    numbers, described = split_metrics(evaluate(samples, subject_dir, config))
    write_json(info, described)
    write_json(out, numbers)
    return Path(out)


def run(args: argparse.Namespace, params: dict[str, Any]) -> None:
    evaluate_stage(args.samples, args.subject_dir, args.out, params, args.info)
