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
    from eqdiff.models.components import load_components

    return load_components(ModelConfig())


@pytest.fixture
def subject_dir(tmp_path: Path) -> Path:
    """Three synthetic photos of one toy, with masks in ``masks/``."""
    from eqdiff.prep.sample import make_sample_subject

    return make_sample_subject(tmp_path / "toy", num_photos=3)
