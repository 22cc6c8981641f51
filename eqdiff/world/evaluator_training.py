"""Training and measuring the world evaluators (docs/world-evaluators.md).

1. Training renders: ``random_spec`` with the base model's identity sampling, so no held-out identity
   (``vocabulary.is_held_out``) is ever seen; every scene and style.
2. A cross-entropy per head (the second colour's only where the pattern shows it), AdamW with a cosine decay;
   half of each batch is blurred (a Gaussian of a random width per image), so that a generated image, which has
   been through the VAE's decoder and is softer than a render, is read as well as a render is.
3. Accuracy on renders from another seed, a third of them of the ``HELD_OUT`` identities and the rest of any
   identity (held-out ones included), every scene and style: per head, per style for the scene head, and the
   fraction whose five identity attributes are all right; and the same heads on the renders blurred at
   ``REPORTED_BLUR_SIGMA``.
4. ``evaluator.safetensors`` (fp16) and ``evaluator.json`` (architecture, settings, accuracy, sha256).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from eqdiff.world.evaluators import (
    CHANNELS,
    EVALUATOR_RESOLUTION,
    HEADS,
    HIDDEN,
    IDENTITY_HEADS,
    RECORD_FILE,
    WEIGHTS_FILE,
    EvaluatorNet,
    WorldEvaluator,
    sha256,
    uint8_to_pixels,
)
from eqdiff.world.render import render
from eqdiff.world.vocabulary import HELD_OUT, STYLES, Spec, random_identity, random_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatorTrainConfig:
    """Settings of ``python -m eqdiff.world evaluator`` (about 10 min on one CPU thread)."""

    num_images: int = 20000
    """Training renders (drawn once)."""
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    eval_images: int = 3000
    """Held-out renders the accuracy is measured on."""
    seed: int = 0
    eval_seed: int = 1_000_003
    """Seed of the held-out renders (any seed other than ``seed``)."""
    blur_probability: float = 0.5
    """Fraction of training images blurred, each by a Gaussian of sigma uniform in (0, ``max_blur_sigma``] px."""
    max_blur_sigma: float = 1.5


REPORTED_BLUR_SIGMA = 1.0
"""The blur (px) of the second accuracy the record reports, about the softness of the world VAE's decodings."""


def gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``(N, C, H, W)`` ``pixels`` by a separable Gaussian of its own ``sigma`` (``(N,)``, px;
    0 leaves the image as it is), reflecting at the borders."""
    radius = 4
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernels = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3).unsqueeze(1)) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (N, 9); sigma 0 -> a unit impulse
    n, c, h, w = pixels.shape
    padded = F.pad(pixels, (radius, radius, radius, radius), mode="reflect").reshape(1, n * c, h + 2 * radius, -1)
    weight = kernels.repeat_interleave(c, dim=0)
    rows = F.conv2d(padded, weight.view(n * c, 1, 1, -1), groups=n * c)
    both = F.conv2d(rows, weight.view(n * c, 1, -1, 1), groups=n * c)
    return both.reshape(n, c, h, w)


def draw_specs(num_images: int, seed: int, held_out: bool) -> list[Spec]:
    """Training specs (``held_out`` False: no held-out identity) or evaluation specs (every third one a
    ``HELD_OUT`` identity, the others any identity)."""
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(num_images):
        identity = None
        if held_out:
            identity = HELD_OUT[(i // 3) % len(HELD_OUT)] if i % 3 == 0 else random_identity(rng, allow_held_out=True)
        specs.append(random_spec(rng, identity))
    return specs


def render_specs(specs: list[Spec], desc: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(N, 64, 64, 3) uint8`` images and ``{head: (N,) int64}`` label indices."""
    images = np.empty((len(specs), EVALUATOR_RESOLUTION, EVALUATOR_RESOLUTION, 3), np.uint8)
    for i, spec in enumerate(tqdm(specs, desc=desc, unit="img", disable=None)):
        images[i] = np.asarray(render(spec, EVALUATOR_RESOLUTION)[0])
    return images, spec_labels(specs)


def spec_labels(specs: list[Spec]) -> dict[str, np.ndarray]:
    values = {
        name: [getattr(s.identity, name) if name in IDENTITY_HEADS else getattr(s, name) for s in specs]
        for name in HEADS
    }
    return {name: np.asarray([HEADS[name].index(v) for v in values[name]], np.int64) for name in HEADS}


def _loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the heads' cross-entropies; the second colour's over the images whose pattern shows it."""
    total = torch.zeros(())
    shows_second = labels["pattern"] != HEADS["pattern"].index("plain")
    for name, value in logits.items():
        if name == "second":
            if shows_second.any():
                total = total + F.cross_entropy(value[shows_second], labels[name][shows_second])
        else:
            total = total + F.cross_entropy(value, labels[name])
    return total


def train_net(images: np.ndarray, labels: dict[str, np.ndarray], config: EvaluatorTrainConfig) -> EvaluatorNet:
    torch.manual_seed(config.seed)
    net = EvaluatorNet(CHANNELS, HIDDEN)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / total)),
    )
    generator = torch.Generator().manual_seed(config.seed)
    tensors = {name: torch.from_numpy(v) for name, v in labels.items()}
    net.train()
    with tqdm(total=total, desc="world: evaluator", unit="step", disable=None) as bar:
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), config.batch_size):
                rows = order[start : start + config.batch_size]
                blurred = torch.rand(len(rows), generator=generator) < config.blur_probability
                sigma = torch.rand(len(rows), generator=generator) * config.max_blur_sigma * blurred
                logits = net(gaussian_blur(uint8_to_pixels(images[rows.numpy()]), sigma))
                loss = _loss(logits, {name: v[rows] for name, v in tensors.items()})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


def _right(net: EvaluatorNet, images: np.ndarray, labels: dict[str, np.ndarray], sigma: float) -> dict:
    """``{head: (N,) bool}``: is the head right on each image (blurred by ``sigma`` px)? The second colour counts
    as right where no pattern shows it."""
    predicted: dict[str, list[np.ndarray]] = {name: [] for name in HEADS}
    for start in range(0, len(images), 256):
        pixels = uint8_to_pixels(images[start : start + 256])
        pixels = gaussian_blur(pixels, torch.full((len(pixels),), sigma)) if sigma else pixels
        for name, value in net(pixels).items():
            predicted[name].append(value.argmax(dim=-1).numpy())
    right = {name: np.concatenate(predicted[name]) == labels[name] for name in HEADS}
    shows_second = labels["pattern"] != HEADS["pattern"].index("plain")
    right["second"] = right["second"] | ~shows_second  # no second colour to see: not scored
    return right


@torch.no_grad()
def measure_accuracy(net: EvaluatorNet, images: np.ndarray, specs: list[Spec]) -> dict[str, Any]:
    """Accuracy per head, the scene head's per style, ``identity`` (all five identity heads right) and
    ``held_out_identity`` (the same on the ``HELD_OUT`` identities' images only), each in [0, 1]; and
    ``heads_blurred``: per head on the same images blurred at ``REPORTED_BLUR_SIGMA``."""
    labels = spec_labels(specs)
    right = _right(net, images, labels, 0.0)
    blurred = _right(net, images, labels, REPORTED_BLUR_SIGMA)
    shows_second = labels["pattern"] != HEADS["pattern"].index("plain")
    held = np.asarray([s.identity in HELD_OUT for s in specs])
    identity = np.all([right[name] for name in IDENTITY_HEADS], axis=0)
    styles = np.asarray([s.style for s in specs])
    return {
        "heads": {
            name: float(right[name][shows_second].mean() if name == "second" else right[name].mean()) for name in HEADS
        },
        "heads_blurred": {
            name: float(blurred[name][shows_second].mean() if name == "second" else blurred[name].mean())
            for name in HEADS
        },
        "blur_sigma": REPORTED_BLUR_SIGMA,
        "scene_by_style": {style: float(right["scene"][styles == style].mean()) for style in STYLES},
        "identity": float(identity.mean()),
        "held_out_identity": float(identity[held].mean()) if held.any() else None,
        "n_images": len(specs),
        "n_held_out_identity_images": int(held.sum()),
    }


def train_evaluator(out: str | Path, config: EvaluatorTrainConfig = EvaluatorTrainConfig()) -> Path:
    """Train the evaluator, measure it on held-out renders, and write ``out`` (weights + record)."""
    out = Path(out)
    images, labels = render_specs(draw_specs(config.num_images, config.seed, held_out=False), "world: drawing")
    net = train_net(images, labels, config)
    eval_specs = draw_specs(config.eval_images, config.eval_seed, held_out=True)
    eval_images, _ = render_specs(eval_specs, "world: held-out renders")
    accuracy = measure_accuracy(net, eval_images, eval_specs)
    out.mkdir(parents=True)
    weights = out / WEIGHTS_FILE
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    save_file(state, weights)
    record = {
        "architecture": {"channels": list(CHANNELS), "hidden": HIDDEN, "resolution": EVALUATOR_RESOLUTION},
        "labels": {name: list(labels) for name, labels in HEADS.items()},
        "config": asdict(config),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "accuracy": accuracy,
        "sha256": sha256(weights),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    # The fp16 copy is what ships: measure it again so the record describes the weights a user loads.
    reloaded = measure_accuracy(WorldEvaluator.load(out).net, eval_images, eval_specs)
    record["accuracy"] = reloaded
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("world evaluator: held-out accuracy %s", json.dumps(reloaded["heads"]))
    return out
