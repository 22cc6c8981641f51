"""``eqdiff`` command line: one sub-command per pipeline stage, each a thin door to ``eqdiff.stages.<name>``.

Every stage module exposes ``add_arguments(parser)`` and ``run(args, params)``; the DVC stage and the Prefect
task call the same ``run`` (DESIGN §3). ``--params`` names the params file (default ``params.yaml`` when it
exists) and ``-S section.key=value`` overrides a value as ``dvc exp run -S`` does. User errors
(``EqDiffError``) and operating-system errors (``OSError``: permission denied, no space left, ...) print
one line naming the path and exit with status 2, never a traceback (DESIGN §6).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from eqdiff.config import apply_cli_overrides
from eqdiff.errors import EqDiffError, os_error_message

STAGES: dict[str, str] = {
    "sample": "write the embedded demo's synthetic subject (photos + masks)",
    "masks": "subject masks (u2netp | grounded-sam | files) and an overlay sheet",
    "augment": "a seeded, fixed set of reference views per photo",
    "bands": "FFT band images and their VAE posterior parameters, cached",
    "prior": "class images for prior preservation",
    "train": "fine-tune a concept (FDTE + MGDP + RRA)",
    "generate": "sample images of a concept for prompts",
    "evaluate": "CLIP-T, CLIP-I and DINO-I of generated images",
    "report": "tables, trade-off plot and an HTML gallery",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: a stage name and its arguments (parsed by the stage's own parser)."""
    stages = "\n".join(f"  {name:<10} {text}" for name, text in STAGES.items())
    parser = argparse.ArgumentParser(
        prog="eqdiff",
        description="Equilibrated Diffusion pipeline stages.",
        epilog=f"stages:\n{stages}\n\n`eqdiff STAGE --help` lists a stage's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("stage", choices=list(STAGES), metavar="STAGE", help="one of: " + ", ".join(STAGES))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def build_stage_parser(stage: str) -> argparse.ArgumentParser:
    """A stage's parser; only the chosen stage's module is imported."""
    parser = argparse.ArgumentParser(prog=f"eqdiff {stage}", description=STAGES[stage])
    parser.add_argument("--params", type=Path, default=None, help="params YAML (default: params.yaml if it exists)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one parameter (repeatable)",
    )
    importlib.import_module(f"eqdiff.stages.{stage}").add_arguments(parser)
    return parser


def configure_runtime() -> None:
    """Quiet third-party chatter (weight-loading bars, warnings) and use the cores without oversubscribing.

    Downloads are governed by ``model.allow_download`` (``local_files_only`` at every load), not by the
    environment, so a user who allows a hub id is not blocked here.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


def main(argv: list[str] | None = None) -> int:
    top = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    configure_runtime()
    args = build_stage_parser(top.stage).parse_args(top.arguments)
    args.stage = top.stage
    try:
        from eqdiff.config import load_params

        params_path = args.params or (Path("params.yaml") if Path("params.yaml").is_file() else None)
        params = load_params(params_path) if params_path else {}
        params = apply_cli_overrides(params, args.overrides)
        importlib.import_module(f"eqdiff.stages.{args.stage}").run(args, params)
    except EqDiffError as exc:
        print(f"eqdiff {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (permissions, a full disk), reported like a user error
        print(f"eqdiff {args.stage}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eqdiff {args.stage}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
