"""Class images for prior preservation (docs/method.md, Losses and optimisation): seeded, batched, resumable
generation; real folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eqdiff.config import PriorConfig
from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError
from eqdiff.prep.prior import copy_real_class_images, generate_class_images, image_seed, load_class_images

FAST = PriorConfig(num_inference_steps=2, batch_size=2, seed=5)


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_generation_is_resumable_with_identical_bytes(tiny_components, tmp_path):
    out = tmp_path / "prior"
    paths = generate_class_images(tiny_components, "toy", out, 3, FAST, 64)
    assert [p.name for p in paths] == ["0000.png", "0001.png", "0002.png"]
    first = _snapshot(out)
    pixels = [np.asarray(Image.open(p)) for p in paths]
    assert all(Image.open(p).size == (64, 64) for p in paths)
    assert not np.array_equal(pixels[0], pixels[1])  # per-image seeds
    assert json.loads((out / "prior.json").read_text())["key"]["prompt"] == "toy"

    (out / "0001.png").unlink()  # a run killed after two images, or a user deleting one
    generate_class_images(tiny_components, "toy", out, 3, FAST, 64)
    second = _snapshot(out)
    assert {name: v[0] for name, v in second.items()} == {name: v[0] for name, v in first.items()}
    for kept in ("0000.png", "0002.png", "prior.json"):  # kept files are not rewritten
        assert second[kept] == first[kept]
    assert load_class_images(out, 2) == paths[:2]


def test_other_settings_regenerate_and_foreign_images_are_refused(tiny_components, tmp_path):
    out = tmp_path / "prior"
    generate_class_images(tiny_components, "toy", out, 2, FAST, 64)
    before = (out / "0000.png").read_bytes()
    generate_class_images(tiny_components, "toy", out, 2, PriorConfig(num_inference_steps=2, seed=6), 64)
    assert (out / "0000.png").read_bytes() != before
    assert json.loads((out / "prior.json").read_text())["key"]["seed"] == 6

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    Image.new("RGB", (64, 64)).save(foreign / "0000.png")
    with pytest.raises(ArtifactError, match="without a prior.json"):
        generate_class_images(tiny_components, "toy", foreign, 2, FAST, 64)


def test_real_class_images_are_validated_and_copied(tmp_path):
    source = tmp_path / "real"
    source.mkdir()
    for i, mode in enumerate(["RGB", "L", "RGBA"]):
        Image.new(mode, (40 + i, 30)).save(source / f"img{i}.png")
    paths = copy_real_class_images(source, tmp_path / "out", 3)
    assert [Image.open(p).mode for p in paths] == ["RGB", "RGB", "RGB"]
    assert Image.open(paths[2]).size == (42, 30)
    with pytest.raises(DataError, match="found 3 class image"):
        copy_real_class_images(source, tmp_path / "out2", 4)
    (source / "img1.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="img1.png"):
        copy_real_class_images(source, tmp_path / "out3", 3)
    assert not (tmp_path / "out3").exists()


def test_load_class_images_errors(tmp_path):
    with pytest.raises(ArtifactError, match="prior.json"):
        load_class_images(tmp_path, 1)
    (tmp_path / "prior.json").write_text(json.dumps({"key": {}, "images": ["0000.png"]}))
    with pytest.raises(ArtifactError, match="holds 1 class image"):
        load_class_images(tmp_path, 2)
    with pytest.raises(ArtifactError, match="0000.png"):
        load_class_images(tmp_path, 1)


def test_class_images_are_sampled_with_the_base_models_default_pndm(tiny_components, tmp_path):
    # docs/official-code.md §1.1: the stock SD pipeline's own scheduler, PNDM (PLMS steps, as SD v1.x's
    # scheduler_config.json).
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    assert PriorConfig().scheduler == "pndm"
    paths = generate_class_images(tiny_components, "toy", tmp_path / "prior", 1, FAST, 32)
    assert json.loads((tmp_path / "prior" / "prior.json").read_text())["key"]["scheduler"] == "pndm"
    parts = tiny_components
    stock = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=PNDMScheduler.from_config(parts.noise_scheduler.config, skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(image_seed(FAST.seed, 0))
    image = stock("toy", height=32, width=32, num_inference_steps=2, guidance_scale=7.5, generator=generator).images[0]
    assert np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(image))


def test_the_class_prompt_is_the_class_noun_alone_by_default():
    # docs/official-code.md §0: --class_prompt is the class noun itself; a template with {} is the option.
    from eqdiff.prep.prior import class_prompt

    assert class_prompt(PriorConfig(), " dog ") == "dog"
    assert class_prompt(PriorConfig(class_prompt="a photo of a {}"), "dog") == "a photo of a dog"


def test_stage_with_a_work_dir_publishes_the_finished_set_and_keeps_it(tmp_path):
    """dvc.yaml's form: images made (resumably) in the work folder, then ``--out`` holds exactly that set."""
    from eqdiff.stages.prior import run as prior_stage

    params = {"prior": {"num_inference_steps": 2, "batch_size": 2}, "train": {"num_class_images": 2, "resolution": 32}}
    out, work = tmp_path / "prior" / "toy", tmp_path / "prior-work" / "toy"
    prior_stage("stuffed animal", out, params, work_dir=work)
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "prior.json"]
    assert all((out / name).read_bytes() == (work / name).read_bytes() for name in ("0000.png", "prior.json"))
    assert json.loads((out / "prior.json").read_text())["key"]["prompt"] == "stuffed animal"
    published, made = _snapshot(out), _snapshot(work)
    prior_stage("stuffed animal", out, params, work_dir=work)  # up to date: neither folder rewritten
    assert _snapshot(out) == published and _snapshot(work) == made
    shutil.rmtree(out)  # what `dvc repro` does to an unpersisted output before re-running its stage
    prior_stage("stuffed animal", out, params, work_dir=work)
    assert _snapshot(work) == made  # nothing regenerated
    assert {n: v[0] for n, v in _snapshot(out).items()} == {n: v[0] for n, v in published.items()}
    assert load_class_images(out, 2) == [out / "0000.png", out / "0001.png"]
