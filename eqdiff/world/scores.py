"""World-native metrics of one samples folder (docs/world-evaluators.md), beside CLIP-T / DINO-I:

- ``world_text``: the fraction of generated images whose recognised scene and style are the prompt's
  (``prompt_targets``: a scene prompt asks for that scene *and* the photo style; a style prompt for the style);
- ``world_identity``: the mean cosine of identity embeddings over all (generated, real) pairs, as DINO-I;
- ``world_identity_match``: the fraction of generated images whose five identity attributes all equal the real
  photos' majority prediction;
- ``style_leak``: of the images whose prompt asks for a style other than the photos' own (the photos' style as
  the evaluator reads most of them), the share drawn in the photos' style anyway: the attribute entanglement
  FDTE is for (docs/world.md, "Styled subject sets"); absent when no prompt of the set asks for another style;
- ``scene_leak``: the same for the scene, over the images whose prompt names a scene other than the photos'
  (the background entanglement MGDP is for).

Their calibration is the evaluators' accuracy measured on held-out renders (``evaluator.json``), which
``eqdiff evaluate`` copies into ``evaluation.json`` as ``world_evaluator``, with the real photos' majority identity,
style and scene and, under ``images``, every generated image's reading (each head's label and probabilities) and
its own value of each metric (``values``: 0 or 1, the identity cosine; a leak only where the image counts for it),
from which the report computes its intervals (``eqdiff.evaluation.intervals``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eqdiff.io.schemas.samples import SampleIndex
from eqdiff.prep.subjects import load_image
from eqdiff.world.evaluators import HEADS, IDENTITY_HEADS, WorldEvaluator, identity_embedding, matches, prompt_targets

WORLD_METRICS = ("world_text", "world_identity", "style_leak", "scene_leak")
"""The report's world columns: text alignment, subject fidelity, then the two leaks."""
_BATCH = 64
_DIGITS = 4
"""Probabilities in ``evaluation.json`` are rounded to this many decimals."""

Reading = tuple[list[dict[str, str]], dict[str, torch.Tensor], torch.Tensor]


def _recognise(evaluator: WorldEvaluator, paths: Sequence[Path]) -> Reading:
    """Predictions, ``{head: (N, K)}`` probabilities and ``(N, D)`` identity embeddings of image files, read
    ``_BATCH`` at a time."""
    predictions: list[dict[str, str]] = []
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
    embeddings = []
    for start in range(0, len(paths), _BATCH):
        probabilities = evaluator.probabilities([load_image(p) for p in paths[start : start + _BATCH]])
        best = {name: p.argmax(dim=-1).tolist() for name, p in probabilities.items()}
        predictions += [{name: HEADS[name][best[name][i]] for name in HEADS} for i in range(len(best["shape"]))]
        embeddings.append(identity_embedding(probabilities))
        for name, value in probabilities.items():
            parts[name].append(value)
    return predictions, {name: torch.cat(value) for name, value in parts.items()}, torch.cat(embeddings)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def leaks(predictions: Sequence[dict[str, str]], targets: Sequence[dict[str, str]], photos: dict[str, str]) -> dict:
    """``{"style_leak": share | None, "scene_leak": share | None}`` of images read with their ``predictions``,
    asked for ``targets`` (``prompt_targets``), against the photos' own ``{"style", "scene"}``."""
    out = {}
    for name in ("style", "scene"):
        asked_other = [
            p[name] == photos[name]
            for p, t in zip(predictions, targets, strict=True)
            if t.get(name, photos[name]) != photos[name]
        ]
        out[f"{name}_leak"] = _share(asked_other)
    return out


def world_scores(index: SampleIndex, photos: Sequence[Path], evaluator: WorldEvaluator) -> dict[str, Any]:
    """``{prompt set: {world_text, world_identity, world_identity_match, style_leak?, scene_leak?}}`` for each
    prompt set with images, plus ``"world_evaluator"``: where the evaluator came from, its sha256 and measured
    accuracy, the real photos' majority identity, style and scene, and each generated image's reading."""
    generated, probabilities, generated_embeddings = _recognise(evaluator, list(index.paths))
    real, _, real_embeddings = _recognise(evaluator, list(photos))
    majority = {name: Counter(p[name] for p in real).most_common(1)[0][0] for name in HEADS}
    photo_condition = {"style": majority["style"], "scene": majority["scene"]}
    targets = [prompt_targets(image.prompt, index.placeholder) for image in index.images]
    identity = (generated_embeddings.double() @ real_embeddings.double().T).mean(dim=1).tolist()
    values = [
        {
            "world_text": float(matches(generated[i], targets[i])),
            "world_identity": identity[i],
            **{k: v for k, v in leaks([generated[i]], [targets[i]], photo_condition).items() if v is not None},
        }
        for i in range(len(index.images))
    ]
    out: dict[str, Any] = {
        "world_evaluator": {
            "weights": evaluator.source,
            "sha256": evaluator.record["sha256"],
            "accuracy": evaluator.record["accuracy"],
            "real_identity": {name: majority[name] for name in IDENTITY_HEADS},
            "real_style": photo_condition["style"],
            "real_scene": photo_condition["scene"],
            "images": [
                {
                    "file": image.file,
                    "prompt_set": image.prompt_set,
                    "prompt_index": image.prompt_index,
                    "targets": targets[i],
                    "values": values[i],
                    "predictions": generated[i],
                    "probabilities": {
                        name: [round(float(v), _DIGITS) for v in probabilities[name][i]] for name in HEADS
                    },
                }
                for i, image in enumerate(index.images)
            ],
        }
    }
    for prompt_set in index.prompt_sets:
        rows = [i for i, im in enumerate(index.images) if im.prompt_set == prompt_set]
        aligned = [matches(generated[i], targets[i]) for i in rows]
        same = [all(generated[i][name] == majority[name] for name in IDENTITY_HEADS) for i in rows]
        cosines = generated_embeddings[rows].double() @ real_embeddings.double().T
        leaked = leaks([generated[i] for i in rows], [targets[i] for i in rows], photo_condition)
        out[prompt_set] = {
            "world_text": sum(aligned) / len(rows),
            "world_identity": float(cosines.mean()),
            "world_identity_match": sum(same) / len(rows),
            **{name: value for name, value in leaked.items() if value is not None},
        }
    return out
