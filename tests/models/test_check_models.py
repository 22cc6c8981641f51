"""``eqdiff check-models``: the demo params pass, paper-like params with wrong paths fail with one line per
problem, and every kind of built weight file is recognised, or refused with what does not fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from support.weight_files import SMALL_SAM_TYPE, build_weight_files, convert_directory, small_sam

from eqdiff.cli import main
from eqdiff.config import ModelConfig
from eqdiff.models.presets import preset_directory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small-config weights tier, plus the tiny preset as a diffusers directory and as fp16 single file."""
    root = tmp_path_factory.mktemp("built")
    paths = build_weight_files(root, "small")
    paths["sd_directory"] = Path(shutil.copytree(preset_directory(ModelConfig()), root / "tiny-diffusers"))
    paths["sd_fp16"] = convert_directory(paths["sd_directory"], root / "fp16.safetensors", dtype=torch.float16)
    paths["sd_fp16_variant"] = Path(shutil.copytree(paths["sd_directory"], root / "tiny-fp16-variant"))
    for component in ("unet", "vae", "text_encoder"):  # only diffusers' *.fp16.safetensors variant files
        (full,) = (paths["sd_fp16_variant"] / component).glob("*.safetensors")
        state = {k: v.half() for k, v in safetensors.torch.load_file(full).items()}
        safetensors.torch.save_file(state, full.with_suffix(".fp16.safetensors"))
        full.unlink()
    return paths


@pytest.fixture(autouse=True)
def small_sam_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, SMALL_SAM_TYPE, small_sam)


def check(capsys: pytest.CaptureFixture, *overrides: str, params: Path | None = None) -> tuple[int, str, list[str]]:
    code = main(["check-models", *(["--params", str(params)] if params else []), *[f"-S{o}" for o in overrides]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_demo_params_pass(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing is written
    code, table, errors = check(capsys, params=REPO / "params.yaml")
    assert code == 0 and errors == []
    # the world preset's shipped folder, and the world's own masks beside each subject's photos
    assert [line.split()[0] for line in table.splitlines()] == [
        "field", "model.path", "evaluate.clip_model", "evaluate.dino_model", "masks.files_dir",
    ]  # fmt: skip
    assert "PROBLEM" not in table and list(tmp_path.iterdir()) == []


def test_paper_params_with_wrong_paths_fail_with_one_line_per_problem(capsys, tmp_path, built):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(preset="sd-v1", path=str(tmp_path / "stable-diffusion-v1-5"))  # not there
    params["evaluate"].update(clip_model=str(built["dino_model"]), dino_model=str(tmp_path / "dino-vits16"))
    params["masks"].update(
        backend="grounded-sam",
        grounding_dino_config="GroundingDINO_SwinT_OGC",
        grounding_dino_checkpoint=str(tmp_path / "groundingdino_swint_ogc.pth"),
        sam_checkpoint=str(built["sam_checkpoint"]),
        sam_model_type="vit_b",  # the small file is not a vit_b
        text_encoder_dir=str(built["text_encoder_dir"]),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, table, errors = check(capsys, params=tmp_path / "params.yaml")
    assert code == 2 and table.count("PROBLEM") == len(errors) == 5, errors
    assert errors[0] == f"eqdiff check-models: error: model.path: {tmp_path / 'stable-diffusion-v1-5'}: does not exist"
    assert errors[1].endswith("holds a 'vit' model, expected 'clip'")
    assert errors[2].endswith("dino-vits16: does not exist")
    assert "masks.sam_checkpoint" in errors[3] and "does not fit the architecture" in errors[3]
    assert errors[4].endswith("groundingdino_swint_ogc.pth: does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _row(table: str, field: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(field + " "))
    return [cell for cell in line.split("  ") if cell.strip()]


@pytest.mark.parametrize(
    "key, fmt, architecture, dtype",
    [
        ("sd_single_file", "single file (.safetensors)", "tiny", "float32"),
        ("sd_fp16", "single file (.safetensors)", "tiny", "float16"),
        ("sd_directory", "diffusers directory", "tiny", "float32"),
        ("sd_fp16_variant", "diffusers directory", "tiny", "float16"),
    ],
)
def test_each_sd_layout_is_recognised(capsys, built, key, fmt, architecture, dtype):
    code, table, _ = check(capsys, "model.preset=sd-v1", f"model.path={built[key]}")
    assert code == 0
    assert [c.strip() for c in _row(table, "model.path")[2:]] == [fmt, architecture, dtype, "ok"]


def test_built_evaluator_and_mask_files_are_recognised(capsys, built):
    overrides = [f"evaluate.{k}={built[k]}" for k in ("clip_model", "dino_model")]
    overrides += [f"masks.{k}={built[k]}" for k in ("grounding_dino_config", "grounding_dino_checkpoint")]
    overrides += [f"masks.{k}={built[k]}" for k in ("sam_checkpoint", "text_encoder_dir")]
    code, table, errors = check(
        capsys, "masks.backend=grounded-sam", f"masks.sam_model_type={SMALL_SAM_TYPE}", *overrides
    )
    assert code == 0, errors
    assert _row(table, "evaluate.clip_model")[3].strip() == "CLIP ViT (width 32, patch 32)"
    assert _row(table, "masks.sam_checkpoint")[3].strip() == f"SAM {SMALL_SAM_TYPE}"
    assert _row(table, "masks.grounding_dino_checkpoint")[3].strip() == "GroundingDINO (GroundingDINO_small)"


def test_damaged_files_are_named_with_what_does_not_fit(capsys, built, tmp_path):
    no_weights = Path(shutil.copytree(built["dino_model"], tmp_path / "dino"))
    (no_weights / "model.safetensors").unlink()
    other_clip = Path(shutil.copytree(built["clip_model"], tmp_path / "clip"))
    shutil.copy(built["dino_model"] / "model.safetensors", other_clip / "model.safetensors")
    not_sd = tmp_path / "model.ckpt"
    not_sd.write_bytes(b"PK\x03\x04 not a zip")
    code, _, errors = check(
        capsys,
        "model.preset=sd-v1",
        f"model.path={not_sd}",
        f"evaluate.dino_model={no_weights}",
        f"evaluate.clip_model={other_clip}",
        "masks.backend=files",
        f"masks.files_dir={tmp_path / 'masks'}",
    )
    assert code == 2 and len(errors) == 4, errors
    assert "model.ckpt is not a readable .ckpt weights file" in errors[0]
    assert "evaluate.clip_model" in errors[1] and "does not fit the architecture (" in errors[1]
    assert errors[2].endswith("has no .safetensors or .bin weights")
    assert errors[3].endswith("masks: is not a directory of masks")


@pytest.mark.slow
def test_dvc_repro_runs_the_check_first_and_stops_on_a_wrong_path(tmp_path):
    from support.pipeline_copy import TINY, dvc, make_project_copy, ran_stages

    wrong = tmp_path / "stable-diffusion-v1-5"
    project = make_project_copy(tmp_path / "project", {**TINY, "model": {"preset": "sd-v1", "path": str(wrong)}})
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0 and ran_stages(result.stdout) == ["check-models"]
    assert f"eqdiff check-models: error: model.path: {wrong}: does not exist" in result.stderr.splitlines()
    assert not (project / "runs").exists() and not (project / "data").exists()  # no stage after it ran


@pytest.mark.slow
@pytest.mark.parametrize("flow_name", ["customize", "benchmark"])
def test_flows_check_the_models_before_any_long_work(tmp_path, monkeypatch, prefect_api, flow_name):
    import importlib

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(preset="sd-v1", path=str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    flow = getattr(importlib.import_module(f"flows.{flow_name}"), flow_name)
    state = flow(str(tmp_path / "params.yaml"), return_state=True)
    assert (
        state.is_failed() and "model.path: " in state.message and "nowhere.safetensors: does not exist" in state.message
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # not even the demo subject was drawn


def test_a_ckpt_that_needs_pickle_or_another_family_is_a_problem(capsys, built, tmp_path):
    import argparse

    state = safetensors.torch.load_file(built["sd_single_file"])
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.ckpt")
    state["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)
    safetensors.torch.save_file(state, tmp_path / "sdxl.safetensors")
    for name, message in (("pickled.ckpt", "needs pickle to load"), ("sdxl.safetensors", "is an SDXL checkpoint")):
        code, _, errors = check(capsys, "model.preset=sd-v1", f"model.path={tmp_path / name}")
        assert code == 2 and len(errors) == 1 and message in errors[0], errors


def test_a_hub_id_allowed_to_download_is_reported_not_checked(capsys):
    code, table, errors = check(
        capsys,
        "model.preset=sd-v1",
        "model.path=stable-diffusion-v1-5/stable-diffusion-v1-5",
        "model.allow_download=true",
    )
    assert code == 0 and errors == []
    assert [c.strip() for c in _row(table, "model.path")[2:]] == [
        "hub id",
        "not checked (fetched when loaded)",
        "-",
        "ok",
    ]
