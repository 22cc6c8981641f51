"""Bring-your-own weights: single-file SD v1.x checkpoints and the diffusers directory layouts users hold.

The single files are the tiny preset converted to the original LDM layout (``eqdiff.models.single_file_keys``)
and read back through diffusers' ``from_single_file`` converter, so the mapping is checked against diffusers' own.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from support.data import fast_params
from support.weight_files import convert_directory

from eqdiff.config import ModelConfig
from eqdiff.models.components import ModelError, load_components
from eqdiff.models.presets import preset_directory


@pytest.fixture(scope="module")
def tiny_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny preset's diffusers directory (read as a user's directory, not as the preset)."""
    target = tmp_path_factory.mktemp("byo") / "tiny-diffusers"
    shutil.copytree(preset_directory(ModelConfig()), target)
    return target


@pytest.fixture(scope="module")
def tiny_single_file(tiny_directory: Path) -> Path:
    return convert_directory(tiny_directory, tiny_directory.parent / "tiny.safetensors")


def _sd(path: Path) -> ModelConfig:
    return ModelConfig(preset="sd-v1", path=str(path))


def _same_weights(a, b) -> None:
    for first, second in ((a.unet, b.unet), (a.vae, b.vae), (a.text_encoder, b.text_encoder)):
        sa, sb = first.state_dict(), second.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sa[key].dtype == sb[key].dtype == torch.float32 and torch.equal(sa[key], sb[key]), key


def test_single_file_loads_the_same_networks_as_its_directory(tiny_directory, tiny_single_file):
    twin, single = load_components(_sd(tiny_directory)), load_components(_sd(tiny_single_file))
    _same_weights(twin, single)
    assert single.fingerprint == twin.fingerprint and single.native_resolution == twin.native_resolution == 64
    assert single.tokenizer("a photo of a cat").input_ids == twin.tokenizer("a photo of a cat").input_ids
    assert single.noise_scheduler.config.beta_schedule == "scaled_linear"
    keys = safetensors.torch.load_file(tiny_single_file).keys()
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in keys  # the original LDM names
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in keys


def test_single_file_and_directory_twin_train_and_generate_bit_identically(tiny_directory, tiny_single_file, tmp_path):
    from eqdiff.prep.sample import make_sample_subject
    from eqdiff.stages import generate, train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {} on the beach\n")
    subject = tmp_path / "subject"
    make_sample_subject(subject, num_photos=2)
    losses, images = {}, {}
    for name, path in (("directory", tiny_directory), ("single-file", tiny_single_file)):
        params = fast_params(
            model={"preset": "sd-v1", "path": str(path)}, train={"steps": 2, "with_prior_preservation": False}
        )
        logged = []
        concept = train.run(
            subject, "toy", tmp_path / name / "concept", params, callback=lambda step, v, out=logged: out.append(v)
        )
        losses[name] = logged
        samples = generate.run(concept, tmp_path / name / "samples", params, {"set": prompts}, device="cpu")
        images[name] = np.asarray(Image.open(samples / "set" / "000_00.png"))
    assert len(losses["directory"]) == 2 and losses["directory"] == losses["single-file"]  # floats, exactly
    assert np.array_equal(images["directory"], images["single-file"])


def test_ckpt_and_fp16_single_files_load_in_fp32(tiny_directory, tiny_single_file, tmp_path):
    reference = load_components(_sd(tiny_single_file))
    ckpt = convert_directory(tiny_directory, tmp_path / "tiny.ckpt")
    assert set(torch.load(ckpt, weights_only=True)) == {"state_dict", "global_step"}  # Lightning's layout
    _same_weights(reference, load_components(_sd(ckpt)))
    half = load_components(_sd(convert_directory(tiny_directory, tmp_path / "fp16.safetensors", torch.float16)))
    assert half.unet.dtype == half.text_encoder.dtype == half.vae.dtype == torch.float32
    expected = reference.unet.conv_in.weight.half().float()
    assert torch.equal(half.unet.conv_in.weight, expected)


def test_ckpt_that_needs_pickle_is_refused_in_one_line(tiny_single_file, tmp_path):
    state = safetensors.torch.load_file(tiny_single_file)
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ModelError, match=r"pickled.ckpt needs pickle to load .*convert it to \.safetensors") as info:
        load_components(_sd(path))
    assert "argparse.Namespace" in str(info.value) and "\n" not in str(info.value)


def test_single_file_without_the_position_ids_buffer_loads(tiny_single_file, tmp_path):
    # Files re-saved by newer tools drop this buffer (transformers no longer saves it); it is not a weight.
    state = safetensors.torch.load_file(tiny_single_file)
    del state["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    safetensors.torch.save_file(state, tmp_path / "resaved.safetensors")
    _same_weights(load_components(_sd(tiny_single_file)), load_components(_sd(tmp_path / "resaved.safetensors")))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("drop", "not a Stable Diffusion v1.x single-file checkpoint .* keys missing"),
        ("reshape", r"input_blocks.0.0.weight is \(32, 9, 3, 3\)"),
        ("sd2", "is a Stable Diffusion 2.x checkpoint; expected Stable Diffusion v1.x"),
        ("truncate", "is not a readable .safetensors weights file"),
        ("suffix", "is a .pt file .expected a diffusers directory or a single .safetensors / .ckpt"),
    ],
)
def test_foreign_or_broken_single_files_are_one_line_errors(tiny_single_file, tmp_path, damage, message):
    state = safetensors.torch.load_file(tiny_single_file)
    path = tmp_path / ("model.pt" if damage == "suffix" else "model.safetensors")
    if damage == "drop":
        state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.decoder.")}

    elif damage == "reshape":  # an inpainting UNet takes 9 input channels
        state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32, 9, 3, 3)
    elif damage == "sd2":
        state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)
    safetensors.torch.save_file(state, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=message) as info:
        load_components(_sd(path))
    assert "\n" not in str(info.value)


def test_directory_of_a_released_layout_reads_safetensors_and_ignores_the_extras(tiny_directory, tmp_path):
    # SD v1.4/v1.5 directories carry a safety checker, a feature extractor and .bin pickles beside the
    # safetensors. Garbage in all three proves none is read.
    released = tmp_path / "stable-diffusion-v1-5"
    shutil.copytree(tiny_directory, released)
    for folder in ("safety_checker", "feature_extractor"):
        (released / folder).mkdir()
        (released / folder / "config.json").write_text("not json")
    (released / "safety_checker" / "model.safetensors").write_bytes(b"garbage")
    for component, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")):
        (released / component / f"{name}.bin").write_bytes(b"not a pickle")
    (released / "text_encoder" / "pytorch_model.bin").write_bytes(b"not a pickle")
    index = {"_class_name": "StableDiffusionPipeline", "safety_checker": ["stable_diffusion", "SafetyChecker"]}
    (released / "model_index.json").write_text(json.dumps(index))
    _same_weights(load_components(_sd(tiny_directory)), load_components(_sd(released)))
