"""The world plug-in's registration (docs/architecture.md, Layers): its entries reach the registries through
``eqdiff.plugins``, and looking up their names imports no torch."""

from __future__ import annotations

import subprocess
import sys

from support.import_graph import REPO

from eqdiff.config import ModelConfig
from eqdiff.evaluation.metric_registry import metric_family
from eqdiff.models.presets import model_input, preset, preset_names
from eqdiff.world.preset import SHIPPED_MODEL
from eqdiff.world.scores import WORLD_METRICS


def test_the_world_registers_its_preset_after_the_built_in_ones():
    assert preset_names() == ("tiny", "sd-v1-random", "sd-v1", "world")
    assert not preset("world").requires_path and preset("sd-v1").requires_path
    assert model_input(ModelConfig(preset="world")) == SHIPPED_MODEL  # read-only: no stage writes there


def test_the_world_metric_names_are_the_scorers():
    family = metric_family("world")
    assert family.metrics == WORLD_METRICS and family.record == "world_evaluator"


def test_looking_up_the_world_metric_names_imports_no_torch():
    code = (
        "import sys\n"
        "from eqdiff.evaluation.metric_registry import metric_family\n"
        "assert metric_family('world').metrics[:2] == ('world_text', 'world_identity')\n"
        "loaded = sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules))\n"
        "assert not loaded, f'imported {loaded}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
