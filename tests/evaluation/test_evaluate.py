"""CLIP-T / CLIP-I / DINO-I (docs/method.md, Evaluation): torchmetrics agreement, identities, invariances, model
errors."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support.metric_models import (
    _TensorFeatures,
    noise_image,
    save_small_clip,
    small_dino_config,
    small_models,
    write_samples,
)
from transformers import CLIPModel, CLIPProcessor, ViTModel

from eqdiff.config import ConfigError, EvaluateConfig
from eqdiff.evaluation.evaluate import (
    MetricModelError,
    clip_text,
    embed_images,
    embed_texts,
    evaluate,
    load_metric_models,
    pairwise_mean_cosine,
)
from eqdiff.io.artifacts import save_png


def test_clip_t_agrees_with_torchmetrics_clipscore(tmp_path: Path) -> None:
    from torchmetrics.multimodal import CLIPScore

    clip_dir = save_small_clip(tmp_path / "clip")
    models = load_metric_models(
        EvaluateConfig(clip_model=str(clip_dir)), dino_architecture=small_dino_config(), device="cpu"
    )
    # 224x224 inputs go through both preprocessings unresized; the others are resized, by PIL bicubic here (as
    # Custom Diffusion's torchvision-on-PIL transform) and by torchvision's tensor bicubic in transformers'
    # CLIPImageProcessor: about one grey level apart, hence the looser tolerance for them.
    sizes = [(224, 224)] * 4 + [(64, 64), (150, 100), (90, 300)]
    texts = [
        clip_text("a <new1> toy on the beach", "<new1>"),
        "a watercolor painting of a toy",
        "a toy in the jungle",
        "a red cube",
        "a dog",
        "a toy on a table",
        "a cube",
    ]
    paths, images = [], []
    for i, size in enumerate(sizes):
        image = noise_image(i, size)
        paths.append(tmp_path / f"{i}.png")
        save_png(paths[-1], image)
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))  # uint8 (3, H, W)
    image_features, _ = embed_images(paths, models, batch_size=3)
    ours = 100 * (image_features * embed_texts(texts, models, batch_size=3)).sum(-1)

    metric = CLIPScore(
        model_name_or_path=lambda: (
            _TensorFeatures(CLIPModel.from_pretrained(clip_dir)),
            CLIPProcessor.from_pretrained(clip_dir),
        )
    )
    theirs = []
    for image, text in zip(images, texts, strict=True):
        metric.update(image, text)
        theirs.append(float(metric.compute()))  # per sample: its mean over one pair, clamped at 0
        metric.reset()
    theirs = torch.tensor(theirs, dtype=ours.dtype)
    unclamped = theirs > 0
    exact = torch.tensor([size == (224, 224) for size in sizes])
    assert (unclamped & exact).sum() >= 2 and (unclamped & ~exact).sum() >= 1, f"too few to compare: {theirs}"
    torch.testing.assert_close(ours[unclamped & exact], theirs[unclamped & exact], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[unclamped & ~exact], theirs[unclamped & ~exact], atol=2e-2, rtol=0)
    # Where torchmetrics clamps to 0, our raw cosine is <= 0 (up to the resize difference).
    assert (ours[~unclamped] <= 2e-2).all()


def test_identical_image_sets_score_one(tmp_path: Path) -> None:
    photo = noise_image(7, (120, 90))
    subject = tmp_path / "subject"
    for i in range(3):
        save_png(subject / f"{i:02d}.png", photo)
    samples = write_samples(tmp_path / "samples", per_prompt=1)
    for entry in json.loads((samples / "index.json").read_text())["images"]:
        save_png(samples / entry["file"], photo)
    result = evaluate(samples, subject, EvaluateConfig(), models=small_models())
    for prompt_set in ("unstylized", "stylized"):
        assert result[prompt_set]["clip_i"] == pytest.approx(1.0, abs=1e-5)
        assert result[prompt_set]["dino_i"] == pytest.approx(1.0, abs=1e-5)
    assert result["calibrated"] is False


def test_pairwise_mean_is_mean_of_cosine_matrix(tmp_path: Path) -> None:
    models = small_models()
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        save_png(paths[-1], noise_image(i + 20))
    clip_features, dino_features = embed_images(paths, models, batch_size=4)
    for features in (clip_features, dino_features):
        gram = features @ features.T
        torch.testing.assert_close(torch.diagonal(gram), torch.ones(4), atol=1e-5, rtol=0)
        # The all-pairs mean of a set with itself is |mean unit embedding|^2, not 1 (distinct images).
        mean = features.double().mean(0)
        assert pairwise_mean_cosine(features, features) == pytest.approx(float(mean @ mean), abs=1e-9)
        assert pairwise_mean_cosine(features[:2], features) == pytest.approx(float(gram[:2].mean()), abs=1e-6)


def _numbers(result: dict) -> dict:
    return {s: {k: v for k, v in result[s].items()} for s in ("unstylized", "stylized")}


def test_metrics_invariant_to_order_and_batch_size(tmp_path: Path, subject_dir: Path) -> None:
    samples = write_samples(tmp_path / "samples", per_prompt=3)
    models = small_models()
    reference = evaluate(samples, subject_dir, EvaluateConfig(batch_size=16), models=models)
    index_path = samples / "index.json"
    index = json.loads(index_path.read_text())
    random.Random(0).shuffle(index["images"])
    index_path.write_text(json.dumps(index))
    for batch_size in (1, 4):
        shuffled = evaluate(samples, subject_dir, EvaluateConfig(batch_size=batch_size), models=models)
        for prompt_set, values in _numbers(reference).items():
            for key, value in values.items():
                assert shuffled[prompt_set][key] == pytest.approx(value, abs=1e-5), (
                    prompt_set,
                    key,
                    batch_size,
                )
        for prompt_set in ("unstylized", "stylized"):
            pairs = zip(shuffled["per_prompt"][prompt_set], reference["per_prompt"][prompt_set], strict=True)
            for ours, theirs in pairs:
                assert ours["clip_t"] == pytest.approx(theirs["clip_t"], abs=1e-5)
    assert reference["unstylized"]["n_images"] == 6 and reference["stylized"]["n_images"] == 3
    assert reference["unstylized"]["n_prompts"] == 2


def test_clip_text_removes_the_placeholder() -> None:
    assert clip_text("a <new1> toy on the beach", "<new1>") == "a toy on the beach"
    assert clip_text("<new1>  toy, watercolor", "<new1>") == "toy, watercolor"
    assert clip_text("a toy on the beach", "<new1>") == "a toy on the beach"


def test_prompt_without_placeholder_is_scored_as_written(
    tmp_path: Path, subject_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = write_samples(
        tmp_path / "samples",
        per_prompt=1,
        templates={"unstylized": ("a toy on the beach", "a {} in the jungle")},
    )
    models = small_models()
    with caplog.at_level(logging.WARNING, logger="eqdiff.evaluation.evaluate"):
        result = evaluate(samples, subject_dir, EvaluateConfig(), models=models)
    warnings = [r for r in caplog.records if "do not contain <new1>" in r.getMessage()]
    assert len(warnings) == 1 and "1 prompt(s)" in warnings[0].getMessage()
    plain, slotted = result["per_prompt"]["unstylized"]
    assert plain["text"] == plain["prompt"] == "a toy on the beach"
    assert slotted["text"] == "a toy in the jungle"
    # Same text as the placeholder-free version of the other prompt's template: scored the same way.
    features, _ = embed_images([samples / "unstylized/000_00.png"], models, batch_size=1)
    cosine = float((features * embed_texts(["a toy on the beach"], models, batch_size=1)).sum())
    assert plain["clip_t"] == pytest.approx(2.5 * max(cosine, 0.0), abs=1e-6)
    assert "stylized" not in result


def test_missing_model_directory_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip"
    with pytest.raises(MetricModelError, match=f"evaluate.clip_model: {missing}"):
        small_models(EvaluateConfig(clip_model=str(missing)))
    with pytest.raises(MetricModelError, match=f"evaluate.dino_model: {missing}"):
        small_models(EvaluateConfig(dino_model=str(missing)))


def test_wrong_model_directory_names_the_path(tmp_path: Path) -> None:
    clip_dir = save_small_clip(tmp_path / "clip")
    dino_dir = tmp_path / "dino"
    ViTModel(small_dino_config(), add_pooling_layer=False).save_pretrained(dino_dir)
    with pytest.raises(MetricModelError, match=f"{dino_dir} holds a 'vit' model, expected 'clip'"):
        small_models(EvaluateConfig(clip_model=str(dino_dir)))
    with pytest.raises(MetricModelError, match=f"{clip_dir} holds a 'clip' model, expected 'vit'"):
        small_models(EvaluateConfig(dino_model=str(clip_dir)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetricModelError, match=f"{empty} has no readable config.json"):
        small_models(EvaluateConfig(clip_model=str(empty)))
    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MetricModelError, match=f"could not load {broken}"):
        small_models(EvaluateConfig(clip_model=str(broken)))


def test_evaluate_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="evaluate.batch_size"):
        EvaluateConfig(batch_size=0)
    with pytest.raises(ConfigError, match="evaluate.clip_modle: unknown key"):
        EvaluateConfig.from_mapping({"clip_modle": "x"})


def test_evaluate_stage_error_leaves_no_output(tmp_path: Path, subject_dir: Path) -> None:
    import argparse

    from eqdiff.stages import evaluate as stage

    samples = write_samples(tmp_path / "samples", per_prompt=1)
    out = tmp_path / "metrics.json"
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    args = parser.parse_args(["--samples", str(samples), "--subject-dir", str(subject_dir), "--out", str(out)])
    with pytest.raises(MetricModelError, match="evaluate.dino_model"):
        stage.main(args, {"evaluate": {"dino_model": str(tmp_path / "nowhere")}})
    assert not out.exists()


def test_evaluate_cli_error_is_one_line(tmp_path: Path, subject_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eqdiff.cli import main

    samples = write_samples(tmp_path / "samples", per_prompt=1)
    out = tmp_path / "metrics.json"
    missing = tmp_path / "nowhere"
    code = main(
        [
            "evaluate",
            "--samples",
            str(samples),
            "--subject-dir",
            str(subject_dir),
            "--out",
            str(out),
            "-S",
            f"evaluate.clip_model={missing}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(missing) in err and "Traceback" not in err
    assert not out.exists()
