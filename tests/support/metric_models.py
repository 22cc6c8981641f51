"""Small CLIP / DINO metric models built from config (random weights) and generated-sample folders for the
evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, ViTConfig

from eqdiff.config import EvaluateConfig
from eqdiff.evaluation.evaluate import load_metric_models
from eqdiff.io.artifacts import save_png
from eqdiff.models.architectures import build_clip_tokenizer

UNSTYLIZED = ("a {} on the beach", "a {} in the jungle")
STYLIZED = ("a watercolor painting of a {}",)


def small_clip_config() -> CLIPConfig:
    """CLIP at test size; 224 px input and patch 32 as ViT-B/32, so the protocol's preprocessing applies."""
    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=16,
    )


def small_dino_config() -> ViTConfig:
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
    )


def small_models(config: EvaluateConfig | None = None):
    return load_metric_models(config or EvaluateConfig(), small_clip_config(), small_dino_config(), device="cpu")


def noise_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth random colour field: a real PNG whose content differs per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse, mode="RGB").resize(size, Image.Resampling.BICUBIC)


def write_samples(
    directory: Path,
    subject: str = "toy",
    variant: str = "F",
    class_noun: str = "toy",
    placeholder: str = "<new1>",
    per_prompt: int = 2,
    seed: int = 0,
    templates: dict[str, tuple[str, ...]] | None = None,
) -> Path:
    """A samples directory in ``eqdiff generate``'s layout: ``index.json`` plus the real PNGs it names."""
    templates = templates or {"unstylized": UNSTYLIZED, "stylized": STYLIZED}
    images = []
    for prompt_set, prompt_templates in templates.items():
        for p, template in enumerate(prompt_templates):
            for s in range(per_prompt):
                file = f"{prompt_set}/{p:03d}_{s:02d}.png"
                image_seed = seed * 1000 + len(images)
                save_png(directory / file, noise_image(image_seed))
                images.append(
                    {
                        "file": file,
                        "prompt": template.format(f"{placeholder} {class_noun}"),
                        "template": template,
                        "prompt_set": prompt_set,
                        "prompt_index": p,
                        "sample_index": s,
                        "seed": image_seed,
                    }
                )
    index = {
        "subject": subject,
        "class_noun": class_noun,
        "placeholder": placeholder,
        "variant": variant,
        "calibrated": False,
        "images": images,
    }
    (directory / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return directory


def save_small_clip(directory: Path) -> Path:
    """A random CLIP saved as a transformers directory with its processor (image processor + tokenizer)."""
    torch.manual_seed(1)
    CLIPModel(small_clip_config()).save_pretrained(directory)
    tokenizer = build_clip_tokenizer(directory.parent / f"{directory.name}-vocab")
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(directory)
    return directory


class _TensorFeatures(torch.nn.Module):
    """The same CLIPModel, with ``get_*_features`` returning the projected tensor as torchmetrics 1.9 expects.

    transformers 5 returns ``BaseModelOutputWithPooling`` from these methods and torchmetrics 1.9's string
    route then fails on ``.norm`` (Lightning-AI/torchmetrics#3428, open); its documented callable route takes
    any model with these two methods, so this adapter only unwraps ``pooler_output``.
    """

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
