"""Speed and memory of EqDiff against its baselines, side by side in one process (BENCHMARKS.md).

(a) Training: a step of the paper recipe (batch 2 + 2 prior, RRA with L_ra and L_ca, FDTE, MGDP; variant F)
    against a plain Custom-Diffusion step (variant A: the same trainable cross-attention K/V, no reference
    branch) on the same weights — steps/s and peak memory.
(b) Inference: one image, DDIM, CFG 12.5, with the reference branch (fused and two-call), against diffusers'
    ``StableDiffusionPipeline`` on the same weights — s/image at each batch size, and peak memory.
(c) The tiny preset on CPU (``--preset tiny``), the same code.

Weights are random (``sd-v1-random`` is SD v1.x at full size): speed and memory do not depend on their values.
Training data are synthetic posteriors and masks of the right shapes (the cache the ``bands`` stage writes), so
no VAE encoder runs in the loop, as in the real recipe. Timings alternate the compared variants over several
rounds and report medians; ratios are taken within this process only.

    python bench/bench.py --preset tiny --device cpu                  # CPU, CI-sized
    python bench/bench.py --preset sd-v1-random --device cuda         # GPU: BENCHMARKS.md's targets
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import DDIMScheduler, StableDiffusionPipeline

from eqdiff.config import MethodConfig
from eqdiff.errors import DataError
from eqdiff.method import rra
from eqdiff.models.components import load_components
from eqdiff.models.concept import attach_concept_modules, trainable_parameters
from eqdiff.models.precision import resolve_device
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline
from eqdiff.training.data import TrainingData
from eqdiff.training.recipe import EqDiffRecipe

TARGETS = {  # BENCHMARKS.md "Targets": H200, bf16, random full-size weights
    "train_step_s": 30.0 / 600,
    "train_ratio": 1.4,
    "train_peak_gib": 12.0,
    "infer_s_b1": 1.0,
    "infer_ratio_b1": 1.25,
    "infer_ratio_b8": 1.3,
    "infer_peak_gib_b1": 4.0,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def synthetic_data(latent: int, side: int, num_targets: int = 4, num_classes: int = 8) -> TrainingData:
    """Posterior parameters and masks of the shapes the band cache holds (values do not matter for speed)."""
    generator = torch.Generator().manual_seed(0)

    def posterior(n: int) -> dict[str, torch.Tensor]:
        out = {}
        for band in ("full", "low", "high"):
            out[f"{band}_mean"] = torch.randn(n, 4, latent, latent, generator=generator)
            out[f"{band}_logvar"] = torch.full((n, 4, latent, latent), -6.0)
        return out

    masks = torch.zeros(num_targets, 1, side, side)
    masks[..., side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 1
    views = num_targets * 2
    return TrainingData(
        target_posteriors=posterior(num_targets),
        target_masks=masks,
        reference_mean=torch.randn(views, 4, latent, latent, generator=generator),
        reference_logvar=torch.full((views, 4, latent, latent), -6.0),
        reference_masks=masks.repeat(2, 1, 1, 1),
        reference_owner=torch.arange(num_targets).repeat(2),
        class_posteriors=posterior(num_classes),
        class_reference_mean=torch.randn(num_classes, 4, latent, latent, generator=generator),
        class_reference_logvar=torch.full((num_classes, 4, latent, latent), -6.0),
        reference_image=torch.zeros(3, side, side),
        digest="bench",
    )


TRAIN_VARIANTS = {
    # name: (ablation preset, reference pass under no_grad, VAE-encode the batch's images every step)
    "A": ("A", True, False),
    "F": ("F", True, False),
    "F_reference_with_grad": ("F", False, False),
    "F_vae_in_loop": ("F", True, True),
}
"""Plain Custom Diffusion (A), EqDiff as shipped (F), and F without each of two fast paths."""


def vae_encode_batch(components, side: int, rows: int, device: torch.device, dtype: torch.dtype | None) -> None:
    """What encoding every step costs: the batch's targets and references through the VAE encoder."""
    images = torch.rand(2 * rows, 3, side, side, device=device) * 2 - 1
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        components.vae.encode(images.to(components.vae.dtype)).latent_dist.sample()


def training_recipe(args, variant: str, device: torch.device) -> EqDiffRecipe:
    """A set-up recipe of ``variant`` on the preset's random weights and synthetic cached posteriors."""
    params = {
        "model": {"preset": args.preset},
        "train": {
            "variant": variant,
            "resolution": args.resolution,
            "mixed_precision": args.precision,
            "checkpointing_steps": 0,
        },
    }
    config = MethodConfig.from_dict(params).resolved()
    components = load_components(config.model).to(device)
    latent = args.resolution // (2 ** (len(components.vae.config.block_out_channels) - 1))
    data = synthetic_data(latent, args.resolution).to(device)
    recipe = EqDiffRecipe(config, components, data, "toy", "toy", Path("/nonexistent"), progress=False)
    recipe.setup()
    if getattr(args, "channels_last", False):
        components.unet.to(memory_format=torch.channels_last)
    return recipe


def time_training(args, device: torch.device) -> dict:
    """Median step time and peak memory of each training variant, alternating variants over rounds."""
    results: dict[str, dict] = {}
    times: dict[str, list[float]] = {name: [] for name in TRAIN_VARIANTS}
    for _round in range(args.rounds):
        for name, (variant, reference_no_grad, vae_in_loop) in TRAIN_VARIANTS.items():
            recipe = training_recipe(args, variant, device)
            components = recipe.components

            def step(
                recipe=recipe, components=components, reference_no_grad=reference_no_grad, vae_in_loop=vae_in_loop
            ):
                if vae_in_loop:
                    vae_encode_batch(components, args.resolution, 4, device, recipe.amp_dtype)
                recipe.optimization_step(reference_no_grad=reference_no_grad)

            for _ in range(args.warmup):
                step()
            reset_peak(device)
            sync(device)
            start = time.perf_counter()
            for _ in range(args.train_steps):
                step()
            sync(device)
            times[name].append((time.perf_counter() - start) / args.train_steps)
            results.setdefault(name, {})["peak_gib"] = peak_gib(device)
            del recipe, components, step
    for name in TRAIN_VARIANTS:
        results[name]["step_s"] = statistics.median(times[name])
        results[name]["steps_per_s"] = 1.0 / results[name]["step_s"]
    results["ratio"] = results["F"]["step_s"] / results["A"]["step_s"]
    results["600_steps_s"] = 600 * results["F"]["step_s"]
    return results


def _time_call(fn, device: torch.device, rounds: int) -> float:
    values = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        values.append(time.perf_counter() - start)
    return statistics.median(values)


@dataclass
class InferencePipelines:
    """diffusers' SD pipeline and an EqDiff pipeline with a trained-looking random concept, on the same weights.

    They share one UNet: ``use("plain")`` installs its stock SDPA processors, ``use("eqdiff")`` the concept's.
    """

    plain: StableDiffusionPipeline
    eqdiff: EqDiffPipeline
    processors: dict[str, dict]

    def use(self, which: str) -> None:
        self.plain.unet.set_attn_processor(dict(self.processors[which]))


def inference_pipelines(args, device: torch.device, dtype: torch.dtype) -> InferencePipelines:
    components = load_components(MethodConfig.from_dict({"model": {"preset": args.preset}}).model)
    components.to(device, dtype)
    side = args.resolution
    scheduler = DDIMScheduler.from_config(components.noise_scheduler.config)
    plain = StableDiffusionPipeline(
        components.vae,
        components.text_encoder,
        components.tokenizer,
        components.unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    plain.set_progress_bar_config(disable=True)
    stock = dict(components.unet.attn_processors)
    bank = rra.ReferenceBank()
    embeddings, placeholder_id = attach_concept_modules(
        components, "<new1>", "ktn", rra=True, decoupled=True, bank=bank, dtype=dtype
    )
    with torch.no_grad():  # a trained-looking gate so the RRA branch does real work
        for name, param in trainable_parameters(components.unet, embeddings).items():
            if "to_out_res" in name:
                param.normal_(0, 0.02)
    eqdiff = EqDiffPipeline.from_components(components, embeddings, placeholder_id, "<new1>", bank, True, side)
    eqdiff.reference_image = torch.zeros(3, side, side)
    return InferencePipelines(plain, eqdiff, {"plain": stock, "eqdiff": dict(components.unet.attn_processors)})


PLAIN_SD = {"guidance_scale": 12.5, "output_type": "pt"}
EQDIFF_VARIANTS = {  # EqDiff as shipped (fused; the unconditional reference row cached) and without each fast path
    # name: pipeline options; "unshared" runs only at batch > 1 (at batch 1 every reference row is distinct)
    "fused": {"fuse_reference": True},
    "twocall": {"fuse_reference": False},
    "fused_unshared": {"fuse_reference": True, "share_reference_rows": False},
    "fused_uncached": {"fuse_reference": True, "cache_unconditional_reference": False},
}


def run_plain(plain: StableDiffusionPipeline, args, batch: int, steps: int) -> None:
    side = args.resolution
    generators = [torch.Generator().manual_seed(k) for k in range(batch)]
    plain(["a toy"] * batch, num_inference_steps=steps, height=side, width=side, generator=generators, **PLAIN_SD)


def run_eqdiff(eqdiff: EqDiffPipeline, batch: int, steps: int, **options) -> None:
    generators = [torch.Generator().manual_seed(k) for k in range(batch)]
    eqdiff(
        ["a <new1> toy"] * batch,
        num_inference_steps=steps,
        guidance_scale=12.5,
        output_type="pt",
        generator=generators,
        progress=False,
        **options,
    )


def time_inference(args, device: torch.device, dtype: torch.dtype) -> dict:
    """s/image of diffusers' SD pipeline and of EqDiff (as shipped, and without each fast path) at each batch
    size, on the same weights."""
    pipelines = inference_pipelines(args, device, dtype)
    steps = args.inference_steps
    results: dict = {}
    pipelines.use("plain")
    for batch in args.batches:
        call = functools.partial(run_plain, pipelines.plain, args, batch, steps)
        call()  # warm-up
        reset_peak(device)
        results[f"plain_b{batch}"] = {
            "s_per_image": _time_call(call, device, args.rounds) / batch,
            "peak_gib": peak_gib(device),
        }
    pipelines.use("eqdiff")
    for batch in args.batches:
        for name, options in EQDIFF_VARIANTS.items():
            if name == "fused_unshared" and batch == 1:
                continue
            call = functools.partial(run_eqdiff, pipelines.eqdiff, batch, steps, **options)
            call()
            reset_peak(device)
            results[f"eqdiff_{name}_b{batch}"] = {
                "s_per_image": _time_call(call, device, args.rounds) / batch,
                "peak_gib": peak_gib(device),
            }
        results[f"ratio_b{batch}"] = (
            results[f"eqdiff_fused_b{batch}"]["s_per_image"] / results[f"plain_b{batch}"]["s_per_image"]
        )
    return results


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


TRAIN_LABELS = {
    "A": "plain Custom Diffusion (A)",
    "F": "EqDiff full recipe (F), as shipped",
    "F_reference_with_grad": "F, reference pass with a graph",
    "F_vae_in_loop": "F, VAE-encoding targets + references every step",
}

INFER_LABELS = {
    "plain": "diffusers `StableDiffusionPipeline`",
    "eqdiff_fused": "EqDiff as shipped (fused call, shared reference rows)",
    "eqdiff_twocall": "EqDiff, reference and main pass as two calls",
    "eqdiff_fused_unshared": "EqDiff, one reference row per main row",
    "eqdiff_fused_uncached": "EqDiff, unconditional reference row recomputed every call",
}


def markdown(args, device: torch.device, train: dict | None, infer: dict | None) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"### {args.preset} on {describe_device(device)} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`{' '.join(sys.argv)}` · torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()} · precision "
        f"{args.precision} · {args.resolution} px · medians of {args.rounds} alternating rounds",
        "",
    ]
    if train:
        lines += [
            "| training (batch 2 + 2 prior) | s/step | steps/s | peak GiB |",
            "|---|---|---|---|",
            *(
                f"| {TRAIN_LABELS[name]} | {fmt(train[name]['step_s'])} | {fmt(train[name]['steps_per_s'])} | "
                f"{fmt(train[name]['peak_gib'])} |"
                for name in TRAIN_VARIANTS
            ),
            "",
            f"EqDiff / plain step time: **{train['ratio']:.2f}×** (target ≤ {TARGETS['train_ratio']}); "
            f"600 steps: **{train['600_steps_s']:.1f} s** (target ≤ 30 s on an H200).",
            "",
        ]
    if infer:
        lines += [f"| inference ({args.inference_steps} DDIM steps, CFG 12.5) | s/image | peak GiB |", "|---|---|---|"]
        for key, value in infer.items():
            if isinstance(value, dict):
                name, _, batch = key.rpartition("_b")
                label = f"{INFER_LABELS[name]}, batch {batch}"
                lines.append(f"| {label} | {fmt(value['s_per_image'])} | {fmt(value['peak_gib'])} |")
        ratios = ", ".join(f"batch {b}: **{infer[f'ratio_b{b}']:.2f}×**" for b in args.batches)
        lines += [
            "",
            f"EqDiff (fused) / plain SD time per image: {ratios} (targets ≤ 1.25 at batch 1, ≤ 1.3 at batch 8).",
            "",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sd-v1-random"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    parser.add_argument("--resolution", type=int, help="default: the preset's native size")
    parser.add_argument("--train-steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--inference-steps", type=int, default=50)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--channels-last", action="store_true", help="UNet in channels_last during training")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--markdown", type=Path, help="append the result section to this file (BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except DataError as exc:
        parser.error(str(exc))
    args.resolution = args.resolution or (512 if args.preset == "sd-v1-random" else 64)
    use_half = device.type == "cuda" and args.precision != "no"
    dtype = (torch.float16 if args.precision == "fp16" else torch.bfloat16) if use_half else torch.float32
    train = None if args.skip_train else time_training(args, device)
    infer = None if args.skip_inference else time_inference(args, device, dtype)
    results = {"train": train, "inference": infer, "device": describe_device(device), "argv": sys.argv}
    report(markdown(args, device, train, infer), results, args.markdown, args.json)
    return 0


def report(text: str, results: dict, markdown_path: Path | None, json_path: Path | None) -> None:
    """Print the section, append it to ``markdown_path`` (BENCHMARKS.md) and write the raw results as JSON."""
    print(text)
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
