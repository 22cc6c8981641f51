"""The world's entries in the pipeline's registries, listed by ``eqdiff.plugins`` (docs/architecture.md, Layers):
the ``world`` preset (docs/world.md, "Base model"), the World-T / World-I metric family (docs/world-evaluators.md)
and the held-out subjects (docs/world.md, "Held-out subjects").

Importing this module is cheap (no torch, no diffusers): each entry imports the world's modules when it is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eqdiff.config import ModelConfig
    from eqdiff.evaluation.sample_index import SampleIndex


class WorldPreset:
    """``model.preset: world``: the base model trained on the procedural world; ``model.path`` null = the shipped
    weights (``eqdiff/world/weights/model``, read-only), else another world model folder. Completed once into a
    diffusers directory in the cache, named by the weights' digest (``eqdiff.world.preset``)."""

    name = "world"
    uses_path = True
    requires_path = False

    def source(self, config: ModelConfig, cache: Path) -> str:
        from eqdiff.world.preset import world_directory

        return str(world_directory(config.path, cache)[0])

    def rebuild(self, config: ModelConfig, cache: Path) -> str:
        """The completed directory again, rebuilt: a file of it failed to load (``load_components``)."""
        from eqdiff.world.preset import world_directory

        return str(world_directory(config.path, cache, rebuild=True)[0])

    def reads(self, config: ModelConfig, cache: Path) -> Path:
        from eqdiff.world.preset import SHIPPED_MODEL

        return Path(config.path).expanduser() if config.path else SHIPPED_MODEL

    def identity(self, config: ModelConfig, source: str) -> str:
        return f"world:{Path(source).name.removeprefix('world-')}"

    def native_resolution(self, config: ModelConfig) -> None:
        return None

    def describe(self, config: ModelConfig, path: Path) -> tuple[str, str, str]:
        """A world model folder, its weights' digest and the dtypes its safetensors store."""
        from eqdiff.models.base_weights import dtype_summary, tensor_shapes
        from eqdiff.world.preset import world_digest, world_files, world_source

        source = world_source(str(path))
        files = [f for f in world_files(source) if f.suffix == ".safetensors"]
        shapes = {f"{f.parent.name}.{k}": v for f in files for k, v in tensor_shapes(f, "model.path").items()}
        return "world model folder", f"world (weights {world_digest(source)})", dtype_summary(shapes)


class WorldMetrics:
    """World-T and World-I (and the identity match), scored by the shipped world evaluators
    (``eqdiff.world.scores``); ``world_evaluator`` records their weights and measured accuracy."""

    name = "world"
    metrics = ("world_text", "world_identity", "style_leak", "scene_leak")
    """``eqdiff.world.scores.WORLD_METRICS``, here as plain data so the report reads them without torch
    (``tests/world/test_plugin.py`` checks they are the same)."""
    record = "world_evaluator"

    def score(self, index: SampleIndex, photos: Sequence[Path]) -> dict[str, Any]:
        from eqdiff.world.evaluators import WorldEvaluator
        from eqdiff.world.scores import world_scores

        return world_scores(index, photos, WorldEvaluator.load())


def make_subject(
    directory: Path, name: str, num_photos: int, seed: int, style: str | None = None, scene: str | None = None
) -> Path:
    """The held-out world subject ``name`` (its class noun: ``ball``, ``box``, ...) as a photo folder with masks,
    its photos in ``style`` and ``scene`` (None: plain photos in a cluttered room; docs/world.md)."""
    from eqdiff.world.subjects import make_world_subject

    return make_world_subject(directory, name, num_photos=num_photos, seed=seed, style=style, scene=scene)
