"""The load-time dtype policy and device names: an fp16-stored base model trains and generates on CPU, diffusers'
``variant="fp16"`` file names load, and a device this machine lacks is one line naming the flag."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from support.data import fast_params
from support.stage_cli import run_cli
from transformers import CLIPTextModel

from eqdiff.config import ModelConfig
from eqdiff.models.base_weights import weights_variant
from eqdiff.models.components import load_components
from eqdiff.models.precision import LOAD_DTYPE
from eqdiff.models.presets import preset_directory

NETWORKS = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}


def fp16_copy(directory, variant: str | None):
    """The tiny preset re-saved as many SD v1.5 copies are: fp16 weights, plain or ``.fp16.`` file names."""
    source = preset_directory(ModelConfig())
    for folder in ("tokenizer", "scheduler"):
        shutil.copytree(source / folder, directory / folder)
    for folder, cls in NETWORKS.items():
        cls.from_pretrained(source / folder).half().save_pretrained(directory / folder, variant=variant)
    return directory


@pytest.mark.parametrize("variant", [None, "fp16"], ids=["fp16-weights", "fp16-variant-files"])
def test_an_fp16_stored_base_model_loads_in_one_dtype(variant, tmp_path):
    model_dir = fp16_copy(tmp_path / "sd-fp16", variant)
    assert weights_variant(model_dir / "unet") == variant
    components = load_components(ModelConfig(preset="sd-v1", path=str(model_dir)))
    for module in (components.unet, components.vae, components.text_encoder):
        assert {p.dtype for p in module.parameters()} == {LOAD_DTYPE}


def test_full_precision_files_are_preferred_over_an_fp16_variant(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors", "config.json"):
        (folder / name).write_bytes(b"")
    assert weights_variant(folder) is None


def test_an_fp16_stored_base_model_trains_and_generates_on_cpu(tmp_path, subject_dir, capsys):
    model_dir = fp16_copy(tmp_path / "sd-fp16", None)
    params = fast_params(train={"steps": 2})
    params["model"] = {"preset": "sd-v1", "path": str(model_dir)}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    concept, samples = tmp_path / "concept", tmp_path / "samples"
    common = ["--params", str(params_file), "--device", "cpu"]
    args = ["--subject-dir", str(subject_dir), "--class-noun", "toy", "--out", str(concept)]
    assert run_cli(["train", *common, *args]) == 0, capsys.readouterr().err[-2000:]
    assert run_cli(["generate", *common, "--concept", str(concept), "--out", str(samples)]) == 0
    assert (concept / "concept.safetensors").is_file() and sorted(samples.rglob("*.png"))


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:7", "npu"])
@pytest.mark.parametrize("stage", ["train", "generate"])
def test_a_device_this_machine_lacks_is_one_line_naming_the_flag(
    stage, device, tmp_path, subject_dir, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # away from the project's params.yaml: the defaults
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    inputs = (
        ["--subject-dir", str(subject_dir), "--class-noun", "toy"]
        if stage == "train"
        else ["--concept", str(tmp_path / "no-concept")]
    )
    assert run_cli([stage, "--device", device, *inputs, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--device {device}:" in lines[0], lines
    assert not out.exists()
