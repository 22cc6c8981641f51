"""Corpus cases of params files and artefacts read back (concepts, checkpoints, logs,
manifests, caches): each is user input as much as a photo is, and is refused with one line when it is wrong.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from eqdiff import cli
from eqdiff.io.artifacts import load_tensors
from robustness.corpus_artifacts import Builder, params_file
from robustness.corpus_limits import override, stage_argv
from robustness.harness import Case, Env, Invocation, generate_run, make_subject, masks_run, train_run


# ------------------------------------------------------------------------------------------------ params
def params_bytes(data: bytes) -> Builder:
    def build(env: Env, root: Path) -> Invocation:
        (root / "params.yaml").write_bytes(data)
        argv = ["--params", str(root / "params.yaml"), *stage_argv("masks", env, root)]
        return Invocation(argv, absent=[root / "out"], untouched=[root / "params.yaml"])

    return build


def grounding_dino_config(text: str | None) -> Builder:
    """grounded-sam with a config file holding ``text`` (None: a shipped config by name, checkpoints missing).

    Every other model file exists, so the config is what is read next; code in it must never run (it would
    create ``PWNED``).
    """

    def build(env: Env, root: Path) -> Invocation:
        subject = make_subject(root)
        for name in ("gdino.pth", "sam.pth"):
            (root / name).write_bytes(b"\0" * 16)
        (root / "bert").mkdir()
        config = root / "gdino.py"
        if text is not None:
            config.write_text(text.replace("PWNED", str(root / "PWNED")), encoding="utf-8")
        paths = {
            "grounding_dino_config": str(config) if text is not None else "GroundingDINO_SwinT_OGC",
            "grounding_dino_checkpoint": str(root / ("gdino.pth" if text is not None else "missing.pth")),
            "sam_checkpoint": str(root / "sam.pth"),
            "text_encoder_dir": str(root / "bert"),
        }
        argv = masks_run(subject, root / "out", backend="grounded-sam")
        argv += [a for key, value in paths.items() for a in ("-S", f"masks.{key}={value}")]
        return Invocation(argv, absent=[root / "out", root / "PWNED"], untouched=[subject])

    return build


CODE_CONFIG = 'import os\nos.makedirs("PWNED")\nmodelname = "groundingdino"\n'
CALL_CONFIG = 'modelname = "groundingdino"\nhidden_dim = __import__("os").makedirs("PWNED")\n'
BASE_CONFIG = '_base_ = ["other.py"]\nmodelname = "groundingdino"\n'
PARTIAL_CONFIG = 'modelname = "groundingdino"\nbatch_size = 1\n'


# --------------------------------------------------------------------------------------------- concepts
def _rewrite_tensors(path: Path, change) -> None:
    tensors = load_tensors(path)
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "eqdiff-concept/1"})


def concept_edit(manifest=None, tensors=None) -> Builder:
    """``generate`` with a copy of the shared concept whose manifest or tensors ``manifest``/``tensors`` changed."""

    def build(env: Env, root: Path) -> Invocation:
        concept = Path(shutil.copytree(env.concept, root / "concept"))
        if manifest is not None:
            data = json.loads((concept / "concept.json").read_text())
            (concept / "concept.json").write_text(json.dumps(manifest(data)))
        if tensors is not None:
            _rewrite_tensors(concept / "concept.safetensors", tensors)
        return Invocation(generate_run(concept, root / "out", env.prompts), absent=[root / "out"], untouched=[concept])

    return build


def _without(key: str):
    return lambda data: {k: v for k, v in data.items() if k != key}


def _set(key: str, value):
    return lambda data: {**data, key: value}


def _nan_embeddings(tensors):
    tensors["frequency_embeddings"][0, 0] = float("nan")


def _half_embeddings(tensors):
    tensors["frequency_embeddings"] = tensors["frequency_embeddings"].half()


def _flat_embeddings(tensors):
    tensors["frequency_embeddings"] = tensors["frequency_embeddings"].reshape(-1)


def _inf_processor(tensors):
    name = next(k for k in tensors if k not in ("frequency_embeddings", "reference_image"))
    tensors[name] = torch.full_like(tensors[name], float("inf"))


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_state(edit) -> Builder:
    """Resume from a copy of the shared run's work dir whose every ``state.json`` went through ``edit``."""

    def build(env: Env, root: Path) -> Invocation:
        work = Path(shutil.copytree(Path(f"{env.concept}-work"), root / "work"))
        for state in work.glob("checkpoints/checkpoint-*/state.json"):
            state.write_text(edit(json.loads(state.read_text()), state.parent.name))
        argv = train_run(env.subject, root / "out", "--work-dir", str(work))
        return Invocation(argv, absent=[root / "out"])

    return build


def half_written_losses(env: Env, root: Path) -> Invocation:
    """A killed run's half-written last ``losses.jsonl`` line: the resumed run trims it; the log stays valid."""
    work = Path(shutil.copytree(Path(f"{env.concept}-work"), root / "work"))
    log = work / "losses.jsonl"
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"step": 5, "loss/to')

    def check() -> None:
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        assert [r["step"] for r in records] == [1, 2, 3, 4], records
        assert (root / "out" / "concept.json").is_file()

    return Invocation(train_run(env.subject, root / "out", "--work-dir", str(work)), check=check)


# ------------------------------------------------------------------------------------ manifests, caches
def samples_file(value) -> Builder:
    """``evaluate`` on a copy of the shared samples whose first image is listed as ``value``."""

    def build(env: Env, root: Path) -> Invocation:
        samples = Path(shutil.copytree(env.samples, root / "s" / "samples"))
        first = next(samples.rglob("*_00.png"))
        shutil.copy(first, root / "x.png")  # the escaping path exists: it must still not be followed
        index = json.loads((samples / "index.json").read_text())
        index["images"][0]["file"] = value if value != "ABSOLUTE" else str(root / "x.png")
        (samples / "index.json").write_text(json.dumps(index))
        argv = ["--samples", str(samples), "--subject-dir", str(env.subject), "--out", str(root / "m.json")]
        return Invocation(argv, absent=[root / "m.json"], untouched=[samples])

    return build


def prior_manifest(images) -> Builder:
    """``train --prior`` on a class-image folder whose ``prior.json`` lists ``images``."""

    def build(env: Env, root: Path) -> Invocation:
        prior = root / "p" / "prior"
        prior.mkdir(parents=True)
        Image.new("RGB", (32, 32), (9, 9, 9)).save(root / "x.png")
        (prior / "prior.json").write_text(json.dumps({"key": {}, "images": images}))
        extra = ["--prior", str(prior), "-S", "train.with_prior_preservation=true", "-S", "train.num_class_images=1"]
        return Invocation(train_run(env.subject, root / "out", *extra), absent=[root / "out"])

    return build


def _quiet_cli(argv: list[str]) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(argv) == 0


def stale_cache(stage: str, edit: str) -> Builder:
    """A ``stage`` cache made from a copy of the subject, then a photo or mask edited in place (same name)."""

    def build(env: Env, root: Path) -> Invocation:
        subject = Path(shutil.copytree(env.subject, root / "toy"))
        cache = root / stage
        args = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(cache)]
        _quiet_cli([stage, *args, "-S", "train.resolution=32", "-S", "augment.views_per_photo=1"])
        target = subject / ("01.png" if edit == "photo" else "masks/01.png")
        image = Image.open(target)
        image.load()
        image.putpixel((5, 5), (1, 2, 3) if image.mode == "RGB" else 255 - image.getpixel((5, 5)))
        image.save(target)
        argv = train_run(subject, root / "out", f"--{stage}", str(cache))
        return Invocation(argv, absent=[root / "out"], untouched=[cache])

    return build


def augment_view_escapes(env: Env, root: Path) -> Invocation:
    """An augment manifest naming a view outside its folder (``../../x.png``): refused, never read."""
    subject = Path(shutil.copytree(env.subject, root / "toy"))
    cache = root / "augment"
    args = ["--subject-dir", str(subject), "--masks", str(subject / "masks"), "--out", str(cache)]
    _quiet_cli(["augment", *args, "-S", "train.resolution=32", "-S", "augment.views_per_photo=1"])
    manifest = json.loads((cache / "augment.json").read_text())
    manifest["views"]["00"] = ["../../x.png"]
    (cache / "augment.json").write_text(json.dumps(manifest))
    return Invocation(train_run(subject, root / "out", "--augment", str(cache)), absent=[root / "out"])


G_PARAMS, G_ART = "params", "artefacts read back"

PARAMS_CASES: list[Case] = [
    Case(
        "params: misspelt section augmnt", G_PARAMS, "augment", params_file("augmnt:\n  seed: 1\n", "augment"), "augmnt"
    ),
    Case("params: duplicate key", G_PARAMS, "train", params_file("train:\n  steps: 2\n  steps: 3\n"), "'steps'"),
    Case("params: duplicate section", G_PARAMS, "train", params_file("train: {}\ntrain: {steps: 3}\n"), "'train'"),
    Case(
        "params: duplicate key, flow style", G_PARAMS, "train", params_file("mgdp: {mode: off, mode: mgdp}\n"), "'mode'"
    ),
    Case("params: -S unknown section", G_PARAMS, "masks", override("masks", "maks.backend=files"), "maks"),
    Case("params: -S value not YAML", G_PARAMS, "masks", override("masks", "masks.threshold=[0.5"), "masks.threshold"),
    Case("params: -S key without a section", G_PARAMS, "train", override("train", "=3"), "=3"),
    Case("params: file not UTF-8", G_PARAMS, "masks", params_bytes(b"masks:\n  backend: \xff\xfe\n"), "params.yaml"),
    Case("params: top level is a list", G_PARAMS, "masks", params_bytes(b"- masks\n- train\n"), "params.yaml"),
    Case(
        "params: grounding_dino_config runs code", G_PARAMS, "masks", grounding_dino_config(CODE_CONFIG), "gdino.py:1"
    ),
    Case("params: grounding_dino_config calls", G_PARAMS, "masks", grounding_dino_config(CALL_CONFIG), "gdino.py:2"),
    Case("params: grounding_dino_config _base_", G_PARAMS, "masks", grounding_dino_config(BASE_CONFIG), "_base_"),
    Case(
        "params: grounding_dino_config incomplete",
        G_PARAMS,
        "masks",
        grounding_dino_config(PARTIAL_CONFIG),
        "not a usable GroundingDINO config",
    ),
    Case("params: shipped GroundingDINO config by name", G_PARAMS, "masks", grounding_dino_config(None), "missing.pth"),
]
"""Params cases, in table order."""

ARTEFACT_CASES: list[Case] = [
    Case(
        "artefact: concept.json without placeholder",
        G_ART,
        "generate",
        concept_edit(_without("placeholder")),
        "placeholder",
    ),
    Case(
        "artefact: concept.json resolution a string",
        G_ART,
        "generate",
        concept_edit(_set("resolution", "64")),
        "resolution",
    ),
    Case("artefact: concept.json not a mapping", G_ART, "generate", concept_edit(lambda d: [d]), "concept.json"),
    Case(
        "artefact: concept.json unknown model preset",
        G_ART,
        "generate",
        concept_edit(lambda d: {**d, "config": {**d["config"], "model": {"preset": "sd-xl"}}}),
        "config.model.preset",
    ),
    Case("artefact: concept tensor NaN", G_ART, "generate", concept_edit(tensors=_nan_embeddings), "NaN"),
    Case("artefact: concept tensor inf", G_ART, "generate", concept_edit(tensors=_inf_processor), "inf"),
    Case("artefact: concept tensor fp16", G_ART, "generate", concept_edit(tensors=_half_embeddings), "float16"),
    Case("artefact: concept tensor wrong shape", G_ART, "generate", concept_edit(tensors=_flat_embeddings), "shape"),
    Case(
        "artefact: checkpoint step not a number",
        G_ART,
        "train",
        checkpoint_state(lambda m, name: json.dumps({**m, "step": "x"})),
        "state.json",
    ),
    Case(
        "artefact: checkpoint step of another folder",
        G_ART,
        "train",
        checkpoint_state(lambda m, name: json.dumps({**m, "step": m["step"] + 100})),
        "state.json",
    ),
    Case(
        "artefact: checkpoint param_groups missing",
        G_ART,
        "train",
        checkpoint_state(lambda m, name: json.dumps({k: v for k, v in m.items() if k != "param_groups"})),
        "param_groups",
    ),
    Case(
        "artefact: losses.jsonl half-written line", G_ART, "train", half_written_losses, None, "resumed, line trimmed"
    ),
    Case("artefact: samples index names ../../x.png", G_ART, "evaluate", samples_file("../../x.png"), "images[0].file"),
    Case(
        "artefact: samples index names an absolute path", G_ART, "evaluate", samples_file("ABSOLUTE"), "images[0].file"
    ),
    Case("artefact: samples index file a number", G_ART, "evaluate", samples_file(7), "images[0]"),
    Case("artefact: prior.json names ../x.png", G_ART, "train", prior_manifest(["../../x.png"]), "prior.json"),
    Case(
        "artefact: prior.json names an absolute path", G_ART, "train", prior_manifest(["/etc/hostname"]), "prior.json"
    ),
    Case("artefact: augment.json names ../../x.png", G_ART, "train", augment_view_escapes, "augment.json"),
    Case("artefact: photo edited after bands", G_ART, "train", stale_cache("bands", "photo"), "other contents"),
    Case("artefact: mask edited after bands", G_ART, "train", stale_cache("bands", "mask"), "other contents"),
    Case("artefact: photo edited after augment", G_ART, "train", stale_cache("augment", "photo"), "other contents"),
]
"""Read-back artefact cases, in table order."""
