"""The procedural world, its base model (the ``world`` preset) and the world experiment's pipeline file
(docs/world.md)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.import_graph import WORLD_EXPERIMENT, world_experiment_dvc

from eqdiff.config import ModelConfig
from eqdiff.errors import DataError, ModelError
from eqdiff.models.components import load_components
from eqdiff.world.preset import SHIPPED_MODEL, expand_token_table, world_digest
from eqdiff.world.render import render
from eqdiff.world.subjects import make_world_subject
from eqdiff.world.vocabulary import (
    HELD_OUT,
    HIGH_FREQUENCY_STYLES,
    LOW_FREQUENCY_STYLES,
    STYLES,
    caption,
    is_held_out,
    random_spec,
)

REPO = Path(__file__).resolve().parents[2]


def test_render_is_seeded_and_its_mask_is_the_object():
    spec = random_spec(np.random.default_rng(3), scene="beach", style="photo")
    (image, mask), (again, mask_again) = render(spec), render(spec)
    assert image.tobytes() == again.tobytes() and mask.tobytes() == mask_again.tobytes()
    assert image.size == mask.size == (64, 64) and set(np.unique(np.asarray(mask))) <= {0, 255}
    covered = (np.asarray(mask) > 0).mean()
    assert 0.05 < covered < 0.6, covered
    other = render(replace(spec, seed=spec.seed + 1))[0]
    assert other.tobytes() != image.tobytes()


def _low_share(residual: np.ndarray, radius: float = 6) -> float:
    """Share of a residual image's energy (mean removed) at spatial frequencies within ``radius`` of zero."""
    power = (np.abs(np.fft.fft2(residual, axes=(0, 1))) ** 2).sum(-1)
    power[0, 0] = 0
    h, w = power.shape
    y, x = np.mgrid[:h, :w]
    low = np.hypot(np.minimum(y, h - y), np.minimum(x, w - x)) <= radius
    return float(power[low].sum() / power.sum())


def test_high_frequency_styles_live_in_high_frequencies_and_low_frequency_styles_in_low_ones():
    """The premise of FDTE made testable: what a style adds to a photo is mostly fine detail (pencil, mosaic) or
    mostly palette and lighting (watercolor, vintage), measured on the residual's spectrum."""
    rng = np.random.default_rng(0)
    shares = {style: [] for style in STYLES[1:]}
    for _ in range(12):
        spec = random_spec(rng, style="photo")
        photo = np.asarray(render(spec)[0], np.float32) / 255
        for style in shares:
            styled = np.asarray(render(replace(spec, style=style))[0], np.float32) / 255
            shares[style].append(_low_share(styled - photo))
    mean = {style: float(np.mean(values)) for style, values in shares.items()}
    assert all(mean[s] < 0.4 for s in HIGH_FREQUENCY_STYLES), mean
    assert all(mean[s] > 0.5 for s in LOW_FREQUENCY_STYLES), mean


def test_held_out_identities_are_never_drawn_for_training_and_captions_use_clip_words():
    from eqdiff.models.architectures import build_clip_tokenizer

    rng = np.random.default_rng(1)
    specs = [random_spec(rng) for _ in range(3000)]
    assert not any(is_held_out(spec.identity) for spec in specs)
    assert all(is_held_out(identity) for identity in HELD_OUT)
    tokenizer = build_clip_tokenizer(Path(__import__("tempfile").mkdtemp()))
    vocab = tokenizer.get_vocab()
    words = {word for spec in specs[:300] for word in caption(spec).split()}
    split = sorted(w for w in words if f"{w}</w>" not in vocab)
    assert split == ["checkered"] and tokenizer.tokenize("checkered") == ["chec", "kered</w>"], split
    assert caption(replace(specs[0], style="watercolor", scene="beach")).startswith("a watercolor painting of a ")


def test_captions_name_the_second_colour_only_when_asked_and_beside_both_colour_and_pattern():
    ball = random_spec(np.random.default_rng(0), identity=HELD_OUT[0], scene="beach", style="photo")
    assert caption(ball) == "a photo of a shiny yellow spotted ball on the beach"
    assert caption(ball, second=1.0) == "a photo of a shiny yellow purple spotted ball on the beach"
    plain = replace(ball, identity=replace(HELD_OUT[0], pattern="plain"))
    assert caption(plain, second=1.0) == "a photo of a shiny yellow ball on the beach"  # no second colour shows

    draw = np.random.default_rng(3)
    specs = [random_spec(draw) for _ in range(2000)]
    # second=0 draws nothing more: a seed's training captions are those the shipped model was trained on.
    first, again = np.random.default_rng(5), np.random.default_rng(5)
    assert [caption(s, first, 0.8) for s in specs] == [caption(s, again, 0.8, second=0.0) for s in specs]
    rng, named = np.random.default_rng(5), 0
    for spec in specs:
        words = caption(spec, rng, 0.8, second=0.7).split()
        identity = spec.identity
        if identity.pattern != "plain" and identity.second in words:
            at = words.index(identity.second)
            # between the body colour and the pattern word, never in place of the body colour
            assert words[at - 1] == identity.colour and words[at + 1] == identity.pattern, words
            named += 1
    patterned = sum(s.identity.pattern != "plain" for s in specs)
    assert 0.3 * patterned < named < 0.7 * patterned  # 0.7 x 0.8 x 0.8 of them on average


def test_world_subject_folder(tmp_path: Path):
    folder = make_world_subject(tmp_path / "ball", "ball", num_photos=4)
    assert sorted(p.name for p in folder.glob("*.png")) == ["00.png", "01.png", "02.png", "03.png"]
    assert sorted(p.name for p in (folder / "masks").glob("*.png")) == ["00.png", "01.png", "02.png", "03.png"]
    before = {p: p.read_bytes() for p in folder.rglob("*.png")}
    make_world_subject(folder, "ball", num_photos=4)  # the same call again: same bytes, nothing refused
    assert {p: p.read_bytes() for p in folder.rglob("*.png")} == before
    with pytest.raises(DataError, match="--world: 'dog' is not a held-out world subject"):
        make_world_subject(tmp_path / "dog", "dog")


def test_styled_subject_sets_are_read_in_their_style_and_keep_the_plain_sets_poses(tmp_path: Path):
    """``eqdiff sample --world NAME --photo-style S / --photo-scene C``: every photo in S (or C), the poses and so
    the exact masks of the plain set with the same seed, and the world evaluator reads S in at least 90 % of
    them for every style (docs/world-evaluators.md, "Calibration on styled subject sets", measures more)."""
    from eqdiff.stages.sample import run as sample
    from eqdiff.world.evaluators import WorldEvaluator

    evaluator = WorldEvaluator.load()
    plain = {name: make_world_subject(tmp_path / "plain" / name, name) for name in ("ball", "ring")}
    for style in STYLES:
        read = []
        for name, control in plain.items():
            folder = sample(tmp_path / style / name, 5, 0, world=name, photo_style=style)
            photos = sorted(folder.glob("*.png"))
            assert [(folder / "masks" / p.name).read_bytes() for p in photos] == [
                (control / "masks" / p.name).read_bytes() for p in photos
            ]
            read += [p["style"] == style and p["scene"] == "clutter" for p in evaluator.predict(load_images(photos))]
        assert sum(read) >= 0.9 * len(read), (style, sum(read), len(read))
    beach = sample(tmp_path / "beach", 5, 0, world="ball", photo_scene="beach")
    assert {p["scene"] for p in evaluator.predict(load_images(sorted(beach.glob("*.png"))))} == {"beach"}
    with pytest.raises(DataError, match=r"^--photo-style: 'oil' is not a world style \(one of: photo, pencil"):
        sample(tmp_path / "x", 5, 0, world="ball", photo_style="oil")
    with pytest.raises(DataError, match=r"^--photo-scene: only the world's subjects have styles and scenes; add"):
        sample(tmp_path / "y", 5, 0, photo_scene="beach")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def load_images(paths: list[Path]) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in paths]


def test_world_preset_loads_the_shipped_weights_through_load_components(tmp_path: Path):
    record = json.loads((SHIPPED_MODEL / "world_model.json").read_text())
    assert record["digest"] == world_digest(SHIPPED_MODEL), "the shipped weights differ from their record"
    components = load_components(ModelConfig(preset="world", cache_dir=str(tmp_path)))
    assert components.base_model_id == f"world:{record['digest']}" and components.native_resolution == 64
    assert components.unet.dtype == torch.float32 and len(components.tokenizer) == 49408
    # the shipped text encoder stores only the rows world captions use; the cache copy has the whole table again
    table = components.text_encoder.get_input_embeddings().weight
    used = components.tokenizer("a watercolor painting of a fuzzy red striped ball").input_ids
    assert table.shape == (49408, 64) and bool(table[used].abs().sum(dim=1).gt(0).all())
    assert int(table.abs().sum(dim=1).gt(0).sum()) == record["kept_token_ids"]
    assert max(p.stat().st_size for p in SHIPPED_MODEL.rglob("*") if p.is_file()) < 2_000_000
    # a world model folder whose text encoder has its whole table (saved before tables were compacted) loads too
    full = tmp_path / "full-table"
    shutil.copytree(SHIPPED_MODEL, full)
    expand_token_table(full / "text_encoder")
    again = load_components(ModelConfig(preset="world", path=str(full), cache_dir=str(tmp_path)))
    assert torch.equal(again.text_encoder.get_input_embeddings().weight, table)
    with pytest.raises(ModelError, match="is not a world model folder"):
        load_components(ModelConfig(preset="world", path=str(tmp_path / "nothing"), cache_dir=str(tmp_path)))


def test_world_experiment_pipeline_is_generated_from_the_root_one():
    expected = world_experiment_dvc((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    assert WORLD_EXPERIMENT.read_text(encoding="utf-8") == expected, "run `python tests/support/import_graph.py`"


def test_world_experiment_params_are_the_demos_but_for_its_subjects():
    """experiments/world/params.yaml keeps the demo's method settings: only what the experiment is differs."""
    import yaml

    demo = yaml.safe_load((REPO / "params.yaml").read_text())
    world = yaml.safe_load((REPO / "experiments" / "world" / "params.yaml").read_text())
    differs = {key for key in demo.keys() | world.keys() if demo.get(key) != world.get(key)}
    # (the demo trains A beside F since its photos are watercolors, as the experiment does: variants may agree)
    assert {"subjects", "classes"} <= differs <= {"subjects", "classes", "variants", "prompts"}, differs
    assert len(world["subjects"]) >= 5 and world["variants"] == ["A", "F"]
    assert all(Path(REPO / "experiments" / "world" / path).is_file() for path in world["prompts"].values())
