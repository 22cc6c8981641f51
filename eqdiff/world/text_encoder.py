"""The world base model's text encoder, trained with CLIP's objective before the UNet and then frozen, as SD
v1.x's is (docs/world.md, "Base model", step 3), and the captions both phases draw.

CLIP's loss only asks a caption to be nearer its own image than the other images of the batch. In a batch of
256 random world images few differ from another in a single attribute, so a text encoder can match the batch
well while mixing up words that rarely decide a match: the shipped model's encoder gives "striped" and
"spotted" (and "box" and "ball") nearly the same states, and its UNet draws no pattern from its word.
``text_hard_negatives`` adds, for every image, captions of the same scene with one attribute swapped
("... spotted ball" for a striped one) as extra negatives of the image-to-text side, as NegCLIP does
(Yuksekgonul et al. 2023, "When and why vision-language models behave like bags-of-words"), so that every
attribute word has to move the caption's embedding (docs/world.md, "Hard negatives for the text encoder").
``text_attribute_loss`` asks it directly: linear heads read every attribute a caption names (the world's ground
truth) from the encoder's states, so no named word can share its states with another of its kind
(docs/world.md, "Attribute heads for the text encoder").
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
from eqdiff.world.vocabulary import ATTRIBUTES, COLOURS, PATTERN_WORDS, SCENE_PHRASES, SHAPES, Spec, caption

SEPARATION_TEMPLATES = {
    "pattern": "a photo of a shiny yellow {} ball",
    "shape": "a photo of a shiny yellow spotted {}",
    "colour": "a photo of a shiny {} spotted ball",
}

SWAPPED = {name: ATTRIBUTES[name] for name in ("shape", "colour", "second", "pattern", "texture", "scene", "style")}
"""What a hard negative may change, one attribute at a time, and the values it takes (in the order hard
negatives have always been drawn in, so a seed's negatives stay those measured)."""
IGNORED = -100
"""``cross_entropy``'s ``ignore_index``: the label of an attribute the caption does not name."""


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


def caption_labels(spec: Spec, text: str) -> dict[str, int]:
    """Index in ``ATTRIBUTES[name]`` of each attribute ``text`` (a caption of ``spec``) names, ``IGNORED`` for
    one it does not: a dropped word, and a plain pattern or a scene without a phrase (studio, clutter), which no
    word names. Every world word belongs to one attribute and the second colour is only named beside the body
    colour, so whether a value's word is in the caption says whether it is named."""
    identity, words = spec.identity, set(text.split())
    named = {
        "shape": identity.shape in words,
        "colour": identity.colour in words,
        "pattern": bool(PATTERN_WORDS[identity.pattern]) and PATTERN_WORDS[identity.pattern] in words,
        "second": identity.second in words,
        "texture": identity.texture in words,
        "scene": bool(SCENE_PHRASES[spec.scene]) and SCENE_PHRASES[spec.scene] in text,
        "style": True,  # every caption form names its style ("a {}" and "a photo of a {}" are photos)
    }
    values = {"scene": spec.scene, "style": spec.style}
    return {
        name: ATTRIBUTES[name].index(values.get(name) or getattr(identity, name)) if named[name] else IGNORED
        for name in ATTRIBUTES
    }


class AttributeHeads(torch.nn.Module):
    """Linear heads reading every attribute from a caption's pooled (EOS) state and from the mean of its token
    states, the states the UNet's cross-attention reads."""

    def __init__(self, width: int):
        super().__init__()
        self.pooled = torch.nn.ModuleDict({name: torch.nn.Linear(width, len(v)) for name, v in ATTRIBUTES.items()})
        self.tokens = torch.nn.ModuleDict({name: torch.nn.Linear(width, len(v)) for name, v in ATTRIBUTES.items()})

    def loss(self, pooled: torch.Tensor, tokens: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the attributes (each over the captions that name it) and both readings."""
        terms = [
            F.cross_entropy(heads[name](states), labels[name], ignore_index=IGNORED)
            for heads, states in ((self.pooled, pooled), (self.tokens, tokens))
            for name in ATTRIBUTES
            if (labels[name] != IGNORED).any()
        ]
        return torch.stack(terms).mean()


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


@torch.no_grad()
def word_separation(text_encoder: CLIPTextModel, tokenizer) -> dict[str, float]:
    """How far apart the encoder puts the words of one kind: for ``pattern``, ``shape`` and ``colour``, the mean
    over every pair of its words of the distance between the token states (16 positions, what the UNet reads) of
    two captions that differ in that word only (``SEPARATION_TEMPLATES``). Words the UNet is to tell apart need
    states as far apart as the colours' (docs/world.md, "Attribute heads for the text encoder")."""
    words = {"pattern": [w for w in PATTERN_WORDS.values() if w], "shape": SHAPES, "colour": list(COLOURS)}
    separation = {}
    for kind, template in SEPARATION_TEMPLATES.items():
        states = text_encoder(token_ids(tokenizer, [template.format(w) for w in words[kind]])).last_hidden_state
        flat = states[:, :16].flatten(1).float()
        distances = torch.cdist(flat, flat)
        pairs = torch.triu_indices(len(flat), len(flat), offset=1)
        separation[kind] = round(float(distances[pairs[0], pairs[1]].mean()), 2)
    return separation


def train_text_encoder(
    latents: torch.Tensor, specs: list, tokenizer, config, generator: torch.Generator
) -> tuple[CLIPTextModel, set[int]]:
    """CLIP's objective at world scale: the text encoder's pooled (EOS) state and a small conv tower on the
    training latents, projected to a shared space, trained with the symmetric InfoNCE loss and a learnt
    temperature (and ``config.text_hard_negatives`` hard negatives per image on the image-to-text side, and
    ``config.text_attribute_loss`` times the attribute heads' loss). The image tower, the heads and both
    projections are discarded; what the UNet gets is a text encoder whose states tell shapes, colours, patterns,
    scenes and styles apart, as SD v1.x's frozen CLIP encoder does."""
    width = WORLD_ARCHITECTURE["text_encoder"]["hidden_size"]
    text_encoder = CLIPTextModel(CLIPTextConfig(**WORLD_ARCHITECTURE["text_encoder"]))
    tower = image_tower(latents.shape[1], width, config.text_tower_pooling)
    projection = torch.nn.Linear(width, width, bias=False)
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    parameters = [*text_encoder.parameters(), *tower.parameters(), *projection.parameters(), log_temperature]
    # built only when asked: their initialisation draws from torch's global stream, which the UNet's also does
    heads = AttributeHeads(width) if config.text_attribute_loss else None
    if heads is not None:
        parameters += list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.text_learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.text_steps, 50))
    rng = np.random.default_rng([config.seed, 2])
    choice = np.random.default_rng([config.seed, 3])
    count, size = config.text_hard_negatives, config.text_batch_size
    # the pooled state sits at EOS and CLIP's attention is causal: padding to the batch's longest caption
    # gives it (and every token's state) exactly as padding to 77 does, at a fraction of the cost
    padding = "longest" if count or config.text_attribute_loss else "max_length"
    used: set[int] = set()
    targets = torch.arange(size)

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled states and the mean of the caption's token states (padding left out)."""
        batch = tokenizer(texts, padding=padding, max_length=77, truncation=True, return_tensors="pt")
        used.update(int(t) for t in batch.input_ids.unique())
        output = text_encoder(batch.input_ids)
        mask = batch.attention_mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        return output.pooler_output, (output.last_hidden_state * mask).sum(1) / mask.sum(1)

    def embed(pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(projection(pooled), dim=-1)

    for _ in (bar := tqdm(range(config.text_steps), desc="world: text encoder (CLIP)", unit="step")):
        rows = torch.randint(len(specs), (size,), generator=generator)
        if count:
            drawn = [captions_with_negatives(specs[int(i)], rng, choice, config, count) for i in rows]
            texts = [positive for positive, _ in drawn]
        else:
            texts = training_captions(specs, rows, rng, config, 0.0)
        pooled, tokens = encode(texts)
        text = embed(pooled)
        image = F.normalize(tower(latents[rows]), dim=-1)
        scale = log_temperature.clamp(max=math.log(100)).exp()
        logits = text @ image.T * scale
        image_to_text = logits.T
        if count:
            flat = [negative or positive for positive, negatives in drawn for negative in negatives]
            negative_logits = (image[:, None] * embed(encode(flat)[0]).view(size, count, -1)).sum(-1) * scale
            shown = torch.tensor([[n is not None for n in negatives] for _, negatives in drawn])
            image_to_text = torch.cat([image_to_text, negative_logits.masked_fill(~shown, -1e4)], dim=1)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(image_to_text, targets)) / 2
        if heads is not None:
            named = [caption_labels(specs[int(i)], t) for i, t in zip(rows, texts, strict=True)]
            labels = {name: torch.tensor([n[name] for n in named]) for name in ATTRIBUTES}
            loss = loss + config.text_attribute_loss * heads.loss(pooled, tokens, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return text_encoder.eval().requires_grad_(False), used
