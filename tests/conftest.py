"""Shared fixtures: tiny real components built offline, a synthetic subject, one CPU thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(1)  # tiny tensors are overhead-bound; more threads only oversubscribe 2-core CI

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DREAMBOOTH = SHARED / "data" / "dreambooth-512"


@pytest.fixture(scope="session", autouse=True)
def _eqdiff_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny preset once per session in a private cache."""
    cache = tmp_path_factory.mktemp("eqdiff-cache")
    os.environ["EQDIFF_CACHE"] = str(cache)
    return cache


@pytest.fixture
def tiny_components():
    """Fresh tiny-preset components (loaded from the saved directory, like a real checkpoint)."""
    from eqdiff.config import ModelConfig
    from eqdiff.models import load_components

    return load_components(ModelConfig())


@pytest.fixture
def subject_dir(tmp_path: Path) -> Path:
    """Three synthetic photos of one toy, with masks in ``masks/``."""
    from eqdiff.sample import make_sample_subject

    return make_sample_subject(tmp_path / "toy", num_photos=3)


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
