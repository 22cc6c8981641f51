"""Equilibrated Diffusion (ACM MM 2024) on Stable Diffusion v1.x: the public surface.

    from eqdiff import EqDiffPipeline, image_generator
    pipe = EqDiffPipeline.from_concept_dir("runs/demo_ball/F/concept")

Names load on first use, so ``import eqdiff`` (and every ``eqdiff <stage>``) imports no model code it does not
need. The pipeline stages and how they are put together: docs/architecture.md; the method: docs/method.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("eqdiff")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

_PUBLIC = {
    # inference
    "EqDiffPipeline": "eqdiff.pipelines.eqdiff_pipeline",
    "EqDiffPipelineOutput": "eqdiff.pipelines.eqdiff_pipeline",
    "image_generator": "eqdiff.pipelines.eqdiff_pipeline",
    # concepts and base models
    "Concept": "eqdiff.models.concept",
    "load_concept": "eqdiff.models.concept",
    "save_concept": "eqdiff.models.concept",
    "Components": "eqdiff.models.components",
    "load_components": "eqdiff.models.components",
    # training
    "EqDiffRecipe": "eqdiff.training.recipe",
    "train_concept": "eqdiff.training.train",
    # the stages' work
    "compute_masks": "eqdiff.prep.masks",
    "generate_samples": "eqdiff.pipelines.generate",
    "evaluate": "eqdiff.evaluation.evaluate",
    "build_report": "eqdiff.evaluation.report",
    # configuration
    "Params": "eqdiff.config",
    "MethodConfig": "eqdiff.config",
    "ModelConfig": "eqdiff.config",
    "VARIANTS": "eqdiff.config",
    # errors
    "EqDiffError": "eqdiff.errors",
}

__all__ = [
    "__version__",
    "EqDiffPipeline",
    "EqDiffPipelineOutput",
    "image_generator",
    "Concept",
    "load_concept",
    "save_concept",
    "Components",
    "load_components",
    "EqDiffRecipe",
    "train_concept",
    "compute_masks",
    "generate_samples",
    "evaluate",
    "build_report",
    "Params",
    "MethodConfig",
    "ModelConfig",
    "VARIANTS",
    "EqDiffError",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eqdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from eqdiff.config import VARIANTS, MethodConfig, ModelConfig, Params
    from eqdiff.errors import EqDiffError
    from eqdiff.evaluation.evaluate import evaluate
    from eqdiff.evaluation.report import build_report
    from eqdiff.models.components import Components, load_components
    from eqdiff.models.concept import Concept, load_concept, save_concept
    from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, EqDiffPipelineOutput, image_generator
    from eqdiff.pipelines.generate import generate_samples
    from eqdiff.prep.masks import compute_masks
    from eqdiff.training.recipe import EqDiffRecipe
    from eqdiff.training.train import train_concept
