"""Inference decisions of docs/method.md inside the real pipeline: the reference rows' text (the training reference
prompt by default, each prompt without the placeholder as the option), the unconditional row's reference from
the empty prompt, the clean posterior-mean reference at every step, and one UNet call per step whose reference
rows are shared (no style branch). ``record_calls`` wraps the pipeline's real denoiser; nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from support.builders import perturbed_concept
from support.data import fast_params

from eqdiff.method.prompts import tokenize
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, image_generator
from eqdiff.stages.generate import run as generate_samples


@pytest.fixture
def concept(tmp_path):
    """A concept with random trained tensors whose manifest records its instance prompt, as training writes."""
    path, _ = perturbed_concept(tmp_path)
    manifest_path = path / "concept.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["instance_prompt"] = "photo of a {}"
    manifest["config"]["rra"] = {"reference_noise": "clean"}
    manifest_path.write_text(json.dumps(manifest))
    return path


def record_calls(pipe) -> list[dict]:
    calls, real = [], pipe.denoiser

    def spy(sample, timestep, text, *args, **kwargs):
        calls.append({"sample": sample.clone(), "text": text.clone(), "rows": pipe.bank.reference_rows})
        return real(sample, timestep, text, *args, **kwargs)

    pipe.denoiser = spy
    return calls


def clip(pipe, prompt: str) -> torch.Tensor:
    return pipe.text_encoder(tokenize(pipe.tokenizer, [prompt]))[0][0]


OPTIONS = {"num_inference_steps": 3, "output_type": "pt", "progress": False}


@torch.no_grad()
def test_reference_rows_default_to_the_training_reference_prompt_and_the_empty_prompt(concept):
    pipe = EqDiffPipeline.from_concept_dir(concept)
    assert pipe.default_reference_prompt == "photo of a toy"
    calls = record_calls(pipe)
    prompts = ["a watercolor painting of a <new1> toy"] * 2
    generators = [torch.Generator().manual_seed(k) for k in range(2)]
    pipe(prompts, generator=generators, **OPTIONS)
    # Per step: the uncond rows' reference row alone (computed once per timestep and cached, docs/devices.md),
    # then one fused call of the other reference row (shared by both samples) + 2 × 2 CFG rows; nothing else.
    assert len(calls) == 6
    uncond, fused = calls[0::2], calls[1::2]
    assert all(c["sample"].shape[0] == 1 for c in uncond)
    assert all(c["rows"] == 1 and c["sample"].shape[0] == 5 for c in fused)
    torch.testing.assert_close(uncond[0]["text"][0], clip(pipe, ""), rtol=0, atol=1e-6)  # the uncond reference
    torch.testing.assert_close(fused[0]["text"][0], clip(pipe, "photo of a toy"), rtol=0, atol=1e-6)
    # The reference latent: the clean posterior mean × scaling factor, the same at every step.
    image = pipe.reference_image[None]
    expected = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    for call in calls:
        torch.testing.assert_close(call["sample"][:1], expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_the_generation_prompt_without_placeholder_is_the_option(concept, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a watercolor painting of a {}\n")
    params = fast_params(generate={"num_inference_steps": 2, "batch_size": 1})
    images = {}
    for choice in ("instance", "prompt"):
        params["generate"]["reference_text"] = choice
        out = generate_samples(concept, tmp_path / choice, params, {"set": prompt_file}, device="cpu")
        images[choice] = list(Image.open(out / "set" / "000_00.png").convert("RGB").getdata())
    assert images["instance"] != images["prompt"]
    pipe = EqDiffPipeline.from_concept_dir(concept)
    calls = record_calls(pipe)
    explicit = pipe(
        "a watercolor painting of a <new1> toy",
        generator=[image_generator(0, 0, 0)],
        reference_prompt="a watercolor painting of a toy",
        num_inference_steps=2,
        progress=False,
    ).images[0]
    # calls[0] is the cached uncond reference row alone; calls[1] the fused call, its reference row first.
    torch.testing.assert_close(calls[1]["text"][0], clip(pipe, "a watercolor painting of a toy"), rtol=0, atol=1e-6)
    assert images["prompt"] == list(explicit.getdata())


def test_every_image_of_a_batch_has_its_own_generator(concept, tmp_path):
    # One generator per image from (seed, set, prompt, sample), not one shared by a batch
    # (docs/official-code.md §5.3): the second image of a batch of two equals that image generated alone (up to
    # batched-kernel rounding).
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a {}\na {} in the snow\n")
    params = fast_params(generate={"num_inference_steps": 2, "batch_size": 2})
    out = generate_samples(concept, tmp_path / "out", params, {"set": prompt_file}, device="cpu")
    batched = np.asarray(Image.open(out / "set" / "001_00.png").convert("RGB"), dtype=np.int16)
    pipe = EqDiffPipeline.from_concept_dir(concept)
    with torch.no_grad():
        alone = pipe(
            "a <new1> toy in the snow", generator=[image_generator(0, 1, 0)], num_inference_steps=2, progress=False
        ).images[0]
    assert np.abs(batched - np.asarray(alone, dtype=np.int16)).max() <= 1
