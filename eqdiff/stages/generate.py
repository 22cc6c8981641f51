"""``eqdiff generate``: sample a concept over prompt sets -> ``eqdiff.pipelines.generate.generate_samples``.

Reads params section ``generate`` and, of ``model``, what says where the base model's files are kept
(``cache_dir``, ``allow_download``): the base model itself is the concept's own, and a ``model`` value that would
change it is refused in one line naming the concept's value. ``--prompts unstylized=prompts/live.txt --prompts
stylized=prompts/style.txt`` names the prompt sets (default: the package's demo lists). Output layout: see
``eqdiff.pipelines.generate``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import GenerateConfig, ModelConfig, Params
from eqdiff.pipelines.generate import generate_samples, parse_prompt_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concept", type=Path, required=True, help="concept directory from `eqdiff train`")
    parser.add_argument("--out", type=Path, required=True, help="samples directory to write")
    parser.add_argument(
        "--prompts",
        action="append",
        default=[],
        metavar="SET=FILE",
        help="a named prompt file (repeatable); default: the demo lists",
    )
    parser.add_argument("--reference", type=Path, help="reference image (default: the concept's own)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")


def run(
    concept: Path,
    out: Path,
    params: Params | Mapping[str, Any],
    prompt_sets: dict[str, Path] | None = None,
    reference: Path | None = None,
    device: str = "auto",
) -> Path:
    """The stage (every door calls this): images of ``concept`` for every prompt of ``prompt_sets`` into ``out``."""
    params = Params.of(params)
    config = params.section(GenerateConfig)
    model = params.section(ModelConfig)  # validated; only the keys the params set are passed on
    settings = {key: getattr(model, key) for key in params.get("model") or {}}
    return generate_samples(concept, out, config, prompt_sets, reference, device, settings)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.concept, args.out, params, parse_prompt_sets(args.prompts), args.reference, args.device)
