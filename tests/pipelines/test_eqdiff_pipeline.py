"""Concepts and inference: the CLI end to end, reproducibility, loading that cannot ignore weights (docs/method.md,
Inference)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from support.builders import perturbed_concept
from support.data import fast_params

from eqdiff.config import ReferenceNoise
from eqdiff.errors import DataError
from eqdiff.models.concept import FREQUENCY_KEY, ConceptError, load_concept, save_concept
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, image_generator
from eqdiff.pipelines.reference import reference_rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A concept trained through the CLI on 3 synthetic photos with masks, and its samples generated twice: once
    by an ``eqdiff generate`` process, once in this one (the same bytes from a fresh process and a warm one)."""
    from support.stage_cli import run_cli

    from eqdiff.prep.sample import make_sample_subject

    root = tmp_path_factory.mktemp("cli")
    subject = make_sample_subject(root / "toy", num_photos=3)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(fast_params(train={"steps": 2})))
    common = ["--params", str(params)]
    train = [*common, "--subject-dir", str(subject), "--class-noun", "toy", "--out", str(root / "concept")]
    assert run_cli(["train", *train]) == 0
    generate = ["generate", *common, "--concept", str(root / "concept"), "--out"]
    # Bitwise reproducibility holds for the same device, thread count and batch size: match the test process.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "eqdiff.cli", *generate, str(root / "samples")]
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    assert run_cli([*generate, str(root / "again")]) == 0
    return root


def test_generate_honours_where_the_model_is_kept_and_refuses_another_base_model(trained, tmp_path, capsys):
    """``-S model.cache_dir=DIR`` moves the base model's cache for one command (it does not change the weights);
    a ``model`` value that would change the base model is refused in one line naming the concept's own."""
    from support.stage_cli import run_cli

    params, concept = str(trained / "params.yaml"), str(trained / "concept")
    moved = tmp_path / "moved-cache"
    argv = ["generate", "--params", params, "--concept", concept, "-S", "generate.num_images_per_prompt=1"]
    assert run_cli([*argv, "-S", f"model.cache_dir={moved}", "--out", str(tmp_path / "samples")]) == 0
    assert (tmp_path / "samples" / "index.json").is_file() and any(moved.rglob("*.safetensors"))  # built there
    capsys.readouterr()
    assert run_cli([*argv, "-S", "model.seed=7", "--out", str(tmp_path / "other")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("eqdiff generate: error: model.seed: 7, but the concept at ") and "model.seed = 0" in line
    assert not (tmp_path / "other").exists()


def test_a_grey_reference_keeps_the_subject_and_greys_the_rest(trained, tmp_path, capsys):
    """``generate.reference_background: grey``: the concept keeps its reference's mask (the first photo's); the
    reference is that photo inside the mask and mid-grey outside, and it changes the images (RRA reads it). With
    no mask to use (``--reference``, or a concept saved without one) it is one line and nothing is written."""
    from support.stage_cli import run_cli

    from eqdiff.pipelines.reference import grey_background

    concept = load_concept(trained / "concept")
    mask = concept.reference_mask
    assert mask is not None and mask.shape == (1, *concept.reference_image.shape[1:])
    assert 0 < mask.mean() < 1 and set(mask.unique().tolist()) == {0.0, 1.0}
    greyed = grey_background(concept.reference_image, mask)
    outside = (mask == 0).expand_as(greyed)
    assert torch.equal(greyed * mask, concept.reference_image * mask) and not greyed[outside].any()

    # After 2 steps RRA's gates are still almost closed and the reference cannot show: open them (F_RA = RA,
    # M^f = 1), so that every image depends on the reference, and sample with the photo and with the grey one.
    weights = dict(concept.weights)
    for name in [n for n in weights if n.endswith("to_out_res.weight")]:
        width = weights[name].shape[1] // 2
        weights[name] = torch.cat([torch.eye(width, 2 * width), torch.zeros(1, 2 * width)])
        weights[name.replace("weight", "bias")] = torch.cat([torch.zeros(width), torch.ones(1)])
    opened = save_concept(tmp_path / "opened", weights, concept.reference_image, concept.manifest, mask)
    argv = ["generate", "--params", str(trained / "params.yaml"), "--concept", str(opened)]
    argv += ["-S", "generate.num_images_per_prompt=1"]
    assert run_cli([*argv, "--out", str(tmp_path / "photo")]) == 0
    argv += ["-S", "generate.reference_background=grey"]
    assert run_cli([*argv, "--out", str(tmp_path / "grey")]) == 0
    index = json.loads((tmp_path / "grey" / "index.json").read_text())
    first = index["images"][0]["file"]
    assert (tmp_path / "grey" / first).read_bytes() != (tmp_path / "photo" / first).read_bytes()

    unmasked = save_concept(tmp_path / "unmasked", concept.weights, concept.reference_image, concept.manifest)
    grey = ["generate", "--params", str(trained / "params.yaml"), "-S", "generate.reference_background=grey"]
    for extra, expected in (
        (["--concept", str(unmasked)], "was trained without masks"),
        (["--concept", str(opened), "--reference", str(trained / "toy" / "00.png")], "has no mask"),
    ):
        capsys.readouterr()
        assert run_cli([*grey, *extra, "--out", str(tmp_path / "refused")]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("eqdiff generate: error: generate.reference_background: grey ") and expected in line
        assert not (tmp_path / "refused").exists()


def test_concept_directory_holds_safetensors_and_a_manifest_only(trained):
    assert sorted(p.name for p in (trained / "concept").iterdir()) == ["concept.json", "concept.safetensors"]
    manifest = json.loads((trained / "concept" / "concept.json").read_text())
    assert manifest["base_model"] == "tiny:seed=0" and manifest["placeholder"] == "<new1>"
    assert manifest["config"]["train"]["variant"] == "F" and manifest["steps"] == 2


def test_generate_is_byte_identical_for_the_same_seed(trained):
    index = json.loads((trained / "samples" / "index.json").read_text())
    assert len(index["images"]) == 5 and index["calibrated"] is False
    for image in index["images"]:
        first = (trained / "samples" / image["file"]).read_bytes()
        assert first == (trained / "again" / image["file"]).read_bytes(), image["file"]


def test_any_single_image_reproduces_alone(trained):
    index = json.loads((trained / "samples" / "index.json").read_text())
    pipe = EqDiffPipeline.from_concept_dir(trained / "concept")
    image = index["images"][3]  # the second prompt set's first image, generated in a batch of two
    generator = image_generator(image["seed"], 100_000 + image["prompt_index"], image["sample_index"])
    alone = pipe(image["prompt"], generator=[generator], num_inference_steps=2, progress=False).images[0]
    from PIL import Image

    expected = Image.open(trained / "samples" / image["file"])
    assert list(alone.getdata()) == list(expected.convert("RGB").getdata())


def _image(pipe):
    out = pipe(
        "a <new1> toy",
        generator=[torch.Generator().manual_seed(0)],
        num_inference_steps=2,
        output_type="pt",
        progress=False,
    )
    return out.images


def test_loaded_concept_weights_change_the_images_and_are_really_loaded(tmp_path):
    path, weights = perturbed_concept(tmp_path)
    loaded = EqDiffPipeline.from_concept_dir(path)
    for name, param in loaded.unet.named_parameters():
        if name in weights:
            assert torch.equal(param, weights[name]), name
    assert torch.equal(loaded.embeddings.frequency_embeddings, weights[FREQUENCY_KEY])
    # Base behaviour: the same concept with its trainable tensors at their initial (copied) values.
    base_weights = load_concept(path).weights
    pipe = EqDiffPipeline.from_concept_dir(path)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "_custom_diffusion" in name:
                param.copy_(pipe.unet.get_parameter(name.replace("processor.", "").replace("_custom_diffusion", "")))
            elif "to_out_res" in name:
                param.zero_()
    assert not torch.allclose(_image(loaded), _image(pipe), atol=1e-3)
    assert base_weights.keys() == weights.keys()


def test_base_model_then_load_concept_is_the_concept_pipeline_and_to_moves_the_embeddings(tmp_path):
    """diffusers' contract: ``from_pretrained`` is the base model, ``load_concept`` attaches a concept."""
    path, _ = perturbed_concept(tmp_path)
    base = EqDiffPipeline.from_pretrained("tiny")
    assert base.embeddings is None and not base.use_rra
    plain = base(
        "a toy", generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, output_type="pt", progress=False
    ).images  # the base model alone samples plain SD v1.x: no placeholder needed
    assert plain.shape == (1, 3, 64, 64)  # the base model's native resolution (tiny: 64 px)
    assert base.load_concept(path) is base and base.use_rra and base.placeholder == "<new1>"
    assert torch.equal(_image(base), _image(EqDiffPipeline.from_concept_dir(path)))
    with pytest.raises(ConceptError, match="already has a concept"):
        base.load_concept(path)
    with pytest.raises(ConceptError, match="is a concept directory, not a base model"):
        EqDiffPipeline.from_pretrained(path)
    moved = base.to("meta")
    assert moved is base and base.embeddings.frequency_embeddings.device.type == "meta"


def test_loader_fails_when_a_weight_is_missing_or_foreign(tmp_path):
    path, weights = perturbed_concept(tmp_path)
    weights.pop(next(n for n in weights if "to_k_res" in n))
    manifest = load_concept(path).manifest
    broken = save_concept(tmp_path / "broken", weights, torch.zeros(3, 32, 32), manifest)
    with pytest.raises(ConceptError, match="missing .*to_k_res"):
        EqDiffPipeline.from_concept_dir(broken)
    manifest = dataclasses.replace(manifest, base_model_fingerprint="0" * 16)
    foreign = save_concept(tmp_path / "foreign", load_concept(path).weights, torch.zeros(3, 32, 32), manifest)
    with pytest.raises(ConceptError, match="trained on base model"):
        EqDiffPipeline.from_concept_dir(foreign)
    (path / "concept.safetensors").write_bytes((path / "concept.safetensors").read_bytes()[:64])
    with pytest.raises(Exception, match="not a valid safetensors file"):
        load_concept(path)


def test_prompts_are_validated(tmp_path):
    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    with pytest.raises(DataError, match="missing the concept's placeholder"):
        pipe("a toy", progress=False)
    with pytest.raises(DataError, match="tokens, the text encoder takes at most 77"):
        pipe("a <new1> toy " + "very " * 80, progress=False)


@pytest.mark.slow
def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eqdiff.cli",
            "train",
            "--subject-dir",
            str(tmp_path / "none"),
            "--class-noun",
            "toy",
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"eqdiff train: error: {tmp_path / 'none'}: subject folder not found"]
    assert not (tmp_path / "c").exists()


def test_reference_rows_are_shared_by_the_images_of_a_batch():
    rows, index = reference_rows(["a toy", "a toy in snow", "a toy"], per_image=False)
    assert rows == [(0, None), (0, "a toy"), (0, "a toy in snow")]
    assert index == [0, 0, 0, 1, 2, 1]  # [uncond ×3; cond ×3]
    assert len(reference_rows(["a toy"] * 8, per_image=False)[0]) == 2  # not 16
    rows, index = reference_rows(["a toy", "a toy"], per_image=True)  # noised reference: each image its own
    assert rows == [(0, None), (1, None), (0, "a toy"), (1, "a toy")] and index == [0, 1, 2, 3]


@pytest.mark.parametrize("reference_noise", [ReferenceNoise.CLEAN, ReferenceNoise.NOISED])
def test_fused_and_shared_reference_rows_match_the_plain_two_calls(tmp_path, reference_noise):
    # Fast paths: [reference; main] rows in one UNet call, and each distinct reference row computed once
    # per batch, against a reference pass row for row and a separate main pass.
    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    prompts = ["a <new1> toy", "a watercolor painting of a <new1> toy", "a <new1> toy"]
    outputs = {}
    for fuse in (True, False):
        for share in (True, False):
            outputs[fuse, share] = pipe(
                prompts,
                generator=[torch.Generator().manual_seed(k) for k in range(3)],
                num_inference_steps=3,
                output_type="pt",
                progress=False,
                reference_noise=reference_noise,
                fuse_reference=fuse,
                share_reference_rows=share,
            ).images
    plain = outputs[False, False]
    for key, images in outputs.items():
        assert torch.allclose(images, plain, atol=1e-5), key
    assert not torch.allclose(plain[0], plain[2], atol=1e-3)  # same prompt, own generator: a different image


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "two-call"])
def test_the_cached_unconditional_reference_is_exact_and_reused_across_calls(tmp_path, fuse):
    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    rows = []  # rows of every UNet call
    denoiser = pipe.denoiser
    pipe.denoiser = lambda sample, t, text: (rows.append(sample.shape[0]), denoiser(sample, t, text))[1]

    def image(**options):
        rows.clear()
        out = pipe(
            "a watercolor painting of a <new1> toy",
            generator=[torch.Generator().manual_seed(0)],
            num_inference_steps=3,
            output_type="pt",
            progress=False,
            fuse_reference=fuse,
            **options,
        )
        return out.images, list(rows)

    uncached, uncached_rows = image(cache_unconditional_reference=False)
    cold, cold_rows = image()
    warm, warm_rows = image()
    # Per step at batch 1: 2 reference + 2 main rows uncached; the cache fills with one row per step, then is read.
    per_step = [4] if fuse else [2, 2]
    assert uncached_rows == per_step * 3
    assert cold_rows == [1, *(n - 1 for n in per_step[:1]), *per_step[1:]] * 3
    assert warm_rows == [n - (i == 0) for i, n in enumerate(per_step)] * 3
    assert torch.equal(cold, warm)  # an image does not depend on the cache being cold or warm
    assert torch.allclose(cold, uncached, atol=1e-5)
    _, other_reference_rows = image(reference_image=torch.full((3, 32, 32), 0.5))
    assert other_reference_rows == cold_rows  # another reference latent rebuilds the cache


def test_an_explicit_reference_prompt_is_used_and_checked(tmp_path):
    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    options = {"num_inference_steps": 2, "output_type": "pt", "progress": False}
    derived = pipe("a <new1> toy", generator=[torch.Generator().manual_seed(0)], **options).images
    same = pipe("a <new1> toy", generator=[torch.Generator().manual_seed(0)], reference_prompt="a toy", **options)
    other = pipe("a <new1> toy", generator=[torch.Generator().manual_seed(0)], reference_prompt="a cat", **options)
    assert torch.equal(same.images, derived)  # the default is the prompt without its placeholder
    assert not torch.allclose(other.images, derived, atol=1e-4)
    with pytest.raises(ValueError, match="2 reference prompts for 1 prompts"):
        pipe("a <new1> toy", reference_prompt=["a toy", "a cat"], **options)


@pytest.mark.slow
def test_compile_falls_back_to_eager_when_compilation_fails(tmp_path, caplog):
    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    eager = _image(pipe)

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler here")

    pipe.enable_compile(backend=broken_backend)
    assert pipe.denoiser.compiled
    assert torch.equal(_image(pipe), eager)
    assert not pipe.denoiser.compiled
    assert "torch.compile failed" in caplog.text


@pytest.mark.slow
def test_compiled_fused_pipeline_matches_eager_without_graph_breaks(tmp_path):
    from torch._dynamo.utils import counters

    path, _ = perturbed_concept(tmp_path)
    pipe = EqDiffPipeline.from_concept_dir(path)
    eager = _image(pipe)
    torch._dynamo.reset()
    counters.clear()
    pipe.enable_compile(backend="aot_eager")
    assert torch.equal(_image(pipe), eager)
    assert pipe.denoiser.compiled, "compilation failed and fell back to eager"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1  # one fused [reference; main] call per step
