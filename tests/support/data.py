"""Paths to the shared data beside the repository (read by path only) and the tiny preset's fast params."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DREAMBOOTH = SHARED / "data" / "dreambooth-512"


def dreambooth_subjects() -> list[Path]:
    if not DREAMBOOTH.is_dir():
        return []
    return sorted(p for p in DREAMBOOTH.iterdir() if p.is_dir())


requires_dreambooth = pytest.mark.skipif(
    not DREAMBOOTH.is_dir(), reason=f"{DREAMBOOTH} not present (the DreamBooth data is read by path only)"
)


def fast_params(**sections) -> dict:
    """Params for fast CPU runs of the tiny preset: 32 px, few steps, few class images, 2-step sampling."""
    params = {
        "train": {"resolution": 32, "steps": 3, "num_class_images": 2, "checkpointing_steps": 0},
        "prior": {"num_inference_steps": 2, "batch_size": 2},
        "generate": {"num_inference_steps": 2, "batch_size": 1},
        "augment": {"views_per_photo": 2},
    }
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    return params
