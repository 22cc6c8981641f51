"""CLIP-T, CLIP-I and DINO-I of generated images (docs/method.md, Evaluation; paper §5.1; Custom Diffusion's
``evaluate.py``).

- **CLIP-T** = mean over images of ``2.5 * max(cos(image, text), 0)`` (Hessel et al.'s CLIPScore with
  w = 2.5, as CustomConcept101 reports it). The text is the image's prompt with the placeholder token removed
  and spaces collapsed (``"a <new1> toy on the beach"`` -> ``"a toy on the beach"``). A prompt that does not
  contain the placeholder is scored as it is, and one warning per evaluation says how many such prompts there
  were. The mean raw cosine is kept too (``clip_t_cosine``; x100 it is torchmetrics' ``CLIPScore`` scale).
- **CLIP-I**, **DINO-I** = mean cosine over all (generated, real) pairs, i.e. the mean of the full
  generated x real cosine matrix (equal to the dot product of the two sets' mean unit embeddings).
- Models through transformers, from local directories: CLIP ViT-B/32 (``CLIPModel`` projected embeddings) and
  DINO ViT-S/16 (``ViTModel``, CLS token of ``last_hidden_state``; DINO checkpoints have no trained pooler).
  Without weights (``evaluate.clip_model`` / ``dino_model`` null) a seeded random model of the same
  architecture runs the same code, and every output says ``"calibrated": false``.
- Preprocessing as Custom Diffusion's evaluation (torchvision on PIL): CLIP = resize short side 224 bicubic,
  centre crop 224, CLIP mean/std; DINO = resize short side 256 bicubic, centre crop 224, ImageNet mean/std.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors import SafetensorError
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

from eqdiff.config import EvaluateConfig
from eqdiff.errors import DataError, EqDiffError
from eqdiff.evaluation.metric_registry import metric_family
from eqdiff.evaluation.sample_index import read_sample_index
from eqdiff.io.run_layout import EVALUATION_FILE
from eqdiff.io.schemas.evaluation import EVALUATION_FIELDS, EvaluationRecord, MetricsRecord, check_prompt_set
from eqdiff.io.schemas.samples import SampleIndex
from eqdiff.models.architectures import build_clip_tokenizer
from eqdiff.prep.subjects import discover_subject, load_image

logger = logging.getLogger(__name__)

# Values from openai/CLIP clip.py `_transform` and torchvision's ImageNet normalisation (DINO eval_linear.py).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_IMAGE_SIDE = 224
DINO_RESIZE_SIDE = 256
CLIPSCORE_WEIGHT = 2.5
"""Hessel et al.'s CLIPScore w (jmhessel/clipscore#17): CustomConcept101's and the paper's Table 1 scale."""


class MetricModelError(EqDiffError, ValueError):
    """A metric model directory is missing or holds another kind of model; the message names the path."""


def clip_text(prompt: str, placeholder: str) -> str:
    """The CLIP-T text: ``prompt`` without ``placeholder``, spaces collapsed; as written if it is absent."""
    return " ".join(prompt.replace(placeholder, " ").split())


# ----------------------------------------------------------------------------------------------------------
# Models.


@dataclass
class MetricModels:
    """The two metric backbones, their identities, and whether both carry real (pretrained) weights."""

    clip: CLIPModel
    tokenizer: CLIPTokenizer
    dino: ViTModel
    clip_id: str
    dino_id: str
    calibrated: bool

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device


def clip_vit_b32_config() -> CLIPConfig:
    """The architecture of ``openai/clip-vit-base-patch32`` (its config.json)."""
    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=512,
    )


def dino_vits16_config() -> ViTConfig:
    """The architecture of ``facebook/dino-vits16`` (its config.json)."""
    return ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )


def _model_type(path: Path, field: str, expected: str) -> None:
    """Check that ``path`` is a transformers directory of ``model_type == expected`` before loading it."""
    if not path.is_dir():
        raise MetricModelError(f"evaluate.{field}: {path} is not a directory")
    config_path = path / "config.json"
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        raise MetricModelError(
            f"evaluate.{field}: {path} has no readable config.json (expected a transformers {expected} model directory)"
        ) from None
    if model_type != expected:
        raise MetricModelError(f"evaluate.{field}: {path} holds a {model_type!r} model, expected {expected!r}")


def _load_pretrained(loader: Callable[[], Any], path: Path, field: str) -> Any:
    try:
        return loader()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetricModelError(f"evaluate.{field}: could not load {path} ({first})") from None


def _load_clip(config: EvaluateConfig, architecture: CLIPConfig | None) -> tuple[CLIPModel, CLIPTokenizer, str]:
    if config.clip_model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = CLIPModel(architecture or clip_vit_b32_config())
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = build_clip_tokenizer(Path(tmp))
        return model, tokenizer, f"random-init:clip-vit-b32:seed={config.seed}"
    path = Path(config.clip_model).expanduser()
    _model_type(path, "clip_model", "clip")
    model = _load_pretrained(lambda: CLIPModel.from_pretrained(path, local_files_only=True), path, "clip_model")
    tokenizer = _load_pretrained(lambda: CLIPTokenizer.from_pretrained(path, local_files_only=True), path, "clip_model")
    return model, tokenizer, str(path)


def _load_dino(config: EvaluateConfig, architecture: ViTConfig | None) -> tuple[ViTModel, str]:
    if config.dino_model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = ViTModel(architecture or dino_vits16_config(), add_pooling_layer=False)
        return model, f"random-init:dino-vits16:seed={config.seed}"
    path = Path(config.dino_model).expanduser()
    _model_type(path, "dino_model", "vit")
    loader = lambda: ViTModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)  # noqa: E731
    return _load_pretrained(loader, path, "dino_model"), str(path)


def load_metric_models(
    config: EvaluateConfig,
    clip_architecture: CLIPConfig | None = None,
    dino_architecture: ViTConfig | None = None,
    device: torch.device | str | None = None,
) -> MetricModels:
    """Load CLIP and DINO from ``config``'s directories, or build seeded random models where they are null.

    ``clip_architecture`` / ``dino_architecture`` replace the ViT-B/32 and ViT-S/16 sizes of a random model
    (tests use small ones); they are ignored for a model loaded from a directory. Models are fp32, eval mode.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clip, tokenizer, clip_id = _load_clip(config, clip_architecture)
    dino, dino_id = _load_dino(config, dino_architecture)
    for module in (clip, dino):
        module.requires_grad_(False).eval().to(device=device, dtype=torch.float32)
    calibrated = config.clip_model is not None and config.dino_model is not None
    return MetricModels(clip, tokenizer, dino, clip_id, dino_id, calibrated)


# ----------------------------------------------------------------------------------------------------------
# Preprocessing and embeddings.


def clip_preprocess(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, 224, 224) float32, CLIP-normalised (openai/CLIP ``_transform``)."""
    image = TF.resize(image.convert("RGB"), CLIP_IMAGE_SIDE, interpolation=InterpolationMode.BICUBIC)
    image = TF.center_crop(image, CLIP_IMAGE_SIDE)
    return TF.normalize(TF.to_tensor(image), CLIP_MEAN, CLIP_STD)


def dino_preprocess(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, 224, 224) float32, ImageNet-normalised (Custom Diffusion's DINO transform)."""
    image = TF.resize(image.convert("RGB"), DINO_RESIZE_SIDE, interpolation=InterpolationMode.BICUBIC)
    image = TF.center_crop(image, CLIP_IMAGE_SIDE)
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


@torch.no_grad()
def embed_images(
    paths: Sequence[Path], models: MetricModels, batch_size: int, desc: str = "embedding"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm CLIP and DINO embeddings of image files: ``(N, D_clip)``, ``(N, D_dino)`` float32 on CPU.

    Images are read (and validated) one batch at a time, so memory stays bounded by ``batch_size``.
    """
    clip_out, dino_out = [], []
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=None):
        images = [load_image(p) for p in paths[start : start + batch_size]]
        clip_pixels = torch.stack([clip_preprocess(im) for im in images]).to(models.device)
        dino_pixels = torch.stack([dino_preprocess(im) for im in images]).to(models.device)
        clip_out.append(models.clip.get_image_features(pixel_values=clip_pixels).pooler_output.float().cpu())
        dino_out.append(models.dino(pixel_values=dino_pixels).last_hidden_state[:, 0].float().cpu())
    return _unit(torch.cat(clip_out)), _unit(torch.cat(dino_out))


@torch.no_grad()
def embed_texts(texts: Sequence[str], models: MetricModels, batch_size: int) -> torch.Tensor:
    """Unit-norm CLIP text embeddings ``(N, D_clip)`` float32 on CPU; a text over 77 tokens is a DataError."""
    limit = models.clip.config.text_config.max_position_embeddings
    out = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        tokens = models.tokenizer(batch, padding=True, return_tensors="pt")
        if tokens.input_ids.shape[1] > limit:
            longest = max(batch, key=lambda t: len(models.tokenizer(t).input_ids))
            raise DataError(f"prompt {longest!r} is longer than CLIP's {limit} tokens")
        features = models.clip.get_text_features(
            input_ids=tokens.input_ids.to(models.device),
            attention_mask=tokens.attention_mask.to(models.device),
        )
        out.append(features.pooler_output.float().cpu())
    return _unit(torch.cat(out))


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True)


def pairwise_mean_cosine(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Mean of the full ``generated @ real.T`` cosine matrix (unit-norm rows): CLIP-I / DINO-I."""
    return float((generated.double() @ real.double().T).mean())


def clipscore(cosines: torch.Tensor) -> float:
    """CLIP-T: mean over images of ``2.5 * max(cos, 0)``."""
    return float((CLIPSCORE_WEIGHT * cosines.double().clamp(min=0)).mean())


# ----------------------------------------------------------------------------------------------------------
# The evaluation of one samples directory.


def _per_prompt(index: SampleIndex, cosines: torch.Tensor, texts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """CLIP-T per (prompt set, prompt index); two different prompts under one index are a DataError."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, image in enumerate(index.images):
        groups.setdefault((image.prompt_set, image.prompt_index), []).append(i)
    out: dict[str, list[dict[str, Any]]] = {}
    for (prompt_set, prompt_index), rows in sorted(groups.items()):
        prompts = {index.images[i].prompt for i in rows}
        if len(prompts) > 1:
            raise DataError(
                f"{index.directory / 'index.json'}: {prompt_set} prompt_index {prompt_index} "
                f"has {len(prompts)} different prompts"
            )
        out.setdefault(prompt_set, []).append(
            {
                "prompt_index": prompt_index,
                "prompt": index.images[rows[0]].prompt,
                "text": texts[rows[0]],
                "clip_t": clipscore(cosines[rows]),
                "n_images": len(rows),
            }
        )
    return out


def evaluate(
    samples_dir: str | Path,
    subject_dir: str | Path,
    config: EvaluateConfig,
    models: MetricModels | None = None,
) -> dict[str, Any]:
    """CLIP-T, CLIP-I and DINO-I of one samples directory against the subject's photos (docs/method.md, Evaluation).

    Returns the ``metrics.json`` mapping: ``{"unstylized": {clip_t, clip_t_cosine, clip_i, dino_i, n_images,
    n_prompts}, "stylized": {...}, "calibrated": bool, ...}`` with one block per prompt set of the samples (any
    name but a field of the two files; ``split_metrics`` makes the files of it), the model identities,
    ``subject_dir`` (as given; ``eqdiff report`` reads the photos from it) and ``per_prompt`` CLIP-T.
    ``calibrated`` is true only when both metric models were loaded from weights and the samples themselves say
    they are calibrated. ``models`` defaults to ``load_metric_models(config)``.
    With ``config.world``, each block also has ``world_text``, ``world_identity``, ``world_identity_match`` and,
    where the set asks for another style or scene than the photos', ``style_leak`` / ``scene_leak`` (the ``world``
    metric family of ``eqdiff.evaluation.metric_registry``), and ``world_evaluator`` records the evaluators'
    digest, measured accuracy and each image's reading.
    """
    index = read_sample_index(samples_dir)
    for name in index.prompt_sets:  # the mapping returned holds the sets' blocks beside the files' other fields
        check_prompt_set(name, f"{index.directory / SampleIndex.FILE}: prompt set")
    subject = discover_subject(subject_dir, index.class_noun, min_photos=1)
    models = models or load_metric_models(config)

    # 1. Embed the generated and the real images (the same models, the same preprocessing).
    generated_clip, generated_dino = embed_images(
        list(index.paths),
        models,
        config.batch_size,
        desc=f"{index.subject}/{index.variant} generated",
    )
    real_clip, real_dino = embed_images(subject.photos, models, config.batch_size, desc=f"{subject.name} real")

    # 2. Embed each distinct CLIP-T text once.
    texts = [clip_text(im.prompt, index.placeholder) for im in index.images]
    without = {im.prompt for im in index.images if index.placeholder not in im.prompt}
    if without:
        logger.warning(
            "%d prompt(s) in %s do not contain %s and are scored as written (e.g. %r)",
            len(without),
            index.directory / "index.json",
            index.placeholder,
            sorted(without)[0],
        )
    distinct = sorted(set(texts))
    text_features = embed_texts(distinct, models, config.batch_size)
    rows = torch.tensor([distinct.index(t) for t in texts])
    cosines = (generated_clip * text_features[rows]).sum(dim=-1)

    # 3. Aggregate per prompt set.
    result: dict[str, Any] = {
        "calibrated": models.calibrated and index.calibrated,
        "metric_models_calibrated": models.calibrated,
        "samples_calibrated": index.calibrated,
        "clip_model": models.clip_id,
        "dino_model": models.dino_id,
        "subject": index.subject,
        "variant": index.variant,
        "subject_dir": str(subject_dir),
        "n_real_images": len(subject.photos),
        "per_prompt": _per_prompt(index, cosines, texts),
    }
    for prompt_set in index.prompt_sets:
        selected = [i for i, im in enumerate(index.images) if im.prompt_set == prompt_set]
        result[prompt_set] = {
            "clip_t": clipscore(cosines[selected]),
            "clip_t_cosine": float(cosines[selected].double().mean()),
            "clip_i": pairwise_mean_cosine(generated_clip[selected], real_clip),
            "dino_i": pairwise_mean_cosine(generated_dino[selected], real_dino),
            "n_images": len(selected),
            "n_prompts": len({index.images[i].prompt_index for i in selected}),
        }
    # 4. The world-native metrics (world preset): the registered ``world`` family, the world evaluators' scene /
    # style / identity recognition.
    if config.world:
        family = metric_family("world")
        world = family.score(index, subject.photos)
        result[family.record] = world.pop(family.record)
        for prompt_set, scores in world.items():
            result[prompt_set].update(scores)
    assert all(math.isfinite(v) for s in index.prompt_sets for v in result[s].values())
    return result


"""The sidecar of ``metrics.json``: what was measured (calibration flags, metric models, per-prompt CLIP-T)."""


def split_metrics(result: dict[str, Any]) -> tuple[MetricsRecord, EvaluationRecord]:
    """``evaluate``'s mapping as its two files (``eqdiff.io.schemas.evaluation``): ``metrics.json`` (numbers: the
    prompt-set blocks and ``n_real_images``) and ``evaluation.json`` (the fields of ``EvaluationRecord``)."""
    described = {k: v for k, v in result.items() if k in EVALUATION_FIELDS}
    numbers = {k: v for k, v in result.items() if k not in described}
    return MetricsRecord.from_json(numbers, MetricsRecord.FILE), EvaluationRecord.from_json(described, EVALUATION_FILE)


def info_path(metrics: Path) -> Path:
    """Where ``eqdiff evaluate`` writes the sidecar of ``metrics`` by default (and ``eqdiff report`` reads it)."""
    return Path(metrics).with_name(EVALUATION_FILE)
