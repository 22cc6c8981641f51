"""Every stage with its output set to each of its inputs and to every folder above them: nothing changes.

One small pipeline is built for real (sample subject, masks, augment, bands, prior, train, generate, evaluate,
report) under one folder, plus the tiny preset's model folder it reads. Then every stage is run through the real
CLI with ``--out`` (and, for ``train``, ``--work-dir``) pointed at each of its inputs and at each folder
between them and the project root. Every such run must be refused with one line, exit 2, and leave every file
and folder of the project and of the model cache byte-identical (no lock, no staging folder, nothing).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from eqdiff import cli
from eqdiff.config import ModelConfig
from eqdiff.models.presets import preset_directory
from eqdiff.prep.sample import make_sample_subject
from robustness.harness import GENERATE_ARGS, TRAIN_ARGS, error_lines

RES = ["-S", "train.resolution=32"]
PRIOR = ["-S", "train.num_class_images=2", "-S", "prior.num_inference_steps=2", "-S", "prior.batch_size=2"]


def tree_state(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (hidden ones included): file bytes, ``<dir>``, or a link's target."""
    state: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            state[key] = "<dir>"
        else:
            state[key] = path.read_bytes()
    return state


def run(argv: list[str], cwd: Path) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(stderr):
        code = cli.main(argv)
    return code, stderr.getvalue()


@dataclass(frozen=True)
class Project:
    root: Path
    model: Path

    def __getattr__(self, name: str) -> Path:
        paths = {
            "subject": "data/toy",
            "real": "data/real",
            "masks": "runs/toy/masks",
            "augment": "runs/toy/augment",
            "bands": "runs/toy/bands",
            "prior": "runs/prior/toy",
            "concept": "runs/toy/F/concept",
            "prompts": "data/prompts/live.txt",
            "samples": "runs/toy/F/samples",
            "metrics": "runs/toy/F/metrics.json",
            "runs": "runs",
            "reports": "reports",
        }
        if name not in paths:
            raise AttributeError(name)
        return self.root / paths[name]


def stage_args(p: Project) -> dict[str, tuple[callable, list[Path]]]:
    """Per stage: ``argv(out)`` and the inputs it reads."""
    files = ["-S", "masks.backend=files", "-S", f"masks.files_dir={p.subject / 'masks'}"]
    subject_masks = ["--subject-dir", str(p.subject), "--masks", str(p.masks)]
    train = ["--subject-dir", str(p.subject), "--class-noun", "toy", "--masks", str(p.masks)]
    train += ["--augment", str(p.augment), "--bands", str(p.bands), "--prior", str(p.prior), *TRAIN_ARGS]
    train += ["-S", "train.with_prior_preservation=true", "-S", "train.num_class_images=2"]
    return {
        "masks": (
            lambda out: ["masks", "--subject-dir", str(p.subject), "--class-noun", "toy", "--out", out, *files],
            [p.subject, p.subject / "masks"],
        ),
        "augment": (lambda out: ["augment", *subject_masks, "--out", out, *RES], [p.subject, p.masks]),
        "bands": (lambda out: ["bands", *subject_masks, "--out", out, *RES], [p.subject, p.masks, p.model]),
        "prior": (lambda out: ["prior", "--class-noun", "toy", "--out", out, *RES, *PRIOR], [p.model]),
        "prior (real images)": (
            lambda out: ["prior", "--class-noun", "toy", "--out", out, *PRIOR, "-S", f"prior.real_images_dir={p.real}"],
            [p.real],
        ),
        "train": (
            lambda out: ["train", *train, "--out", out, "--work-dir", str(p.root / "work")],
            [p.subject, p.masks, p.augment, p.bands, p.prior, p.model],
        ),
        "train (work dir)": (
            lambda out: ["train", *train, "--out", str(p.root / "new-concept"), "--work-dir", out],
            [p.subject, p.masks, p.augment, p.bands, p.prior, p.model],
        ),
        "generate": (
            lambda out: (
                ["generate", "--concept", str(p.concept), "--out", out, "--prompts", f"unstylized={p.prompts}"]
                + GENERATE_ARGS
            ),
            [p.concept, p.prompts],
        ),
        "evaluate": (
            lambda out: ["evaluate", "--samples", str(p.samples), "--subject-dir", str(p.subject), "--out", out],
            [p.samples, p.subject],
        ),
        "report": (lambda out: ["report", "--runs", str(p.runs), "--out", out], [p.runs, p.subject]),
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The whole small pipeline, run for real once (every stage's inputs exist and are its real outputs)."""
    root = tmp_path_factory.mktemp("output-safety")
    p = Project(root, preset_directory(ModelConfig()))
    make_sample_subject(p.subject, num_photos=3)
    make_sample_subject(p.real, num_photos=2, seed=3, with_masks=False)
    p.prompts.parent.mkdir(parents=True)
    p.prompts.write_text("a {} on the beach\n", encoding="utf-8")
    args = stage_args(p)
    outputs = {
        "masks": p.masks,
        "augment": p.augment,
        "bands": p.bands,
        "prior": p.prior,
        "train": p.concept,
        "generate": p.samples,
        "evaluate": p.metrics,
        "report": p.reports,
    }
    for stage, out in outputs.items():
        code, err = run(args[stage][0](str(out)), root)
        assert code == 0, f"{stage}: {err}"
    return p


def targets(p: Project, inputs: list[Path]) -> list[Path]:
    """Each input and every folder above it up to the project root (or the model cache's root)."""
    found: list[Path] = []
    for path in inputs:
        top = p.model.parent if path == p.model else p.root
        for candidate in [path, *path.parents]:
            if candidate not in found:
                found.append(candidate)
            if candidate == top:
                break
    return found


STAGES = ["masks", "augment", "bands", "prior", "prior (real images)", "train", "train (work dir)"]
STAGES += ["generate", "evaluate", "report"]


@pytest.mark.parametrize("stage", STAGES)
def test_output_on_an_input_or_its_folders_changes_nothing(stage: str, project: Project):
    argv, inputs = stage_args(project)[stage]
    watched = [project.root, project.model.parent]
    for target in targets(project, inputs):
        before = [tree_state(root) for root in watched]
        code, err = run(argv(str(target)), project.root)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, f"{stage} --out {target}: {err}"
        assert str(target) in lines[0] or target.name in lines[0], lines[0]
        after = [tree_state(root) for root in watched]
        for root, old, new in zip(watched, before, after, strict=True):
            changed = sorted(set(old) ^ set(new) | {k for k in old.keys() & new.keys() if old[k] != new[k]})
            assert not changed, f"{stage} --out {target} changed {root}: {changed[:5]}"
