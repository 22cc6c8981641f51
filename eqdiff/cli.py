"""``eqdiff`` command line: one sub-command per registered stage (``eqdiff.stages.STAGES``).

Each sub-command is the stage module's ``main(args, params)``, which calls the stage's typed ``run`` — the
function the DVC stage (through this CLI) and the Prefect task call (docs/architecture.md). ``--params``
names the params file (default ``params.yaml`` when it exists) and ``-S section.key=value`` overrides a value
as ``dvc exp run -S`` does. User errors (``EqDiffError``) and operating-system errors (``OSError``: permission
denied, no space left, ...) print one line naming the path and exit with status 2, never a traceback
(docs/robustness.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from eqdiff.errors import EqDiffError, os_error_message
from eqdiff.stages import STAGES


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: a stage name and its arguments (parsed by the stage's own parser)."""
    width = max(map(len, STAGES))
    stages = "\n".join(f"  {name:<{width}} {stage.summary}" for name, stage in STAGES.items())
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
    parser = argparse.ArgumentParser(prog=f"eqdiff {stage}", description=STAGES[stage].summary)
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
    STAGES[stage].load().add_arguments(parser)
    return parser


def configure_runtime(load_libraries: bool = False) -> None:
    """Quiet third-party chatter (weight-loading bars, warnings) and use the cores without oversubscribing.

    The environment is set first (diffusers and transformers read their verbosity when imported); the progress
    bars and the thread count are then set in whichever of diffusers / transformers / torch are imported (all
    three with ``load_libraries``). The CLI calls this again once the stage's module is imported, so a stage
    that needs none of them (``sample`` drawing five PNGs, ``masks`` copying the world's masks) does not pay the
    4 s of importing diffusers and transformers.

    Downloads are governed by ``model.allow_download`` (``local_files_only`` at every load), not by the
    environment, so a user who allows a hub id is not blocked here.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if load_libraries:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "diffusers" in sys.modules:
        sys.modules["diffusers"].utils.logging.disable_progress_bar()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


def main(argv: list[str] | None = None) -> int:
    top = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    configure_runtime()
    args = build_stage_parser(top.stage).parse_args(top.arguments)  # imports the stage's module
    configure_runtime()
    args.stage = top.stage
    try:
        from eqdiff.config import Params

        params_path = args.params or (Path("params.yaml") if Path("params.yaml").is_file() else None)
        STAGES[args.stage].load().main(args, Params.load(params_path, args.overrides))
    except EqDiffError as exc:
        for line in str(exc).splitlines() or [""]:  # one line per problem (check-models reports several)
            print(f"eqdiff {args.stage}: error: {line}", file=sys.stderr)
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
