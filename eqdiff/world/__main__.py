"""``python -m eqdiff.world``: build the procedural world's models (docs/world.md).

python -m eqdiff.world model --out A                     # the base model from scratch (about 90 min, 2 cores)
python -m eqdiff.world model --out B --resume-from A     # A's UNet trained --steps more (about 55 min)
python -m eqdiff.world model --out C --resume-from B --fine-attention   # B's UNet grown attention at 16 x 16
python -m eqdiff.world model --out D --resume-from C --new-text-encoder --text-hard-negatives 3   # C's VAE and
                                                         # UNet under a new text encoder
python -m eqdiff.world model --out E --resume-from D --new-text-encoder --new-unet --text-attribute-loss 1
                                                         # D's VAE only: a new text encoder and a new UNet
python -m eqdiff.world evaluator --out eqdiff/world/weights/evaluator   # the evaluators (about 10 min, 2 cores)
python -m eqdiff.world check-base --out reports/world-base              # base samples, recognised (2 min)
python -m eqdiff.world calibrate --out reports/world-calibration        # evaluators on styled subject sets (1 min)
python -m eqdiff.world audit draw --runs runs/S/A runs/S/F --out audit   # a blind audit sheet of samples, then
python -m eqdiff.world audit score --out audit                          # (labels filled in) agreement with them
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from eqdiff.cli import configure_runtime
from eqdiff.errors import EqDiffError


def main(argv: list[str] | None = None) -> int:
    from eqdiff.world.base_model import WorldTrainConfig, check_resume, first_part_settings, train_world_model
    from eqdiff.world.evaluator_training import EvaluatorTrainConfig, train_evaluator

    parser = argparse.ArgumentParser(prog="python -m eqdiff.world", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="train the world base model from scratch")
    model.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    for field in fields(WorldTrainConfig):
        option = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):
            model.add_argument(option, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            model.add_argument(option, type=type(field.default), default=field.default)
    evaluator = commands.add_parser("evaluator", help="train the world evaluators and measure their accuracy")
    evaluator.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    for field in fields(EvaluatorTrainConfig):
        evaluator.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    check = commands.add_parser("check-base", help="sample the base model and recognise its samples")
    check.add_argument("--out", type=Path, required=True, help="folder for base_check.json and base_check.png")
    check.add_argument("--model-path", default=None, help="a world model folder (default: the shipped one)")
    check.add_argument("--num-samples", type=int, default=200)
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--num-inference-steps", type=int, default=25)
    check.add_argument("--guidance-scale", type=float, default=5.0)
    calibration = commands.add_parser("calibrate", help="read styled subject sets with the world evaluators")
    calibration.add_argument("--out", type=Path, required=True, help="folder for calibration.json and .md")
    calibration.add_argument("--num-sets", type=int, default=4, help="subject sets per identity and condition")
    audit = commands.add_parser("audit", help="a blind audit of the evaluators on generated samples")
    audit.add_argument("step", choices=("draw", "score"), help="draw the sheet, or score the filled-in labels")
    audit.add_argument("--out", type=Path, required=True, help="the audit's folder")
    audit.add_argument("--runs", type=Path, nargs="+", default=[], help="draw: runs/<subject>/<variant> folders")
    audit.add_argument("--n", type=int, default=60, help="draw: samples on the sheet")
    audit.add_argument("--seed", type=int, default=0, help="draw: seed of the random choice")
    args = parser.parse_args(argv)
    if args.command == "audit":
        from eqdiff.world.audit import draw, score

        try:
            if args.step == "draw":
                draw(args.runs, args.n, args.seed, args.out)
                print(f"{args.n} samples on {args.out}/sheet.png; label them in {args.out}/labels.csv")
            else:
                print(score(args.out), end="")
        except EqDiffError as error:
            print(f"eqdiff.world audit: error: {error}", file=sys.stderr)
            return 2
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_runtime(load_libraries=True)
    if args.command == "check-base":
        from eqdiff.config import ModelConfig
        from eqdiff.world.base_check import check_base_model

        summary = check_base_model(
            args.out,
            ModelConfig(preset="world", path=args.model_path),
            args.num_samples,
            args.seed,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
        )
        rates = ", ".join(f"{key} {value:.0%}" for key, value in summary["recognised"].items())
        print(f"recognised: {rates}; all three {summary['recognised_all']:.0%} ({args.out}/base_check.png)")
        return 0
    if args.command == "calibrate":
        from eqdiff.world.calibration import calibrate

        record = calibrate(args.out, args.num_sets)
        print((args.out / "calibration.md").read_text(), end="")
        print(f"{sum(row['photos'] for row in record['rows'])} photos read; {args.out}/calibration.json")
        return 0
    if args.out.exists():
        print(f"eqdiff.world: error: --out {args.out} already exists (choose a new folder)", file=sys.stderr)
        return 2
    if args.command == "evaluator":
        settings = EvaluatorTrainConfig(**{f.name: getattr(args, f.name) for f in fields(EvaluatorTrainConfig)})
        train_evaluator(args.out, settings)
        print(f"world evaluator written to {args.out}")
        return 0
    settings = {f.name: getattr(args, f.name) for f in fields(WorldTrainConfig)}
    if args.resume_from and Path(args.resume_from).is_dir():
        # options left at their defaults take the resumed model's own VAE / text encoder settings
        defaults = WorldTrainConfig()
        trained = first_part_settings(Path(args.resume_from), args.new_text_encoder)
        settings.update({k: v for k, v in trained.items() if settings[k] == getattr(defaults, k)})
    config = WorldTrainConfig(**settings)
    try:
        check_resume(config)  # before the long drawing starts
    except EqDiffError as error:
        print(f"eqdiff.world: error: {error}", file=sys.stderr)
        return 2
    train_world_model(args.out, config)
    print(f"world base model written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
