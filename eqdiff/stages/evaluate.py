"""``eqdiff evaluate``: CLIP-T, CLIP-I, DINO-I of one samples directory (docs/method.md, Evaluation) ->
``metrics.evaluate``.

Reads params section ``evaluate``. Writes, atomically, ``--out`` (``metrics.json``: numbers only, per prompt set
``clip_t``, ``clip_t_cosine``, ``clip_i``, ``dino_i``, ``n_images``, ``n_prompts`` (with ``evaluate.world``
also ``world_text``, ``world_identity``, ``world_identity_match``), and ``n_real_images``; what
``dvc metrics show/diff`` tabulate) and ``--info`` (default ``evaluation.json`` beside it: the calibration
flags, metric model ids, subject, variant, ``subject_dir``, per-prompt CLIP-T, and with ``evaluate.world`` the
world evaluator's digest and measured accuracy). ``eqdiff report`` reads both.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import EvaluateConfig, Params
from eqdiff.evaluation.evaluate import evaluate, info_path, split_metrics
from eqdiff.io.artifacts import write_json
from eqdiff.io.output_safety import claim_output, optional_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=Path, required=True, help="samples folder of `eqdiff generate`")
    parser.add_argument("--subject-dir", type=Path, required=True, help="folder of the subject's real photos")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON file to write (numbers only)")
    parser.add_argument("--info", type=Path, help="JSON of what was measured (default: evaluation.json beside --out)")


def run(
    samples: Path, subject_dir: Path, out: Path, params: Params | Mapping[str, Any], info: Path | None = None
) -> Path:
    """The stage (every door calls this): CLIP-T, CLIP-I, DINO-I of ``samples`` written to ``out`` (JSON)."""
    config = Params.of(params).section(EvaluateConfig)
    info = info or info_path(out)
    reads = [samples, optional_path(config.clip_model), optional_path(config.dino_model)]
    # An existing file is replaced only when it is an earlier output: numbers (metrics.json; older versions also
    # held the flags) or the sidecar of what was measured.
    earlier = lambda data: "n_real_images" in data or "calibrated" in data  # noqa: E731
    for path in (out, info):
        claim_output(path, "evaluate", reads=reads, folders=[subject_dir], file_check=earlier)
    numbers, described = split_metrics(evaluate(samples, subject_dir, config))
    write_json(info, described.to_json())
    write_json(out, numbers.to_json())
    return Path(out)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.samples, args.subject_dir, args.out, params, args.info)
