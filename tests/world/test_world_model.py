"""The world base model's training command (``python -m eqdiff.world model``: seeded, resumable in parts, new
networks on a kept VAE, the text encoder's phase) and ``check-base`` (docs/world.md, "Base model")."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from eqdiff.config import ModelConfig
from eqdiff.models.components import load_components
from eqdiff.world.preset import SHIPPED_MODEL, world_digest
from eqdiff.world.vocabulary import random_spec

REPO = Path(__file__).resolve().parents[2]


def small_world_config():
    """The world model command's settings at a few steps of each phase on 64 images (seconds on a CPU)."""
    from eqdiff.world.base_model import WorldTrainConfig

    return WorldTrainConfig(
        num_images=64, vae_steps=2, vae_batch_size=4, text_steps=2, text_batch_size=8, steps=2, batch_size=4
    )


@pytest.fixture(scope="module")
def first_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small first part, trained once: the tests resume from it and only read it."""
    from eqdiff.world.base_model import train_world_model

    return train_world_model(tmp_path_factory.mktemp("world-model") / "first", small_world_config())


def new_encoder_part(first: Path, **changes):
    """The small settings of a part resumed from ``first`` that trains a new text encoder."""
    return replace(small_world_config(), resume_from=str(first), new_text_encoder=True, **changes)


@pytest.mark.slow
def test_the_base_model_command_is_seeded_resumable_and_reproduces_the_shipped_record(tmp_path: Path, first_part: Path):
    """Two runs of the training command (a few steps) write the same bytes; a run resumed from one keeps its VAE
    and text encoder and records what it continued; the shipped model's record is the command's defaults (its
    first part) and, for each part resumed after it, the defaults but for ``resume_from`` and ``steps``, so the
    commands of docs/world.md ("Base model") reproduce what ships."""
    from dataclasses import asdict

    from eqdiff.world.base_model import WorldTrainConfig, train_world_model

    small = small_world_config()
    run0 = first_part
    digests = [
        json.loads((run / "world_model.json").read_text())["digest"]
        for run in (run0, train_world_model(tmp_path / "run1", small))
    ]
    assert digests[0] == digests[1] == world_digest(run0)
    resumed = train_world_model(tmp_path / "resumed", replace(small, resume_from=str(run0), steps=3))
    resumed_record = json.loads((resumed / "world_model.json").read_text())
    assert resumed_record["resumed_from"]["digest"] == digests[0]
    assert resumed_record["resumed_from"]["config"] == asdict(small) and resumed_record["config"]["steps"] == 3
    for path in (run0 / "vae").iterdir():
        assert (resumed / "vae" / path.name).read_bytes() == path.read_bytes(), f"vae/{path.name} changed"
    before = load_components(ModelConfig(preset="world", path=str(run0), cache_dir=str(tmp_path)))
    after = load_components(ModelConfig(preset="world", path=str(resumed), cache_dir=str(tmp_path)))
    for mine, theirs in zip(before.text_encoder.parameters(), after.text_encoder.parameters(), strict=True):
        if mine.ndim == 2 and mine.shape[0] == 49408:  # the token table: the kept rows are the same
            mine, theirs = mine[mine.abs().sum(dim=1) > 0], theirs[mine.abs().sum(dim=1) > 0]
        assert torch.equal(mine, theirs), "the text encoder must stay frozen when resuming"
    assert not all(torch.equal(a, b) for a, b in zip(before.unet.parameters(), after.unet.parameters(), strict=True)), (
        "the resumed part did not train the UNet"
    )
    record = json.loads((SHIPPED_MODEL / "world_model.json").read_text())
    parts = [record]
    while "resumed_from" in parts[-1]:
        parts.append(parts[-1]["resumed_from"])
    defaults = asdict(WorldTrainConfig())  # a record written before a setting existed ran with its default
    assert {**defaults, **parts[-1]["config"]} == defaults and set(parts[-1]["config"]) <= set(defaults)
    # each later part's other settings are options of its command in docs/world.md; a resumed part records the
    # VAE settings it kept (the first part's) and the text settings of the encoder it kept, unless it trained one
    commands = [line for line in (REPO / "docs" / "world.md").read_text().splitlines() if "eqdiff.world model" in line]
    trained_by = {**defaults, **parts[-1]["config"]}
    for part in reversed(parts[:-1]):
        config = {**defaults, **part["config"]}
        kept = [
            k for k in defaults if k.startswith("vae_") or (k.startswith("text_") and not config["new_text_encoder"])
        ]
        assert all(config[k] == trained_by[k] for k in kept), "a resumed part records the settings it kept"
        for key in (k for k in defaults if config[k] != defaults[k] and k != "resume_from" and k not in kept):
            option = f"--{key.replace('_', '-')}"
            option = option if isinstance(config[key], bool) else f"{option} {config[key]}"
            assert any(option in line for line in commands), f"{option} is in no command of docs/world.md"
        trained_by = config


def test_the_base_model_command_refuses_a_bad_resume_folder_in_one_line(tmp_path: Path, capsys):
    """``--resume-from`` that names no world model, or with a VAE / text encoder setting it would ignore, fails
    at once (before the drawing starts), one line, exit 2, nothing written; an existing ``--out`` too."""
    from eqdiff.world.__main__ import main

    assert main(["model", "--out", str(tmp_path / "new"), "--resume-from", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--resume-from:" in error and "not a world model folder" in error
    assert not (tmp_path / "new").exists()
    shutil.copytree(SHIPPED_MODEL, tmp_path / "part1")
    assert (
        main(["model", "--out", str(tmp_path / "new"), "--resume-from", str(tmp_path / "part1"), "--vae-steps", "9"])
        == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--vae-steps 9 would have no effect" in error and not (tmp_path / "new").exists()
    (tmp_path / "taken").mkdir()
    assert main(["model", "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err and not any((tmp_path / "taken").iterdir())


@pytest.mark.slow
def test_a_resumed_part_grows_attention_at_16_without_changing_what_the_model_computes(
    tmp_path: Path, capsys, first_part: Path
):
    """``--fine-attention`` on a part resumed from a model without attention at 16 x 16 adds cross-attention
    blocks there (zero output projections: the grown UNet's output is the model's, bit for bit), trains them,
    and saves a UNet that ``load_components`` reads; continuing the grown model without the option is refused
    in one line, since it would silently drop the new blocks."""
    from diffusers import UNet2DConditionModel

    from eqdiff.world.__main__ import main
    from eqdiff.world.architecture import grow_fine_attention, has_fine_attention, unet_architecture
    from eqdiff.world.base_model import train_world_model
    from eqdiff.world.preset import load_world_model

    small = small_world_config()
    first = first_part
    unet = load_world_model(first)[0]
    grown = grow_fine_attention(unet)
    assert not has_fine_attention(unet.config) and has_fine_attention(grown.config)
    layers = unet.config.layers_per_block  # an up block has one more, as in SD v1.x
    assert len(grown.down_blocks[0].attentions) == layers and len(grown.up_blocks[-1].attentions) == layers + 1
    # what --fine-attention builds from scratch is the grown architecture, so either continues the other
    built = UNet2DConditionModel(**unet_architecture(fine_attention=True))
    assert built.state_dict().keys() == grown.state_dict().keys()
    assert all(built.state_dict()[k].shape == v.shape for k, v in grown.state_dict().items())
    noisy, timesteps = torch.randn(2, 4, 16, 16), torch.tensor([10, 700])
    states = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        assert torch.equal(unet(noisy, timesteps, states).sample, grown(noisy, timesteps, states).sample)

    # no EMA here: two steps of an EMA starting at the new blocks' zeros would round to zero in fp16
    grow = replace(small, resume_from=str(first), fine_attention=True, ema_decay=0.0)
    part = train_world_model(tmp_path / "grown", grow)
    record = json.loads((part / "world_model.json").read_text())
    assert record["config"]["fine_attention"] and record["resumed_from"]["config"]["fine_attention"] is False
    components = load_components(ModelConfig(preset="world", path=str(part), cache_dir=str(tmp_path)))
    assert components.unet.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert components.unet.config.up_block_types[-1] == "CrossAttnUpBlock2D"
    trained = components.unet.down_blocks[0].attentions[0].proj_out.weight
    assert trained.abs().sum() > 0, "the new attention at 16 x 16 was not trained"

    capsys.readouterr()  # the training's progress bars
    assert main(["model", "--out", str(tmp_path / "next"), "--resume-from", str(part)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pass --fine-attention" in error and not (tmp_path / "next").exists()


def test_hard_negative_captions_swap_one_attribute_with_the_same_words_dropped():
    """The text encoder's hard negatives (NegCLIP): each is the image's training caption with one attribute
    swapped, a different attribute each, never the caption itself; the positive caption is the one the plain
    contrastive phase draws from the same random stream."""
    from eqdiff.world.base_model import WorldTrainConfig
    from eqdiff.world.text_encoder import captions_with_negatives, training_captions

    config = WorldTrainConfig(second_colour=0.5)
    specs = [random_spec(np.random.default_rng([4, i])) for i in range(40)]
    plain = training_captions(specs, torch.arange(40), np.random.default_rng(1), config, 0.0)
    rng, choice = np.random.default_rng(1), np.random.default_rng(2)
    one_word = 0
    for spec, expected in zip(specs, plain, strict=True):
        positive, negatives = captions_with_negatives(spec, rng, choice, config, 3)
        assert positive == expected
        shown = [n for n in negatives if n is not None]
        assert len(negatives) == 3 and shown and positive not in shown and len(set(shown)) == len(shown)
        for negative in shown:
            a, b = positive.split(), negative.split()
            one_word += len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1
    assert one_word > 40, "most hard negatives differ from their caption in exactly one word"


@pytest.mark.slow
def test_a_resumed_part_can_train_a_new_text_encoder_with_hard_negatives_and_keep_the_vae(
    tmp_path: Path, capsys, first_part: Path
):
    """``--new-text-encoder`` on a resumed part trains a text encoder of its own (here with hard negatives), keeps
    the model's VAE byte for byte and continues its UNet under the new encoder; the part's text settings are
    recorded as its own, so a part resumed from it keeps that encoder; the option without ``--resume-from`` is
    refused in one line."""
    from eqdiff.world.__main__ import main
    from eqdiff.world.base_model import first_part_settings, train_world_model

    first = first_part
    new = new_encoder_part(first, text_hard_negatives=2, text_steps=3, text_tower_pooling="mean+max")
    part = train_world_model(tmp_path / "part", new)
    for path in (first / "vae").iterdir():
        assert (part / "vae" / path.name).read_bytes() == path.read_bytes(), f"vae/{path.name} changed"
    before = load_components(ModelConfig(preset="world", path=str(first), cache_dir=str(tmp_path)))
    after = load_components(ModelConfig(preset="world", path=str(part), cache_dir=str(tmp_path)))
    encoder_changed = [
        not torch.equal(a, b)
        for a, b in zip(before.text_encoder.parameters(), after.text_encoder.parameters(), strict=True)
    ]
    assert sum(encoder_changed) > len(encoder_changed) // 2, "the part did not train a new text encoder"
    settings = first_part_settings(part)
    assert settings["text_hard_negatives"] == 2 and settings["text_steps"] == 3 and settings["vae_steps"] == 2

    capsys.readouterr()
    assert main(["model", "--out", str(tmp_path / "x"), "--new-text-encoder"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--resume-from" in error and not (tmp_path / "x").exists()
    assert main(["model", "--out", str(tmp_path / "x"), "--text-tower-pooling", "max"]) == 2
    assert "expected one of mean, mean+max" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # a part resumed from it without the option keeps its encoder: another text setting is refused
    assert main(["model", "--out", str(tmp_path / "x"), "--resume-from", str(part), "--text-steps", "5"]) == 2
    assert "--text-steps 5 would have no effect" in capsys.readouterr().err


def test_caption_labels_name_exactly_the_attributes_a_caption_shows():
    """The attribute heads' labels: in a full caption every attribute is named with the spec's value, but a
    plain pattern and a scene without a phrase, which no word names; a dropped word leaves its attribute
    unlabelled; the second colour is labelled only when the caption names it."""
    from eqdiff.world.text_encoder import IGNORED, caption_labels
    from eqdiff.world.vocabulary import ATTRIBUTES, caption

    seen = {name: 0 for name in ATTRIBUTES}
    for i in range(200):
        spec = random_spec(np.random.default_rng([5, i]))
        values = {"scene": spec.scene, "style": spec.style, **vars(spec.identity)}
        full = caption_labels(spec, caption(spec, None, 1.0, 1.0))
        unnamed = {"pattern"} if spec.identity.pattern == "plain" else set()
        unnamed |= {"scene"} if spec.scene in ("studio", "clutter") else set()
        unnamed |= {"second"} if spec.identity.pattern == "plain" else set()
        for name, label in full.items():
            assert (label == IGNORED) == (name in unnamed), (name, caption(spec, None, 1.0, 1.0))
            if label != IGNORED:
                assert ATTRIBUTES[name][label] == values[name]
                seen[name] += 1
        assert caption_labels(spec, caption(spec))["second"] == IGNORED  # the shipped captions never name it
        bare = caption_labels(spec, caption(spec, np.random.default_rng(i), 0.0))
        assert {name for name, label in bare.items() if label != IGNORED} == {"shape", "style"}
    assert min(seen.values()) > 50


@pytest.mark.slow
def test_a_resumed_part_can_train_a_new_unet_under_a_text_encoder_with_attribute_heads(
    tmp_path: Path, capsys, first_part: Path
):
    """``--new-unet`` on a resumed part builds its UNet from scratch (here with attention at 16 x 16, which the
    model has not: a new UNet is not grown), under a new text encoder trained with the attribute heads; the VAE
    is kept byte for byte and the settings recorded; the option without ``--resume-from`` is refused."""
    from eqdiff.world.__main__ import main
    from eqdiff.world.architecture import has_fine_attention
    from eqdiff.world.base_model import first_part_settings, train_world_model

    first = first_part
    new = new_encoder_part(first, new_unet=True, fine_attention=True, text_attribute_loss=1.0, text_steps=3)
    part = train_world_model(tmp_path / "part", new)
    for path in (first / "vae").iterdir():
        assert (part / "vae" / path.name).read_bytes() == path.read_bytes(), f"vae/{path.name} changed"
    after = load_components(ModelConfig(preset="world", path=str(part), cache_dir=str(tmp_path)))
    assert has_fine_attention(after.unet.config), "a new UNet has the part's architecture"
    assert all(torch.isfinite(p).all() for p in after.text_encoder.parameters())
    whole = json.loads((part / "world_model.json").read_text())
    record = whole["config"]
    assert record["new_unet"] and record["text_attribute_loss"] == 1.0
    assert set(whole["text_separation"]) == {"pattern", "shape", "colour"}
    assert all(distance > 0 for distance in whole["text_separation"].values())
    assert first_part_settings(part)["text_attribute_loss"] == 1.0
    # a new UNet under the kept encoder of a model with attention at 16 x 16, built without it: not refused
    kept = replace(new, resume_from=str(part), new_text_encoder=False, fine_attention=False)
    plain = train_world_model(tmp_path / "plain", kept)
    assert not has_fine_attention(load_components(ModelConfig(preset="world", path=str(plain))).unet.config)

    capsys.readouterr()
    assert main(["model", "--out", str(tmp_path / "x"), "--new-unet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--new-unet replaces the UNet" in error and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_check_base_samples_the_model_and_reports_what_it_recognises(tmp_path: Path, capsys):
    """``check-base`` on the shipped model (a few samples, 2 denoising steps): the summary has the three
    attributes of the base model's acceptance and the pattern beside them, "all three" is over the three only,
    and the contact sheet has one cell per sample."""
    from PIL import Image

    from eqdiff.world.__main__ import main

    out = tmp_path / "check"
    args = ["check-base", "--out", str(out), "--num-samples", "4", "--num-inference-steps", "2"]
    assert main([*args, "--model-path", str(SHIPPED_MODEL)]) == 0
    assert "pattern" in capsys.readouterr().out
    summary = json.loads((out / "base_check.json").read_text())
    assert list(summary["recognised"]) == ["shape", "colour", "style", "pattern"]
    three = [all(s["hit"][k] for k in ("shape", "colour", "style")) for s in summary["samples"]]
    assert summary["recognised_all"] == sum(three) / 4 and len(summary["samples"]) == 4
    assert set(summary["evaluator_accuracy"]) == set(summary["recognised"])
    assert Image.open(out / "base_check.png").size == (4 * 128, 128 + 26)
