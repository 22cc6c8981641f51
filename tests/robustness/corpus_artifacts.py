"""Corpus inputs beyond images: params files, prompts, model directories, concepts, checkpoints and outputs.

Builders return a ``harness.Invocation``; ``corpus.CASES`` pairs each with its stage and expected outcome.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from eqdiff.config import ModelConfig
from eqdiff.models.presets import preset_directory
from robustness.harness import Env, Invocation, generate_run, train_run
from robustness.images import photo

Builder = Callable[[Env, Path], Invocation]
LONG_PROMPT = "a {} " + " ".join(["very"] * 80) + " detailed photo"
"""Over 77 CLIP tokens once the subject slot is filled."""


# ------------------------------------------------------------------------------------------------- params
def params_file(text: str, stage: str = "train") -> Builder:
    """A params YAML file with ``text`` (``stage`` picks the other arguments)."""

    def build(env: Env, root: Path) -> Invocation:
        path = root / "params.yaml"
        path.write_text(text, encoding="utf-8")
        if stage == "augment":
            subject = env.subject
            argv = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(root / "out")]
        else:
            argv = train_run(env.subject, root / "out")
        return Invocation(["--params", str(path), *argv], absent=[root / "out"])

    return build


def bands_override(*overrides: str) -> Builder:
    def build(env: Env, root: Path) -> Invocation:
        subject = env.subject
        argv = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(root / "out")]
        extra = [a for o in overrides for a in ("-S", o)]
        return Invocation([*argv, "-S", "train.resolution=32", *extra], absent=[root / "out"])

    return build


# ------------------------------------------------------------------------------------------------ prompts
def prompt_file(content: bytes | None, *extra: str) -> Builder:
    """``generate`` with a prompt file holding ``content`` (None: the file does not exist)."""

    def build(env: Env, root: Path) -> Invocation:
        path = root / "prompts.txt"
        if content is not None:
            path.write_bytes(content)
        return Invocation(generate_run(env.concept, root / "out", path, *extra), absent=[root / "out"])

    return build


def malformed_prompt_spec(env: Env, root: Path) -> Invocation:
    argv = ["--concept", str(env.concept), "--out", str(root / "out"), "--prompts", "stylized.txt"]
    return Invocation(argv, absent=[root / "out"])


# ------------------------------------------------------------------------------------------ model folders
def tiny_copy(root: Path) -> Path:
    """A private copy of the tiny preset's diffusers directory (as a user's ``sd-v1`` folder would be)."""
    copy = root / "model"
    shutil.copytree(preset_directory(ModelConfig()), copy)
    return copy


def model_dir(kind: str, stage: str = "prior") -> Builder:
    """``model.preset=sd-v1`` with a missing directory, missing components or truncated weights."""

    def build(env: Env, root: Path) -> Invocation:
        if kind == "missing":
            path = root / "no-such-model"
        elif kind == "components":
            path = root / "model"
            (path / "unet").mkdir(parents=True)
            (path / "model_index.json").write_text("{}")
        else:
            path = tiny_copy(root)
            weights = path / "unet" / "diffusion_pytorch_model.safetensors"
            weights.write_bytes(weights.read_bytes()[:4096])
        overrides = ["-S", "model.preset=sd-v1", "-S", f"model.path={path}"]
        if stage == "prior":
            argv = ["--class-noun", "toy", "--out", str(root / "out"), "-S", "train.num_class_images=1"]
        else:
            argv = train_run(env.subject, root / "out")
        return Invocation([*argv, *overrides], absent=[root / "out"])

    return build


# ----------------------------------------------------------------------------------------------- concepts
def concept(kind: str) -> Builder:
    """``generate`` with a missing, truncated, non-JSON-manifest or foreign (other base model) concept."""

    def build(env: Env, root: Path) -> Invocation:
        path = root / "concept"
        if kind != "missing":
            shutil.copytree(env.concept, path)
        if kind == "truncated":
            weights = path / "concept.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif kind == "manifest":
            (path / "concept.json").write_text("{ not json", encoding="utf-8")
        elif kind == "foreign":
            # The concept's base model is now another one (the tiny preset with seed 1): its weights differ.
            manifest = json.loads((path / "concept.json").read_text())
            manifest["config"]["model"]["seed"] = 1
            (path / "concept.json").write_text(json.dumps(manifest))
        return Invocation(generate_run(path, root / "out", env.prompts), absent=[root / "out"])

    return build


def foreign_bands(env: Env, root: Path) -> Invocation:
    argv = train_run(env.subject, root / "out", "--bands", str(env.foreign_bands))
    return Invocation(argv, absent=[root / "out"])


def truncated_checkpoint(env: Env, root: Path) -> Invocation:
    """A resumable checkpoint of this very run whose tensors were truncated (e.g. a disk filled up)."""
    work = root / "work"
    shutil.copytree(Path(f"{env.concept}-work"), work)
    for state in work.glob("checkpoints/checkpoint-*/state.safetensors"):
        state.write_bytes(state.read_bytes()[:100])
    argv = train_run(env.subject, root / "out", "--work-dir", str(work))
    return Invocation(argv, absent=[root / "out"])


def evaluate_models(kind: str) -> Builder:
    def build(env: Env, root: Path) -> Invocation:
        if kind == "missing":
            model = root / "no-such-clip"
        else:
            model = root / "bert"
            model.mkdir()
            (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
        argv = ["--samples", str(env.samples), "--subject-dir", str(env.subject), "--out", str(root / "m.json")]
        return Invocation([*argv, "-S", f"evaluate.clip_model={model}"], absent=[root / "m.json"])

    return build


def missing_samples(env: Env, root: Path) -> Invocation:
    argv = ["--samples", str(root / "no-samples"), "--subject-dir", str(env.subject), "--out", str(root / "m.json")]
    return Invocation(argv, absent=[root / "m.json"])


# --------------------------------------------------------------------------------------- existing outputs
def foreign_samples_folder(env: Env, root: Path) -> Invocation:
    """``--out`` is a user's folder with their own files (not an eqdiff samples folder): left alone."""
    out = root / "holiday"
    out.mkdir()
    photo().save(out / "beach.png")
    return Invocation(generate_run(env.concept, out, env.prompts), untouched=[out])


def foreign_class_images(env: Env, root: Path) -> Invocation:
    out = root / "classes"
    out.mkdir()
    photo().save(out / "0000.png")
    argv = ["--class-noun", "toy", "--out", str(out), "-S", "train.num_class_images=1"]
    return Invocation(argv, untouched=[out])


def real_class_images(kind: str) -> Builder:
    def build(env: Env, root: Path) -> Invocation:
        real = root / "real"
        real.mkdir()
        photo().save(real / "a.png")
        if kind == "corrupt":
            (real / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
        argv = ["--class-noun", "toy", "--out", str(root / "out"), "-S", f"prior.real_images_dir={real}"]
        return Invocation([*argv, "-S", "train.num_class_images=2"], absent=[root / "out"])

    return build


# ------------------------------------------------------------------------------------------ small builders
def missing_subject(env: Env, root: Path) -> Invocation:
    argv = ["--subject-dir", str(root / "subject"), "--class-noun", "toy", "--out", str(root / "out")]
    return Invocation(argv + ["-S", "masks.backend=u2netp"], absent=[root / "out"])


def missing_mask(env: Env, root: Path) -> Invocation:
    from robustness.harness import make_subject, masks_run

    subject = make_subject(root)
    (subject / "masks" / "01.png").unlink()
    return Invocation(masks_run(subject, root / "out"), absent=[root / "out"])


def masks_backend(name: str) -> Builder:
    def build(env: Env, root: Path) -> Invocation:
        argv = ["--subject-dir", str(env.subject), "--class-noun", "toy", "--out", str(root / "out")]
        return Invocation(argv + ["-S", f"masks.backend={name}"], absent=[root / "out"])

    return build


def missing_params(env: Env, root: Path) -> Invocation:
    return Invocation(["--params", str(root / "params.yaml"), *train_run(env.subject, root / "out")], [root / "out"])


def blank_class_noun(env: Env, root: Path) -> Invocation:
    return Invocation(["--class-noun", " ", "--out", str(root / "out")], absent=[root / "out"])
