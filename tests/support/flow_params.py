"""A params file for running the flows in-process on tiny real models (tests/e2e/test_flows.py,
tests/robustness/test_prefect_retries.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from eqdiff.method.prompts import builtin_prompt_file
from eqdiff.prep.classes import class_slug
from support.pipeline_copy import REPO, TINY


def write_params(root: Path, subjects: list[dict], variants: list[str]) -> Path:
    """The repository's params.yaml at tiny settings, with these subjects (``{name, dir, class_noun}``) and
    variants, MLflow under ``root``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    classes = {class_slug(s["class_noun"]): s["class_noun"] for s in subjects}
    subjects = [{"name": s["name"], "dir": s["dir"], "class": class_slug(s["class_noun"])} for s in subjects]
    params.update(subjects=subjects, classes=classes, variants=variants)
    params["prompts"] = {name: str(builtin_prompt_file(f"demo_{name}")) for name in ("unstylized", "stylized")}
    params["orchestration"].update(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", n_workers=2)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
