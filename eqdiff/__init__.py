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
    "EqDiffPipeline": "eqdiff.pipeline",
    "EqDiffPipelineOutput": "eqdiff.pipeline",
    "image_generator": "eqdiff.pipeline",
    # concepts and base models
    "Concept": "eqdiff.concept",
    "load_concept": "eqdiff.concept",
    "save_concept": "eqdiff.concept",
    "Components": "eqdiff.models",
    "load_components": "eqdiff.models",
    # training
    "EqDiffRecipe": "eqdiff.recipe",
    "train_concept": "eqdiff.train",
    # the stages' work
    "compute_masks": "eqdiff.masks",
    "generate_samples": "eqdiff.generate",
    "evaluate": "eqdiff.evaluate",
    "build_report": "eqdiff.report",
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
    from eqdiff.concept import Concept, load_concept, save_concept
    from eqdiff.config import VARIANTS, MethodConfig, ModelConfig, Params
    from eqdiff.errors import EqDiffError
    from eqdiff.evaluate import evaluate
    from eqdiff.generate import generate_samples
    from eqdiff.masks import compute_masks
    from eqdiff.models import Components, load_components
    from eqdiff.pipeline import EqDiffPipeline, EqDiffPipelineOutput, image_generator
    from eqdiff.recipe import EqDiffRecipe
    from eqdiff.report import build_report
    from eqdiff.train import train_concept
