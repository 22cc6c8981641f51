"""The metric registry: metric families beside CLIP-T, CLIP-I and DINO-I (docs/architecture.md, Layers).

A metric family is a named set of per-prompt-set metrics with its own scorer: ``evaluate`` calls the scorer of
``world`` when ``evaluate.world`` is set, and the report reads the family's metric *names* (its table columns and
trade-off axes). Families come from plug-ins, registered in ``eqdiff.plugins``, the one registration point: the
first lookup calls ``eqdiff.plugins.load_plugins()``. A plug-in's family is any object with the ``MetricFamily``
attributes and ``score`` (it cannot import this module, which imports the plug-ins).

Looking up a family imports no torch: its names are plain data, and its scorer imports its models when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from eqdiff.errors import EqDiffError
from eqdiff.plugins import load_plugins

if TYPE_CHECKING:
    from eqdiff.evaluation.sample_index import SampleIndex


class MetricFamily(Protocol):
    """A named family of metrics, scored per prompt set."""

    name: str
    """The family's name (``world``: scored when ``evaluate.world`` is set)."""
    metrics: tuple[str, ...]
    """The metrics the report shows, in column order (``world_text``, ``world_identity``, ``style_leak``,
    ``scene_leak``); a metric may be absent from a prompt set's block (None), shown as a dash."""
    record: str
    """The key of ``evaluate``'s mapping that records the scorer (``world_evaluator``: its weights and accuracy)."""

    def score(self, index: SampleIndex, photos: Sequence[Path]) -> dict[str, Any]:
        """``{prompt set: {metric: float}}`` for each prompt set with images (``metrics`` and any others), plus
        ``{record: ...}``; ``photos`` are the subject's real photos."""
        ...


@cache
def _registry() -> dict[str, MetricFamily]:
    families: dict[str, MetricFamily] = {}
    for family in load_plugins().metric_families:
        assert family.name not in families, f"metric family {family.name!r} is registered twice"
        families[family.name] = family
    return families


def metric_family(name: str) -> MetricFamily:
    """The registered metric family ``name``."""
    families = _registry()
    if name not in families:
        raise EqDiffError(f"metric family {name!r} is not registered (registered: {', '.join(families) or 'none'})")
    return families[name]
