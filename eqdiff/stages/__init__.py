"""The stage layer: the one registry of the pipeline's stages, in pipeline order.

A stage is one module ``eqdiff/stages/<name>.py`` with three names (docs/architecture.md "Stages"):

- ``run(...)``: the typed stage function — explicit input and output paths and a ``Params`` — that every door
  calls; it claims its outputs (``eqdiff.io.output_safety``) and hands the work to the core modules;
- ``add_arguments(parser)``: its ``eqdiff <name>`` arguments;
- ``main(args, params)``: the CLI door, ``run`` called with the parsed arguments.

The CLI (``eqdiff.cli``), the Prefect tasks (``tasks/stages.py``) and the dvc.yaml consistency test
(``tests/stages/test_stage_layer.py``) read ``STAGES``; core modules never import this package.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its CLI name, a one-line summary, and whether a failure is worth retrying."""

    name: str
    summary: str
    resumable: bool = False
    """It keeps partial work (checkpoints, finished images): a retry after a lost worker continues."""

    @property
    def module_name(self) -> str:
        return f"eqdiff.stages.{self.name.replace('-', '_')}"

    def load(self) -> ModuleType:
        """The stage's module (imported on first use: ``eqdiff masks`` imports no training code)."""
        return importlib.import_module(self.module_name)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("check-models", "check every model path in the params (exists, format, architecture, dtype)"),
        Stage("sample", "write the embedded demo's synthetic subject (photos + masks)"),
        Stage("masks", "subject masks (u2netp | grounded-sam | files) and an overlay sheet"),
        Stage("augment", "a seeded, fixed set of reference views per photo"),
        Stage("bands", "FFT band images and their VAE posterior parameters, cached"),
        Stage("prior", "class images for prior preservation", resumable=True),
        Stage("train", "fine-tune a concept (FDTE + MGDP + RRA)", resumable=True),
        Stage("generate", "sample images of a concept for prompts", resumable=True),
        Stage("evaluate", "CLIP-T, CLIP-I and DINO-I of generated images"),
        Stage("report", "tables, trade-off plot and an HTML gallery"),
    )
}
