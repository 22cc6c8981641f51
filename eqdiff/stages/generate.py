"""``eqdiff generate``: sample a concept over prompt sets -> ``eqdiff.pipelines.generate.generate_samples``.

Reads params section ``generate``. ``--prompts unstylized=prompts/live.txt --prompts stylized=prompts/style.txt``
names the prompt sets (default: the package's demo lists). Output layout: see ``eqdiff.pipelines.generate``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eqdiff.config import GenerateConfig, Params
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
    config = Params.of(params).section(GenerateConfig)
    return generate_samples(concept, out, config, prompt_sets, reference, device)


def main(args: argparse.Namespace, params: Params) -> None:
    run(args.concept, args.out, params, parse_prompt_sets(args.prompts), args.reference, args.device)
