"""World-native metrics of one samples folder (docs/world-evaluators.md), beside CLIP-T / DINO-I:

- ``world_text``: the fraction of generated images whose recognised scene and style are the prompt's
  (``prompt_targets``: a scene prompt asks for that scene *and* the photo style; a style prompt for the style);
- ``world_identity``: the mean cosine of identity embeddings over all (generated, real) pairs, as DINO-I;
- ``world_identity_match``: the fraction of generated images whose five identity attributes all equal the real
  photos' majority prediction.

Their calibration is the evaluators' accuracy measured on held-out renders (``evaluator.json``), which
``eqdiff evaluate`` copies into ``evaluation.json`` as ``world_evaluator``.
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

WORLD_METRICS = ("world_text", "world_identity")
"""The report's world columns: text alignment, subject fidelity."""
_BATCH = 64


def _recognise(evaluator: WorldEvaluator, paths: Sequence[Path]) -> tuple[list[dict[str, str]], torch.Tensor]:
    """Predictions and ``(N, D)`` identity embeddings of image files, read ``_BATCH`` at a time."""
    predictions: list[dict[str, str]] = []
    embeddings = []
    for start in range(0, len(paths), _BATCH):
        probabilities = evaluator.probabilities([load_image(p) for p in paths[start : start + _BATCH]])
        best = {name: p.argmax(dim=-1).tolist() for name, p in probabilities.items()}
        predictions += [{name: HEADS[name][best[name][i]] for name in HEADS} for i in range(len(best["shape"]))]
        embeddings.append(identity_embedding(probabilities))
    return predictions, torch.cat(embeddings)


def world_scores(index: SampleIndex, photos: Sequence[Path], evaluator: WorldEvaluator) -> dict[str, Any]:
    """``{prompt set: {world_text, world_identity, world_identity_match}}`` for each prompt set with images,
    plus ``"world_evaluator"``: where the evaluator came from, its sha256 and measured accuracy, and the real
    photos' majority identity."""
    generated, generated_embeddings = _recognise(evaluator, list(index.paths))
    real, real_embeddings = _recognise(evaluator, list(photos))
    majority = {name: Counter(p[name] for p in real).most_common(1)[0][0] for name in IDENTITY_HEADS}
    out: dict[str, Any] = {
        "world_evaluator": {
            "weights": evaluator.source,
            "sha256": evaluator.record["sha256"],
            "accuracy": evaluator.record["accuracy"],
            "real_identity": majority,
        }
    }
    for prompt_set in index.prompt_sets:
        rows = [i for i, im in enumerate(index.images) if im.prompt_set == prompt_set]
        aligned = [matches(generated[i], prompt_targets(index.images[i].prompt, index.placeholder)) for i in rows]
        same = [all(generated[i][name] == majority[name] for name in IDENTITY_HEADS) for i in rows]
        cosines = generated_embeddings[rows].double() @ real_embeddings.double().T
        out[prompt_set] = {
            "world_text": sum(aligned) / len(rows),
            "world_identity": float(cosines.mean()),
            "world_identity_match": sum(same) / len(rows),
        }
    return out
