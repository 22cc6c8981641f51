"""The world evaluators (docs/world-evaluators.md): the shipped weights reach their recorded accuracy on fresh
held-out renders, the identity embedding ignores scene and style, prompts parse to their scene / style, and
``evaluate`` with ``world: true`` writes the world metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.metric_models import small_models, write_samples

from eqdiff.config import EvaluateConfig
from eqdiff.evaluation.evaluate import evaluate, split_metrics
from eqdiff.io.artifacts import save_png
from eqdiff.world.evaluator_training import draw_specs, gaussian_blur, measure_accuracy, render_specs
from eqdiff.world.evaluators import WEIGHTS_DIR, EvaluatorError, WorldEvaluator, prompt_targets, sha256
from eqdiff.world.render import render
from eqdiff.world.subjects import make_world_subject
from eqdiff.world.vocabulary import HELD_OUT, SCENE_PHRASES, STYLE_FORMS, random_identity, random_spec

PROMPT_LISTS = Path(__file__).parents[2] / "eqdiff" / "prompt_lists"


@pytest.fixture(scope="module")
def evaluator() -> WorldEvaluator:
    return WorldEvaluator.load()


def test_shipped_weights_match_their_digest_and_size(evaluator: WorldEvaluator) -> None:
    weights = WEIGHTS_DIR / "evaluator.safetensors"
    assert sha256(weights) == evaluator.record["sha256"]
    assert weights.stat().st_size < 2 * 2**20


@pytest.mark.slow
def test_shipped_evaluator_reaches_its_recorded_accuracy(evaluator: WorldEvaluator) -> None:
    # Fresh renders: a seed that neither training nor the recorded measurement used.
    specs = draw_specs(2000, seed=4242, held_out=True)
    images, _ = render_specs(specs, "test renders")
    measured = measure_accuracy(evaluator.net, images, specs)
    recorded = evaluator.record["accuracy"]
    assert evaluator.accuracy == recorded["heads"]
    for head, value in recorded["heads"].items():
        assert measured["heads"][head] >= value - 0.02, (head, measured["heads"][head], value)
    for head, value in recorded["heads_blurred"].items():  # the blur the VAE's decodings have
        assert measured["heads_blurred"][head] >= value - 0.02, (head, measured["heads_blurred"][head], value)
    assert measured["identity"] >= recorded["identity"] - 0.02


def test_gaussian_blur_is_per_image_and_keeps_brightness() -> None:
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = gaussian_blur(pixels, torch.tensor([0.0, 0.7, 1.5]))
    assert torch.equal(blurred[0], pixels[0])  # sigma 0: the image as it was
    assert torch.allclose(blurred.mean(dim=(1, 2, 3)), pixels.mean(dim=(1, 2, 3)), atol=2e-3)
    spread = [float(image.std()) for image in blurred]
    assert spread[0] > spread[1] > spread[2] > 0  # wider sigma, smoother image
    alone = gaussian_blur(pixels[1:2], torch.tensor([0.7]))
    assert torch.allclose(alone, blurred[1:2], atol=1e-6)  # an image's blur ignores its batch


def test_identity_embedding_ignores_scene_and_style(evaluator: WorldEvaluator) -> None:
    rng = np.random.default_rng(7)
    first, same, other = [], [], []
    for _ in range(50):
        identity = random_identity(rng, allow_held_out=True)
        stranger = random_identity(rng, allow_held_out=True)
        while stranger == identity:
            stranger = random_identity(rng, allow_held_out=True)
        first.append(render(random_spec(rng, identity))[0])
        same.append(render(random_spec(rng, identity))[0])
        other.append(render(random_spec(rng, stranger))[0])
    anchor, positive, negative = (evaluator.identity_embedding(x) for x in (first, same, other))
    assert torch.allclose(anchor.norm(dim=-1), torch.ones(50), atol=1e-5)
    same_cosine = (anchor * positive).sum(-1).mean()
    other_cosine = (anchor * negative).sum(-1).mean()
    assert same_cosine > other_cosine + 0.2, (same_cosine, other_cosine)


def test_every_world_prompt_parses_to_its_scene_and_style() -> None:
    subject = "<new1> ball"
    expected_by_template = {"a {}" + phrase: {"style": "photo", "scene": s} for s, phrase in SCENE_PHRASES.items()}
    expected_by_template.update({form: {"style": style} for style, form in STYLE_FORMS.items() if style != "photo"})
    for path in sorted(PROMPT_LISTS.glob("world_*.txt")):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert lines, path
        for template in lines:
            assert prompt_targets(template.format(subject), "<new1>") == expected_by_template[template], template
    assert prompt_targets("a watercolor painting of a <new1> ball", "<new1>") == {"style": "watercolor"}
    assert prompt_targets("a <new1> ball on the beach", "<new1>") == {"style": "photo", "scene": "beach"}
    assert prompt_targets("a photo of a <new1> ball", "<new1>") == {"style": "photo"}


def test_evaluate_with_world_writes_the_world_metrics(tmp_path: Path, subject_dir: Path) -> None:
    samples = write_samples(tmp_path / "samples", per_prompt=1)
    config = EvaluateConfig(world=True)
    result = evaluate(samples, subject_dir, config, models=small_models(config))
    numbers, described = (record.to_json() for record in split_metrics(result))
    for prompt_set in ("unstylized", "stylized"):
        block = numbers[prompt_set]
        assert {"world_text", "world_identity", "world_identity_match"} <= block.keys()
        assert 0 <= block["world_text"] <= 1 and 0 <= block["world_identity_match"] <= 1
        assert -1 <= block["world_identity"] <= 1
    assert described["world_evaluator"]["sha256"] == WorldEvaluator.load().record["sha256"]
    assert described["world_evaluator"]["accuracy"]["heads"].keys() >= {"scene", "style", "shape"}
    json.dumps(numbers)  # numbers only: what dvc metrics reads
    without = evaluate(samples, subject_dir, EvaluateConfig(), models=small_models())
    assert "world_text" not in without["unstylized"] and "world_evaluator" not in without


def test_world_metrics_of_renders_that_follow_their_prompts(tmp_path: Path) -> None:
    """Samples drawn as their prompts ask, of the photos' identity: text alignment and identity are high."""
    identity = HELD_OUT[1]
    rng = np.random.default_rng(3)
    photos = tmp_path / "box"
    for i in range(4):
        save_png(photos / f"{i:02d}.png", render(random_spec(rng, identity, "clutter", "photo"))[0])
    samples = write_samples(
        tmp_path / "samples",
        class_noun="box",
        per_prompt=3,
        templates={"unstylized": ("a {} on the beach", "a {} in the snow"), "stylized": ("a mosaic of a {}",)},
    )
    index = json.loads((samples / "index.json").read_text())
    for entry in index["images"]:
        targets = prompt_targets(entry["prompt"], "<new1>")
        spec = random_spec(rng, identity, targets.get("scene", "studio"), targets["style"])
        save_png(samples / entry["file"], render(spec)[0])
    config = EvaluateConfig(world=True)
    result = evaluate(samples, photos, config, models=small_models(config))
    for prompt_set in ("unstylized", "stylized"):
        assert result[prompt_set]["world_text"] >= 0.8, result[prompt_set]
        assert result[prompt_set]["world_identity"] >= 0.7, result[prompt_set]
    # Nothing of the photos' photo style or cluttered room in the samples: no leak. The unstylized prompts ask
    # for the photos' own (photo) style, so they have no style leak; the stylized ones name no scene.
    assert result["unstylized"]["scene_leak"] == 0 and "style_leak" not in result["unstylized"]
    assert result["stylized"]["style_leak"] == 0 and "scene_leak" not in result["stylized"]
    assert result["world_evaluator"]["real_style"] == "photo" and result["world_evaluator"]["real_scene"] == "clutter"


def test_style_and_scene_leaks_count_the_photos_style_and_scene_where_another_is_asked(tmp_path: Path) -> None:
    """Photos in watercolor; samples that keep the watercolor and the cluttered room where the prompt asks for
    another style and scene leak, and the prompt naming the photos' own style is left out of the style leak."""
    identity = HELD_OUT[0]
    photos = make_world_subject(tmp_path / "ball", "ball", num_photos=4, style="watercolor")
    templates = {
        "unstylized": ("a {} on the beach", "a {} in the snow"),
        "stylized": ("a watercolor painting of a {}", "a mosaic of a {}", "a pencil sketch of a {}"),
    }
    samples = write_samples(tmp_path / "samples", class_noun="ball", per_prompt=2, templates=templates)
    index = json.loads((samples / "index.json").read_text())
    rng = np.random.default_rng(5)
    for entry in index["images"]:
        leak = entry["prompt_set"] == "unstylized" or "mosaic" not in entry["prompt"]  # all but the mosaic
        targets = prompt_targets(entry["prompt"], "<new1>")
        style = "watercolor" if leak else targets["style"]
        scene = "clutter" if leak else targets.get("scene", "studio")
        save_png(samples / entry["file"], render(random_spec(rng, identity, scene, style))[0])
    config = EvaluateConfig(world=True)
    result = evaluate(samples, photos, config, models=small_models(config))
    record = result["world_evaluator"]
    assert (record["real_style"], record["real_scene"]) == ("watercolor", "clutter")
    assert result["unstylized"]["style_leak"] == 1 and result["unstylized"]["scene_leak"] == 1
    # stylized: the watercolor prompt (2 images) is left out; the pencil prompt (2) leaks, the mosaic one (2) not
    assert result["stylized"]["style_leak"] == 0.5 and "scene_leak" not in result["stylized"]
    images = record["images"]
    assert len(images) == len(index["images"]) and images[0]["file"] == index["images"][0]["file"]
    assert set(images[0]["probabilities"]) == set(images[0]["predictions"]) >= {"style", "scene", "shape"}
    assert abs(sum(images[0]["probabilities"]["style"]) - 1) < 1e-3
    numbers, described = (r.to_json() for r in split_metrics(result))
    assert described["world_evaluator"]["images"] == images and numbers["stylized"]["style_leak"] == 0.5


def test_altered_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "evaluator"
    folder.mkdir()
    for name in ("evaluator.safetensors", "evaluator.json"):
        (folder / name).write_bytes((WEIGHTS_DIR / name).read_bytes())
    weights = folder / "evaluator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    with pytest.raises(EvaluatorError, match="does not match the sha256"):
        WorldEvaluator.load(folder)
    with pytest.raises(EvaluatorError, match="is missing"):
        WorldEvaluator.load(tmp_path / "nowhere")


def test_report_shows_the_world_columns_and_plot_axes(tmp_path: Path) -> None:
    from eqdiff.evaluation.report import build_report
    from eqdiff.io.artifacts import write_json
    from eqdiff.prep.sample import make_sample_subject

    runs, photos = tmp_path / "runs", make_sample_subject(tmp_path / "toy", num_photos=2)
    config = EvaluateConfig(world=True)
    models = small_models(config)
    for v, variant in enumerate(("A", "F")):
        samples = write_samples(runs / "toy" / variant / "samples", variant=variant, per_prompt=1, seed=v)
        numbers, info = (record.to_json() for record in split_metrics(evaluate(samples, photos, config, models=models)))
        write_json(runs / "toy" / variant / "metrics.json", numbers)
        write_json(runs / "toy" / variant / "evaluation.json", info)
    out = build_report(runs, tmp_path / "report")
    flags = json.loads((out / "report.json").read_text())
    assert flags["calibrated"] is False and flags["world_evaluator"]["sha256"] == info["world_evaluator"]["sha256"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variants"]["F"]["stylized"]["world_text"] == numbers["stylized"]["world_text"]
    table = (out / "table.md").read_text()
    # the calibrated world columns lead; the banner names exactly what is uncalibrated
    assert (
        "| Variant | unstylized World-T | unstylized World-I | unstylized Style leak | unstylized Scene leak"
        " | unstylized CLIP-T | unstylized CLIP-I | unstylized DINO-I | stylized World-T" in table
    )
    assert "UNCALIBRATED: the CLIP-T, CLIP-I and DINO-I columns" in table
    assert "Both come from the world evaluators (eqdiff/world/weights/evaluator, sha256" in table
    assert "| paper: EqDiff (Ours) | — | — | — | — | 0.782 | 0.810 | 0.670 | — | — | — | — | 0.790" in table
    points = json.loads((out / "tradeoff.json").read_text())
    assert {p["world_identity"] for p in points} == {
        json.loads((runs / "toy" / p["variant"] / "metrics.json").read_text())[p["prompt_set"]]["world_identity"]
        for p in points
    }
    index = (out / "index.html").read_text()
    assert "World-T" in index and "world evaluators" in index
    assert "UNCALIBRATED: the CLIP-T, CLIP-I and DINO-I columns" in index
    # the first screen: the samples, A beside F, each variant headed by its world numbers
    first = index.index('<table class="variants glance" data-subject="toy">')
    assert first < index.index("<h2>Average over subjects</h2>")
    glance = index[first : index.index("</table>", first)]
    assert glance.index('<th data-variant="A">') < glance.index('<th data-variant="F">')
    assert 'src="gallery/assets/toy/A/unstylized/000_00.png"' in glance and "World-I " in glance
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', glance))
    # Every world number has its interval (report.json) and F is compared with A, image by image.
    found = flags["intervals"]
    value, low, high = found["variants"]["F"]["stylized"]["world_text"]
    assert value == numbers["stylized"]["world_text"] and 0 <= low <= value <= high <= 1
    difference = found["differences"]["F"]["unstylized"]["world_identity"]
    assert set(difference) == {"difference", "interval", "p", "p_holm"} and difference["p_holm"] >= difference["p"]
    assert "images" not in flags["world_evaluator"] and "intervals" not in summary
    assert f"{value:.3f} [{low:.2f}, {high:.2f}]" in table and "## Paired differences against A" in table
