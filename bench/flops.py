"""FLOPs of the work ``bench.py`` times, counted on the real code with torch's ``FlopCounterMode``.

A count does not depend on the device, the dtype or the machine's load, so it can be taken at full SD v1.x size
on a CPU and tells what the GPU timings can at best be: the FLOP ratio of EqDiff to its baseline is the time
ratio of a compute-bound GPU, and what a timing spends above it is overhead (launches, memory traffic).

(a) One training step (``optimization_step``: forward, backward, optimizer) of plain Custom Diffusion (A) and of
    the paper recipe (F), batch 2 + 2 prior.
(b) One image at ``--inference-steps`` DDIM steps with CFG, at each batch size: diffusers'
    ``StableDiffusionPipeline``, EqDiff as shipped, and EqDiff with one reference row per main row. A one-step
    call is counted; the UNet's share is the per-step cost, the rest (text, reference encode, VAE decode) is fixed.

Counted as the FLOP model of BENCHMARKS.md counts: convolutions, matmuls and attention, 2 FLOPs per MAC; elementwise
ops and norms excluded. On CPU, SDPA runs a kernel the counter does not know, so its formula is registered here.

    python bench/flops.py --preset tiny                                   # seconds
    python bench/flops.py --preset sd-v1-random --markdown BENCHMARKS.md  # full size: ~20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import inference_pipelines, report, run_eqdiff, run_plain, training_recipe  # noqa: E402

ATEN = torch.ops.aten
for _op, _formula in (
    (ATEN._scaled_dot_product_flash_attention_for_cpu, flop_registry[ATEN._scaled_dot_product_flash_attention]),
    (
        ATEN._scaled_dot_product_flash_attention_for_cpu_backward,
        flop_registry[ATEN._scaled_dot_product_flash_attention_backward],
    ),
):
    if _op not in flop_registry:  # same (query, key, value, ...) / (grad_out, query, key, value, ...) layout
        register_flop_formula(_op, get_raw=True)(_formula)

UNET = "UNet2DConditionModel"
EXPECTED = {  # BENCHMARKS.md, "The FLOP model": the model the speed targets were derived from
    # Its training step counts 2 rows (batch 2, no prior); the paper recipe runs 4 (2 + 2 prior): twice its step.
    "train_A": 2 * 3.40e12,
    "train_F": 2 * 5.63e12,
    "image_plain": 82.9e12,
    "image_reference_rows_1": 140.4e12,
    "image_reference_rows_2": 180.6e12,
}


def count(fn) -> dict[str, int]:
    """FLOPs of ``fn()`` in total ("Global") and per top-level module."""
    with FlopCounterMode(display=False) as mode:
        fn()
    return {name: sum(ops.values()) for name, ops in mode.get_flop_counts().items() if "." not in name}


def count_training(args, device: torch.device) -> dict:
    results = {}
    for variant in ("A", "F"):
        recipe = training_recipe(args, variant, device)
        recipe.optimization_step()  # warm-up: lazy optimizer state
        results[variant] = count(recipe.optimization_step)["Global"]
        del recipe
    results["ratio"] = results["F"] / results["A"]
    return results


def per_image(counts: dict[str, int], batch: int, steps: int) -> float:
    """FLOPs per image at ``steps`` steps from a one-step call: the UNet's count per step, the rest once."""
    fixed = counts["Global"] - counts[UNET]
    return (fixed + steps * counts[UNET]) / batch


def count_inference(args, device: torch.device) -> dict:
    pipelines = inference_pipelines(args, device, torch.float32)
    results: dict = {}
    pipelines.use("plain")
    for batch in args.batches:
        counts = count(functools.partial(run_plain, pipelines.plain, args, batch, 1))
        results[f"plain_b{batch}"] = per_image(counts, batch, args.inference_steps)
    pipelines.use("eqdiff")
    for batch in args.batches:
        for name, options in (("eqdiff_fused", {}), ("eqdiff_fused_unshared", {"share_reference_rows": False})):
            if name == "eqdiff_fused_unshared" and batch == 1:
                continue
            counts = count(functools.partial(run_eqdiff, pipelines.eqdiff, batch, 1, **options))
            results[f"{name}_b{batch}"] = per_image(counts, batch, args.inference_steps)
        results[f"ratio_b{batch}"] = results[f"eqdiff_fused_b{batch}"] / results[f"plain_b{batch}"]
    return results


def markdown(args, device: torch.device, train: dict, infer: dict) -> str:
    tf = lambda v: f"{v / 1e12:.2f} T" if v >= 1e11 else f"{v / 1e9:.2f} G"  # noqa: E731
    full = args.preset == "sd-v1-random" and args.resolution == 512 and args.inference_steps == 50
    expected = (lambda key: tf(EXPECTED[key])) if full else (lambda key: "—")
    lines = [
        f"### FLOPs: {args.preset} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`{' '.join(sys.argv)}` · torch {torch.__version__}, Python {platform.python_version()} · counted on "
        f"{device.type} with `FlopCounterMode` · {args.resolution} px",
        "",
        "| training step (batch 2 + 2 prior) | FLOPs counted | FLOP model (BENCHMARKS.md, × 2 for 4 rows) |",
        "|---|---|---|",
        f"| plain Custom Diffusion (A) | {tf(train['A'])} | {expected('train_A')} |",
        f"| EqDiff full recipe (F) | {tf(train['F'])} | {expected('train_F')} |",
        "",
        f"EqDiff / plain FLOPs per step: **{train['ratio']:.2f}×** (time target ≤ 1.4×).",
        "",
        f"| one image, {args.inference_steps} DDIM steps, CFG | FLOPs per image | ratio to plain SD |",
        "|---|---|---|",
    ]
    for batch in args.batches:
        plain = infer[f"plain_b{batch}"]
        lines.append(f"| diffusers `StableDiffusionPipeline`, batch {batch} | {tf(plain)} | 1.00 |")
        lines.append(
            f"| EqDiff as shipped (shared reference rows), batch {batch} | {tf(infer[f'eqdiff_fused_b{batch}'])} | "
            f"{infer[f'ratio_b{batch}']:.2f} |"
        )
        if f"eqdiff_fused_unshared_b{batch}" in infer:
            unshared = infer[f"eqdiff_fused_unshared_b{batch}"]
            lines.append(
                f"| EqDiff, one reference row per main row, batch {batch} | {tf(unshared)} | {unshared / plain:.2f} |"
            )
    if full:
        lines += [
            "",
            f"FLOP model per image (BENCHMARKS.md, The FLOP model): plain SD {expected('image_plain')}; EqDiff with "
            f"the reference UNet at 1 row per image {expected('image_reference_rows_1')}, at 2 rows "
            f"{expected('image_reference_rows_2')}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sd-v1-random"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, help="default: the preset's native size")
    parser.add_argument("--inference-steps", type=int, default=50)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--markdown", type=Path, help="append the result section to this file (BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args(argv)
    args.resolution = args.resolution or (512 if args.preset == "sd-v1-random" else 64)
    args.precision = "no"  # FLOPs do not depend on the dtype; fp32 runs everywhere
    device = torch.device(args.device)
    train = count_training(args, device)
    infer = count_inference(args, device)
    results = {"train": train, "inference": infer, "device": device.type, "argv": sys.argv}
    report(markdown(args, device, train, infer), results, args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
