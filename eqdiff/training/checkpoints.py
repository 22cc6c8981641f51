"""Resumable training-state checkpoints (docs/robustness.md): ``checkpoint-<step>/`` under a run's work folder.

A checkpoint holds the trainable tensors, AdamW's state and the step, all safetensors + JSON; nothing is pickled
and nothing is unpickled. Written atomically; a resumed run picks the newest complete one of the same run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from eqdiff.io.artifacts import load_tensors, read_json, save_tensors, staged_directory, write_json
from eqdiff.models.concept import ConceptError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def save_checkpoint(
    root: Path,
    step: int,
    run_key: str,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    total_limit: int,
) -> Path:
    """Write ``root/checkpoint-<step>`` atomically; keep it and the newest others up to ``total_limit``."""
    state = optimizer.state_dict()
    tensors = {f"weights.{k}": v for k, v in weights.items()}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value)
    with staged_directory(root / f"checkpoint-{step}") as staging:
        save_tensors(staging / "state.safetensors", tensors)
        write_json(staging / "state.json", {"step": step, "run_key": run_key, "param_groups": state["param_groups"]})
    if total_limit > 0:
        # the one just written is always kept (an older run's later checkpoints must not push it out)
        others = [s for s in list_checkpoints(root) if s != step]
        for old in others[: len(others) - (total_limit - 1)]:
            shutil.rmtree(root / f"checkpoint-{old}", ignore_errors=True)
    return root / f"checkpoint-{step}"


def list_checkpoints(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    steps = [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(steps)


def latest_checkpoint(root: Path, run_key: str, max_step: int) -> Path | None:
    """The newest complete checkpoint of this run (same ``run_key``) at or below ``max_step``, or None.

    A checkpoint past ``max_step`` (an earlier run with more ``train.steps``) is kept but never resumed from:
    the concept must be the one ``max_step`` steps make."""
    for step in reversed([s for s in list_checkpoints(root) if s <= max_step]):
        path = root / f"checkpoint-{step}"
        try:
            meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("run_key") == run_key:
            return path
    return None


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, torch.Tensor]]:
    """Restore AdamW's state into ``optimizer``; return (step, trainable weights)."""
    meta = read_json(path / "state.json")
    expected = int(_CHECKPOINT.match(path.name).group(1))
    step = meta.get("step") if isinstance(meta, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step != expected:
        raise ConceptError(f"{path / 'state.json'}: step is {step!r}, expected {expected} (the folder's step)")
    if not isinstance(meta.get("param_groups"), list) or not all(isinstance(g, dict) for g in meta["param_groups"]):
        raise ConceptError(f"{path / 'state.json'}: param_groups missing or not a list of AdamW groups")
    tensors = load_tensors(path / "state.safetensors")
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    for name, tensor in tensors.items():  # a checkpoint is only ever written from finite fp32 weights
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ConceptError(f"{path / 'state.safetensors'}: tensor {name!r} is not finite floating point")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, TypeError) as exc:
        raise ConceptError(f"{path}: optimizer state does not fit this run ({str(exc).splitlines()[0]})") from None
    return step, weights
