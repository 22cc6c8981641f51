"""The one registration point of plug-ins: the only module outside ``eqdiff/world/`` that imports ``eqdiff.world``
(docs/architecture.md, Layers).

A plug-in contributes entries to three registries: base-model presets (``eqdiff.models.presets``: ``world``),
metric families (``eqdiff.evaluation.metric_registry``: World-T / World-I) and subject sources (``eqdiff sample
--world NAME``). ``load_plugins()`` lists them, importing each plug-in's entry module once; the registries call it
on their first lookup, so nothing registers by the side effect of an import. An entry module is cheap to import
(``eqdiff.world.plugin`` imports no torch): each entry imports its plug-in's code when it is called, so
``eqdiff report``, ``sample``, ``masks`` and ``augment`` still import no diffusers or transformers.

Adding a plug-in: one entry module in its package, and its entries added to ``load_plugins`` here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registries import this module: their types only for the annotations
    from eqdiff.evaluation.metric_registry import MetricFamily
    from eqdiff.models.presets import Preset

SubjectSource = Callable[[Path, str, int, int, str | None, str | None], Path]
"""``(folder, name, num_photos, seed, style, scene) -> folder``: writes the subject ``name``'s photos and masks
into ``folder``, all in ``style`` and ``scene`` when given (``eqdiff sample --photo-style/--photo-scene``)."""


@dataclass(frozen=True)
class Plugins:
    """Every plug-in's entries, by registry."""

    presets: tuple[Preset, ...]
    """Base-model presets, beside the built-in ``tiny``, ``sd-v1-random`` and ``sd-v1``."""
    metric_families: tuple[MetricFamily, ...]
    """Metric families, beside CLIP-T, CLIP-I and DINO-I."""
    subject_sources: Mapping[str, SubjectSource]
    """Subject sources by plug-in name (``eqdiff sample --world NAME`` draws from ``world``'s)."""


@cache
def load_plugins() -> Plugins:
    """The entries of every plug-in (the procedural world's, docs/world.md), imported once."""
    from eqdiff.world import plugin as world

    return Plugins(
        presets=(world.WorldPreset(),),
        metric_families=(world.WorldMetrics(),),
        subject_sources={"world": world.make_subject},
    )
