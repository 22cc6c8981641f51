"""Regression values, diffusers-style: stored numbers of the first training steps and of one generated image.

Invariant tests cannot see a change that moves every number the same way (a dtype-policy change did, once);
these can. The values are the loss components of the first 3 optimisation steps of variants A and F on the tiny
preset (32 px, prior preservation on) and a 3×3 corner (all channels) of one image generated from the trained F
concept with seeded perturbed weights (so RRA, the frequency vectors and the K/V all shape the image).

Tolerances: losses ``rtol = 1e-3`` — a 1 % change of any component fails, while float rounding across x86 CPUs
(~1e-6 relative here) passes; image values ``atol = 1e-4`` on [0, 1] pixels.

Provenance of the stored values: ``OMP_NUM_THREADS=1 .venv/bin/python tests/training/test_regression.py``, torch
2.14.1+cu130 (CPU), diffusers 0.42.1, transformers 5, 2026-12-01; identical in two runs.

Deliberate update (a change that is meant to move the numbers): run that same command, paste the two printed
blocks over ``EXPECTED_LOSSES`` and ``EXPECTED_IMAGE_CORNER``, update the provenance line, and say in the commit
message which change moved them and why. Never widen the tolerances to make a failure pass.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

from eqdiff.config import AugmentConfig, MethodConfig
from eqdiff.models.components import load_components
from eqdiff.pipelines.eqdiff_pipeline import image_generator
from eqdiff.prep.sample import make_sample_subject
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.data import prepare_training_data
from eqdiff.training.recipe import EqDiffRecipe
from eqdiff.training.validation import live_pipeline

LOSS_RTOL, LOSS_ATOL = 1e-3, 1e-7
IMAGE_ATOL = 1e-4
COMPONENTS = ("instance", "prior", "reference_attention", "cross_attention", "total")

# fmt: off
EXPECTED_LOSSES = {  # per step: instance, prior, reference_attention, cross_attention, total
    "A": [
        [4.2723031, 1.12910473, 0, 0, 5.40140772],
        [4.59126949, 1.11446333, 0, 0, 5.70573282],
        [4.66031265, 1.122437, 0, 0, 5.78274965],
    ],
    "F": [
        [4.69686508, 1.11062419, 0.10677065, 0.582475424, 5.87641382],
        [4.81373644, 1.15666509, 0.0767119899, 0.581063151, 6.03617954],
        [4.83374405, 1.14692569, 0.22385402, 0.587963223, 6.06185198],
    ],
}
EXPECTED_IMAGE_CORNER = [  # (3 channels, 3 rows, 3 columns): the bottom-right corner
    [
        [0.434661448, 0.480821759, 0.557339609],
        [0.426438332, 0.571958959, 0.695094585],
        [0.558495283, 0.580956638, 0.668564856],
    ],
    [
        [0.651352465, 0.320134223, 0.47452423],
        [0.493840873, 0.344128639, 0.362257868],
        [0.358528197, 0.328163683, 0.416491598],
    ],
    [
        [0.300580084, 0.299646795, 0.388128161],
        [0.549874306, 0.479688019, 0.43723321],
        [0.573656321, 0.483525515, 0.438033283],
    ],
]
# fmt: on


def _params(variant: str) -> dict:
    """Spelled out here (not the shared test helpers), so that only a change of the method moves the values."""
    return {
        "train": {
            "variant": variant,
            "resolution": 32,
            "steps": 3,
            "batch_size": 2,
            "with_prior_preservation": True,
            "num_class_images": 2,
            "checkpointing_steps": 0,
            "seed": 42,
        },
        "generate": {"num_inference_steps": 2},
    }


def _recipe(subject_dir: Path, work: Path, variant: str) -> EqDiffRecipe:
    config = MethodConfig.from_dict(_params(variant)).resolved()
    components = load_components(config.model)
    subject = discover_subject(subject_dir, "toy")
    data = prepare_training_data(
        components.vae,
        subject,
        config,
        AugmentConfig(views_per_photo=2),
        sorted(subject_dir.glob("*.png"))[:2],
        masks_dir=subject_dir / "masks",
    )
    recipe = EqDiffRecipe(config, components, data, "toy", "toy", work, progress=False)
    recipe.setup()
    return recipe


def _image_corner(recipe: EqDiffRecipe) -> list[list[list[float]]]:
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for param in recipe.parameters.values():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
        pipe = live_pipeline(recipe)
        assert pipe.default_reference_prompt == "photo of a toy"
        image = pipe(
            "a <new1> toy on the beach",
            generator=[image_generator(0, 0, 0)],
            num_inference_steps=2,
            output_type="pt",
            progress=False,
        ).images[0]
    return image[:, -3:, -3:].tolist()


def compute_values(root: Path) -> tuple[dict[str, list[dict[str, float]]], list]:
    subject_dir = make_sample_subject(root / "toy", num_photos=3)
    losses, corner = {}, []
    for variant in ("A", "F"):
        recipe = _recipe(subject_dir, root / variant, variant)
        steps = []
        for _ in range(3):
            values = recipe.optimization_step()
            steps.append({name: float(values[name].detach()) for name in COMPONENTS})
        losses[variant] = steps
        if variant == "F":
            corner = _image_corner(recipe)
    return losses, corner


def test_loss_components_and_image_corner_match_the_stored_values(tmp_path):
    losses, corner = compute_values(tmp_path)
    for variant, expected_steps in EXPECTED_LOSSES.items():
        assert len(losses[variant]) == len(expected_steps) == 3, variant
        for step, (got, expected) in enumerate(zip(losses[variant], expected_steps, strict=True)):
            for name, value in zip(COMPONENTS, expected, strict=True):
                torch.testing.assert_close(
                    torch.tensor(got[name], dtype=torch.float64),
                    torch.tensor(value, dtype=torch.float64),
                    rtol=LOSS_RTOL,
                    atol=LOSS_ATOL,
                    msg=lambda m, v=variant, s=step, n=name: f"variant {v} step {s} {n}: {m}",
                )
    torch.testing.assert_close(
        torch.tensor(corner, dtype=torch.float64),
        torch.tensor(EXPECTED_IMAGE_CORNER, dtype=torch.float64),
        rtol=0,
        atol=IMAGE_ATOL,
    )


def _print_values() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        losses, corner = compute_values(Path(root))
    print(f"EXPECTED_LOSSES = {{  # per step: {', '.join(COMPONENTS)}")
    for variant, steps in losses.items():
        print(f'    "{variant}": [')
        for step in steps:
            print("        [" + ", ".join(f"{step[name]:.9g}" for name in COMPONENTS) + "],")
        print("    ],")
    print("}")
    print("EXPECTED_IMAGE_CORNER = [  # (3 channels, 3 rows, 3 columns): the bottom-right corner")
    for channel in corner:
        print("    [")
        for row in channel:
            print("        [" + ", ".join(f"{v:.9g}" for v in row) + "],")
        print("    ],")
    print("]")


if __name__ == "__main__":
    os.environ.setdefault("EQDIFF_CACHE", tempfile.mkdtemp(prefix="eqdiff-cache-"))
    sys.exit(_print_values())
