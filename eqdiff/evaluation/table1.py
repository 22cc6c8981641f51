"""The paper's Table 1: its layout and its values (docs/method.md, "Report").

Layout: one row per method (here, per variant A-F), then the columns CLIP-T, CLIP-I, DINO-I for the unstylized
prompts and again for the stylized ones; with ``world``, also World-T and World-I (the world evaluators' text
alignment and identity similarity, docs/world-evaluators.md) after each set's three. The paper's own rows are
reference values, always shown apart from the measured rows and marked as the paper's; they are averages over
the paper's subjects, with real CLIP/DINO weights, so they compare with an averaged table of a calibrated run
only. Prompt sets of other names (DreamBench's ``live``, ...) get their own column groups after the paper's two.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from eqdiff.evaluation.metric_registry import metric_family
from eqdiff.evaluation.records import METRICS

PAPER_SETS = ("unstylized", "stylized")
"""The prompt sets of the paper's Table 1, its two column groups: always shown, first."""

METRIC_TITLES = {
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "dino_i": "DINO-I",
    "world_text": "World-T",
    "world_identity": "World-I",
    "style_leak": "Style leak",
    "scene_leak": "Scene leak",
}
PAPER_SOURCE = "Equilibrated Diffusion (ACM MM 2024), Table 1"
PAPER_ROWS: dict[str, dict[str, dict[str, float]]] = {
    # Copied from the paper's Table 1 (also in docs/method.md "Report"): "Ours" and the Custom Diffusion baseline.
    "EqDiff (Ours)": {
        "unstylized": {"clip_t": 0.782, "clip_i": 0.810, "dino_i": 0.670},
        "stylized": {"clip_t": 0.790, "clip_i": 0.755, "dino_i": 0.584},
    },
    "Custom Diffusion": {
        "unstylized": {"clip_t": 0.770, "clip_i": 0.792, "dino_i": 0.634},
        "stylized": {"clip_t": 0.774, "clip_i": 0.718, "dino_i": 0.505},
    },
}


def columns(world: bool) -> tuple[str, ...]:
    """The metrics of one prompt set's columns: the paper's three; with ``world``, the registered ``world`` metric
    family's (``eqdiff.evaluation.metric_registry``) first, then the paper's three. The world metrics lead because
    they are the calibrated ones on the world preset, whose CLIP / DINO models have random weights."""
    return (*metric_family("world").metrics, *METRICS) if world else METRICS


def table_sets(names: Iterable[str]) -> tuple[str, ...]:
    """The column groups of a table of prompt sets ``names``: the paper's two, then the others by name."""
    return (*PAPER_SETS, *sorted(set(names) - set(PAPER_SETS)))


def _cells(
    sets: dict[str, Any], prompt_sets: tuple[str, ...], world: bool = False, intervals: dict | None = None
) -> list[str]:
    """Three (seven with ``world``) numbers per prompt set; dashes where a prompt set or a value is missing (a leak
    where no prompt of the set asks for another style or scene). ``intervals`` ({set: {metric: [value, low,
    high]}}): the 95 % interval after the number, in brackets."""
    cells = []
    for s in prompt_sets:
        for k in columns(world):
            value = sets.get(s, {}).get(k)
            bounds = (intervals or {}).get(s, {}).get(k)
            text = "—" if value is None else f"{value:.3f}"
            cells.append(f"{text} [{bounds[1]:.2f}, {bounds[2]:.2f}]" if value is not None and bounds else text)
    return cells


def html_table(
    rows: dict[str, dict[str, Any]],
    caption: str,
    subject: str = "",
    paper: bool = False,
    world: bool = False,
    intervals: dict | None = None,
) -> str:
    """An HTML table in Table 1's layout; ``rows`` = {variant: {prompt set: {clip_t, clip_i, dino_i, ...}}}.

    ``paper``: append the paper's rows, class ``paper``, labelled "paper:". ``world``: add the World-T and
    World-I columns; ``intervals`` as ``markdown_table``'s. The table has class ``table1`` and ``data-subject``
    (empty for the average); measured rows carry ``data-variant``.
    """
    prompt_sets = table_sets(s for sets in rows.values() for s in sets)
    groups = "".join(f'<th colspan="{len(columns(world))}">{html.escape(s)}</th>' for s in prompt_sets)
    titles = "".join(f"<th>{METRIC_TITLES[k]}</th>" for _ in prompt_sets for k in columns(world))
    lines = [
        f'<table class="table1" data-subject="{html.escape(subject)}">',
        f"<caption>{html.escape(caption)}</caption>",
        f'<tr><th rowspan="2">Variant</th>{groups}</tr>',
        f"<tr>{titles}</tr>",
    ]
    for variant, sets in rows.items():
        cells = "".join(f"<td>{c}</td>" for c in _cells(sets, prompt_sets, world, (intervals or {}).get(variant)))
        lines.append(f'<tr data-variant="{html.escape(variant)}"><td>{html.escape(variant)}</td>{cells}</tr>')
    if paper:
        for method, sets in PAPER_ROWS.items():
            cells = "".join(f"<td>{c}</td>" for c in _cells(sets, prompt_sets, world))
            label = f"paper: {method}"
            lines.append(f'<tr class="paper" title="{PAPER_SOURCE}"><td>{html.escape(label)}</td>{cells}</tr>')
    return "\n".join(lines + ["</table>"])


def markdown_table(
    rows: dict[str, dict[str, Any]], paper: bool = False, world: bool = False, intervals: dict | None = None
) -> list[str]:
    """The same table in Markdown (``table.md``); the paper's rows are labelled "paper: <method>"; ``intervals``
    ({variant: {set: {metric: [value, low, high]}}}) adds each number's 95 % interval."""
    prompt_sets = table_sets(s for sets in rows.values() for s in sets)
    header = " | ".join(f"{s} {METRIC_TITLES[k]}" for s in prompt_sets for k in columns(world))
    lines = [f"| Variant | {header} |", "|---|" + "---:|" * (len(prompt_sets) * len(columns(world)))]
    for variant, sets in rows.items():
        cells = _cells(sets, prompt_sets, world, (intervals or {}).get(variant))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if paper:
        for method, sets in PAPER_ROWS.items():
            lines.append(f"| paper: {method} | " + " | ".join(_cells(sets, prompt_sets, world)) + " |")
    return lines


def world_sentence(evaluator: dict[str, Any]) -> str:
    """Which evaluators produced World-T / World-I, with their accuracy on held-out world renders."""
    heads = evaluator["accuracy"]["heads"]
    return (
        "World-T = fraction of images whose recognised scene and style are the prompt's; World-I = mean cosine of"
        " the identity embeddings over all (generated, real) pairs. Both come from the world evaluators"
        f" ({evaluator['weights']}, sha256 {evaluator['sha256'][:12]}), whose accuracy on held-out world renders is"
        f" style {heads['style']:.1%}, scene {heads['scene']:.1%}, all five identity attributes"
        f" {evaluator['accuracy']['identity']:.1%} (docs/world-evaluators.md)."
    )
