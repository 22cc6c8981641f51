"""Safe loading, safetensors-only artefacts, output locks and NaN/inf stops (docs/robustness.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from eqdiff.config import AugmentConfig, MethodConfig
from eqdiff.errors import TrainingError
from eqdiff.models.components import load_components
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.checkpoints import load_checkpoint
from eqdiff.training.data import prepare_training_data
from eqdiff.training.recipe import EqDiffRecipe
from robustness.harness import Case as _Case
from robustness.harness import error_lines, masks_run, run_case

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("eqdiff", "tasks", "flows", "bench")
UNSAFE = {
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"),
    "pickle.load(s)": re.compile(r"\bpickle\.loads?\("),
    "cloudpickle.load(s)": re.compile(r"\bcloudpickle\.loads?\("),
    "joblib.load": re.compile(r"\bjoblib\.load\("),
    "np.load with allow_pickle=True": re.compile(r"\b(np|numpy)\.load\([^)]*allow_pickle\s*=\s*True"),
}


def python_files() -> list[Path]:
    return [p for name in SCANNED if (REPO / name).is_dir() for p in sorted((REPO / name).rglob("*.py"))]


def test_no_unsafe_deserialisation_in_the_code():
    assert python_files(), "nothing scanned"
    found = []
    for path in python_files():
        text = path.read_text(encoding="utf-8")
        for what, pattern in UNSAFE.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert not found, "\n".join(found)


def test_the_scanner_catches_what_it_looks_for():
    bad = "torch.load(path)\npickle.loads(b)\nnp.load(f, allow_pickle=True)\njoblib.load(p)\n"
    good = "torch.load(path, map_location='cpu', weights_only=True)\n"
    assert sum(bool(p.search(bad)) for p in UNSAFE.values()) == 4
    assert not any(p.search(good) for p in UNSAFE.values())


def test_concept_and_checkpoints_hold_only_safetensors_and_json(env):
    files = [p for p in env.concept.rglob("*") if p.is_file()]
    files += [p for p in Path(f"{env.concept}-work").rglob("*") if p.is_file() and p.name != "losses.jsonl"]
    assert files and any("checkpoint-" in str(p) for p in files)
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".png"}, sorted(map(str, files))
    assert not [p for p in files if p.suffix == ".png" and "validation" not in p.parts]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from eqdiff.io.artifacts import OutputLock
    with OutputLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the OutputLock of ``tmp_path / 'out'``."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield out
    holder.kill()
    holder.wait()


def test_a_second_writer_process_refuses(held_lock):
    code = f"from eqdiff.io.artifacts import OutputLock\nwith OutputLock({str(held_lock)!r}): pass"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "another run is writing this output directory" in result.stderr


def test_a_real_stage_refuses_a_locked_output(held_lock, env, tmp_path):
    def build(_env, root):
        from robustness.harness import Invocation, make_subject

        return Invocation(masks_run(make_subject(root), held_lock))

    case = _Case("locked output", "outputs", "masks", build, "another run is writing")
    _, observed = run_case(case, env, tmp_path / "case")
    lines = error_lines(observed.stderr)
    assert observed.code == 2 and len(lines) == 1 and "another run is writing this output directory" in lines[0]
    assert not held_lock.exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(subject_dir, tmp_path):
    params = {
        "train": {"resolution": 32, "steps": 6, "checkpointing_steps": 2, "with_prior_preservation": False},
    }
    config = MethodConfig.from_dict(params).resolved()
    components = load_components(config.model)
    subject = discover_subject(subject_dir, "toy")
    data = prepare_training_data(
        components.vae, subject, config, AugmentConfig(views_per_photo=1), [], masks_dir=subject_dir / "masks"
    )
    saved: dict[str, torch.Tensor] = {}

    def diverge_after_checkpoint(step: int, values: dict[str, float]) -> None:
        if step == 2:  # the checkpoint of step 2 is written right after this callback
            saved.update({k: v.detach().clone() for k, v in recipe.parameters.items()})
            # An infinite learning rate: step 3's update makes the weights non-finite, step 4's loss is NaN.
            recipe.optimizer.param_groups[0]["lr"] = float("inf")

    recipe = EqDiffRecipe(config, components, data, "toy", "toy", tmp_path / "work", diverge_after_checkpoint, False)
    recipe.setup()
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step 4") as error:
        recipe.train()
    assert "\n" not in str(error.value) and "checkpoint" in str(error.value)
    checkpoints = tmp_path / "work" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"]
    step, weights = load_checkpoint(checkpoints / "checkpoint-2", recipe.optimizer)
    assert step == 2 and weights.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(weights[name], value) and torch.isfinite(value).all(), name
