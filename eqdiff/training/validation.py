"""Validation images during training: the validation prompt sampled with the live training weights.

Training calls this (``EqDiffRecipe``); it builds an ``EqDiffPipeline`` around the recipe's modules, so the
inference pipeline knows nothing of training (docs/architecture.md "Layers").
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from eqdiff.io.artifacts import save_png
from eqdiff.method.prompts import subject_prompt, training_reference_prompt
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, image_generator


def live_pipeline(recipe) -> EqDiffPipeline:
    """An ``EqDiffPipeline`` around a recipe's live modules (no copy: it samples the weights as they train),
    with the recipe's reference image and training reference prompt."""
    cfg = recipe.config
    pipe = EqDiffPipeline.from_components(
        recipe.components,
        recipe.embeddings,
        recipe.placeholder_id,
        cfg.concept.placeholder,
        recipe.bank,
        cfg.rra.enabled,
        cfg.train.resolution,
    )
    pipe.reference_image = recipe.data.reference_image
    pipe.default_reference_prompt = training_reference_prompt(
        cfg.train.instance_prompt, cfg.concept.placeholder, recipe.class_noun
    )
    return pipe


def validation_images(recipe, path: Path) -> Path:
    """Sample the validation prompt with the live training weights and write a PNG grid."""
    cfg = recipe.config
    pipe = live_pipeline(recipe)
    prompt = subject_prompt(cfg.train.validation_prompt, cfg.concept.placeholder, recipe.class_noun)
    generators = [image_generator(cfg.train.seed, 0, i) for i in range(2)]
    images = pipe(
        [prompt] * 2,
        generator=generators,
        num_inference_steps=cfg.generate.num_inference_steps,
        guidance_scale=cfg.generate.guidance_scale,
        progress=False,
    ).images
    grid = Image.new("RGB", (sum(i.width for i in images), images[0].height))
    for k, image in enumerate(images):
        grid.paste(image, (k * image.width, 0))
    save_png(path, grid)
    return path
