"""Session-wide shared inputs of the reliability suite (one trained tiny concept, its samples, ...)."""

from __future__ import annotations

import pytest

from robustness.harness import Env


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """Built lazily: a case that needs no concept never trains one."""
    return Env(tmp_path_factory.mktemp("robustness-env"))
