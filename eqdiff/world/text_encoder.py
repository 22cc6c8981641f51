"""The world base model's text encoder, trained with CLIP's objective before the UNet and then frozen, as SD
v1.x's is (docs/world.md, "Base model", step 3), and the captions both phases draw.

CLIP's loss only asks a caption to be nearer its own image than the other images of the batch. In a batch of
256 random world images few differ from another in a single attribute, so a text encoder can match the batch
well while mixing up words that rarely decide a match: the shipped model's encoder gives "striped" and
"spotted" (and "box" and "ball") nearly the same states, and its UNet draws patterns at chance from words.
``text_hard_negatives`` adds, for every image, captions of the same scene with one attribute swapped
("... spotted ball" for a striped one) as extra negatives of the image-to-text side, as NegCLIP does
(Yuksekgonul et al. 2023, "When and why vision-language models behave like bags-of-words"), so that every
attribute word has to move the caption's embedding (docs/world.md, "Hard negatives for the text encoder").
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from eqdiff.world.architecture import WORLD_ARCHITECTURE
from eqdiff.world.vocabulary import COLOURS, PATTERNS, SCENES, SHAPES, STYLES, TEXTURES, Spec, caption

SWAPPED = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "second": tuple(COLOURS),
    "pattern": PATTERNS,
    "texture": TEXTURES,
    "scene": SCENES,
    "style": STYLES,
}
"""What a hard negative may change, one attribute at a time, and the values it takes."""


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 10 % at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def training_captions(specs: list, rows: torch.Tensor, rng: np.random.Generator, config, dropout: float) -> list:
    """The captions of ``specs[rows]`` with words dropped at random, ``""`` with probability ``dropout``."""
    return [
        "" if rng.random() < dropout else caption(specs[int(i)], rng, config.word_keep, config.second_colour)
        for i in rows
    ]


def token_ids(tokenizer, texts: list[str], padding: str = "max_length") -> torch.Tensor:
    """Token ids padded to CLIP's 77 positions (``padding="longest"``: to the batch's longest caption)."""
    return tokenizer(texts, padding=padding, max_length=77, truncation=True, return_tensors="pt").input_ids


def swap_attribute(spec: Spec, attribute: str, rng: np.random.Generator) -> Spec:
    """``spec`` with ``attribute`` (a key of ``SWAPPED``) set to another value at random; the two colours of an
    identity stay different."""
    if attribute in ("scene", "style"):
        values = [v for v in SWAPPED[attribute] if v != getattr(spec, attribute)]
        return replace(spec, **{attribute: values[rng.integers(len(values))]})
    identity = spec.identity
    other = {"colour": identity.second, "second": identity.colour}.get(attribute)
    values = [v for v in SWAPPED[attribute] if v not in (getattr(identity, attribute), other)]
    return replace(spec, identity=replace(identity, **{attribute: values[rng.integers(len(values))]}))


def captions_with_negatives(
    spec: Spec, rng: np.random.Generator, choice: np.random.Generator, config, count: int
) -> tuple[str, list[str | None]]:
    """The spec's training caption (drawn from ``rng`` as ``training_captions`` draws it) and up to ``count``
    hard negatives: the same caption, with the same words dropped, of the spec with one attribute swapped (a
    different attribute each, chosen by ``choice``). A swap the caption does not show (a dropped word) gives no
    negative; the list is padded with ``None``."""
    rng.random()  # the caption-dropout draw of ``training_captions`` (the contrastive phase drops none)
    state = copy.deepcopy(rng)
    positive = caption(spec, rng, config.word_keep, config.second_colour)
    negatives: list[str | None] = []
    for attribute in choice.permutation(list(SWAPPED)):
        if len(negatives) == count:
            break
        negative = caption(
            swap_attribute(spec, str(attribute), choice), copy.deepcopy(state), config.word_keep, config.second_colour
        )
        if negative != positive:
            negatives.append(negative)
    return positive, negatives + [None] * (count - len(negatives))


class _MeanMaxPool(torch.nn.Module):
    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=-1)


TOWER_POOLING = ("mean", "mean+max")


def image_tower(channels: int, width: int, pooling: str = "mean") -> torch.nn.Module:
    """The contrastive phase's image tower over ``(B, channels, 16, 16)`` latents. ``pooling="mean"`` (the
    shipped model's) averages the last feature maps over the image, where the object is a small part and its
    features are averaged away by the background's; ``"mean+max"`` also keeps their maximum, as the world
    evaluators do (docs/world-evaluators.md)."""
    if pooling not in TOWER_POOLING:
        raise ValueError(f"text_tower_pooling: {pooling!r} is not one of {', '.join(TOWER_POOLING)}")
    pool = [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()] if pooling == "mean" else [_MeanMaxPool()]
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 64, 3, padding=1),
        torch.nn.SiLU(),
        torch.nn.Conv2d(64, 128, 3, stride=2, padding=1),
        torch.nn.SiLU(),
        torch.nn.Conv2d(128, 128, 3, stride=2, padding=1),
        torch.nn.SiLU(),
        *pool,
        torch.nn.Linear(128 * len(pooling.split("+")), width),
    )


def train_text_encoder(
    latents: torch.Tensor, specs: list, tokenizer, config, generator: torch.Generator
) -> tuple[CLIPTextModel, set[int]]:
    """CLIP's objective at world scale: the text encoder's pooled (EOS) state and a small conv tower on the
    training latents, projected to a shared space, trained with the symmetric InfoNCE loss and a learnt
    temperature (and ``config.text_hard_negatives`` hard negatives per image on the image-to-text side). The
    image tower and both projections are discarded; what the UNet gets is a text encoder whose states tell
    shapes, colours, patterns, scenes and styles apart, as SD v1.x's frozen CLIP encoder does."""
    width = WORLD_ARCHITECTURE["text_encoder"]["hidden_size"]
    text_encoder = CLIPTextModel(CLIPTextConfig(**WORLD_ARCHITECTURE["text_encoder"]))
    tower = image_tower(latents.shape[1], width, config.text_tower_pooling)
    projection = torch.nn.Linear(width, width, bias=False)
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    parameters = [*text_encoder.parameters(), *tower.parameters(), *projection.parameters(), log_temperature]
    optimizer = torch.optim.AdamW(parameters, lr=config.text_learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.text_steps, 50))
    rng = np.random.default_rng([config.seed, 2])
    choice = np.random.default_rng([config.seed, 3])
    count, size = config.text_hard_negatives, config.text_batch_size
    used: set[int] = set()
    targets = torch.arange(size)

    def embed(texts: list[str]) -> torch.Tensor:
        # the pooled state sits at EOS and CLIP's attention is causal: padding to the batch's longest caption
        # gives it exactly as padding to 77 does, at a fraction of the cost
        ids = token_ids(tokenizer, texts, padding="longest" if count else "max_length")
        used.update(int(t) for t in ids.unique())
        return F.normalize(projection(text_encoder(ids).pooler_output), dim=-1)

    for _ in (bar := tqdm(range(config.text_steps), desc="world: text encoder (CLIP)", unit="step")):
        rows = torch.randint(len(specs), (size,), generator=generator)
        if count:
            drawn = [captions_with_negatives(specs[int(i)], rng, choice, config, count) for i in rows]
            texts = [positive for positive, _ in drawn]
        else:
            texts = training_captions(specs, rows, rng, config, 0.0)
        text = embed(texts)
        image = F.normalize(tower(latents[rows]), dim=-1)
        scale = log_temperature.clamp(max=math.log(100)).exp()
        logits = text @ image.T * scale
        image_to_text = logits.T
        if count:
            flat = [negative or positive for positive, negatives in drawn for negative in negatives]
            negative_logits = (image[:, None] * embed(flat).view(size, count, -1)).sum(-1) * scale
            shown = torch.tensor([[n is not None for n in negatives] for _, negatives in drawn])
            image_to_text = torch.cat([image_to_text, negative_logits.masked_fill(~shown, -1e4)], dim=1)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(image_to_text, targets)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return text_encoder.eval().requires_grad_(False), used
