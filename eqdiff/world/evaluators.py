"""World-native evaluators (docs/world-evaluators.md): a small CNN that recognises, in a 64 px world image, the
identity attributes (shape, colour, pattern, second colour, texture), the scene and the style.

They stand in for CLIP and DINO on the ``world`` preset, where no pretrained weights exist:

- **text alignment**: does the recognised scene / style match the one the prompt asks for
  (``prompt_targets``)?
- **subject fidelity**: ``identity_embedding`` concatenates the five identity heads' class probabilities (the
  second colour's weighted by the probability that a pattern shows it), unit norm; it reads nothing of the scene
  and style heads, so cosine(generated, real) measures the identity only, the world's DINO-I.

Weights: ``eqdiff/world/weights/evaluator/`` (``evaluator.safetensors``, fp16, and ``evaluator.json``: the
architecture, the training settings, the accuracy measured on held-out renders and the weights' sha256), trained
by ``python -m eqdiff.world evaluator`` (``eqdiff.world.evaluator_training``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from eqdiff.errors import EqDiffError
from eqdiff.world.vocabulary import ATTRIBUTES, PATTERNS, SCENE_PHRASES, STYLE_FORMS

HEADS: dict[str, tuple[str, ...]] = ATTRIBUTES
"""Head name -> its labels (the vocabulary's words), in logit order."""
IDENTITY_HEADS = ("shape", "colour", "pattern", "second", "texture")
EVALUATOR_RESOLUTION = 64
WEIGHTS_DIR = Path(__file__).parent / "weights" / "evaluator"
WEIGHTS_FILE = "evaluator.safetensors"
RECORD_FILE = "evaluator.json"
CHANNELS = (32, 48, 96, 192)
HIDDEN = 64


class EvaluatorError(EqDiffError, ValueError):
    """Evaluator weights are missing, altered or of another architecture; the message names the path."""


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class EvaluatorNet(nn.Module):
    """A VGG-style CNN trunk (per stage: a stride-2 and a stride-1 3x3 convolution; four stages take 64 px to
    4 px), global average and max pooling, and one two-layer head per attribute.

    Input ``(B, 3, 64, 64)`` float in ``[-1, 1]``; output ``{head: (B, len(HEADS[head])) logits}``.
    """

    def __init__(self, channels: Sequence[int] = CHANNELS, hidden: int = HIDDEN):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers += [*_conv(previous, width, 2), *_conv(width, width, 1)]
            previous = width
        self.trunk = nn.Sequential(*layers)
        # The object covers a part of the image only: max pooling keeps its features from being averaged away
        # by the background's, which average pooling alone did (identity heads near chance, scene/style not).
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Linear(2 * previous, hidden), nn.ReLU(), nn.Linear(hidden, len(labels)))
                for name, labels in HEADS.items()
            }
        )

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.trunk(pixels)
        features = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=-1)
        return {name: head(features) for name, head in self.heads.items()}


def to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images (any size, any mode) -> ``(N, 3, 64, 64)`` float32 in ``[-1, 1]`` (box-filter resize)."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (EVALUATOR_RESOLUTION, EVALUATOR_RESOLUTION):
            image = image.resize((EVALUATOR_RESOLUTION, EVALUATOR_RESOLUTION), Image.BOX)
        arrays.append(np.asarray(image, dtype=np.uint8))
    return uint8_to_pixels(np.stack(arrays))


def uint8_to_pixels(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` -> ``(N, 3, H, W)`` float32 in ``[-1, 1]``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class WorldEvaluator:
    """The trained evaluator in eval mode on CPU, with its record (``evaluator.json``: accuracy, digest, ...)."""

    def __init__(self, net: EvaluatorNet, record: dict, source: str):
        self.net = net.eval().requires_grad_(False)
        self.record = record
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None) -> WorldEvaluator:
        """Load the evaluator from a folder of ``evaluator.safetensors`` + ``evaluator.json`` (None: the shipped
        weights); the weights' sha256 must equal the record's."""
        folder = Path(path).expanduser() if path is not None else WEIGHTS_DIR
        weights, record_path = folder / WEIGHTS_FILE, folder / RECORD_FILE
        for required in (weights, record_path):
            if not required.is_file():
                raise EvaluatorError(
                    f"world evaluator: {required} is missing (train one: python -m eqdiff.world evaluator)"
                )
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            expected = record["sha256"]
            architecture = record["architecture"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvaluatorError(f"world evaluator: {record_path} is not an evaluator record ({exc})") from None
        if sha256(weights) != expected:
            raise EvaluatorError(f"world evaluator: {weights} does not match the sha256 recorded in {record_path}")
        net = EvaluatorNet(architecture["channels"], architecture["hidden"])
        try:
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()})
        except RuntimeError as exc:
            raise EvaluatorError(f"world evaluator: {weights} does not fit its architecture ({exc})") from None
        # The shipped weights are named by their place in the package, not by this machine's path.
        return cls(net, record, str(folder) if path is not None else "eqdiff/world/weights/evaluator")

    @property
    def accuracy(self) -> dict[str, float]:
        """``{head: accuracy in [0, 1]}`` on held-out renders, as measured after training; the whole measurement
        (per style, all identity attributes, counts) is ``record["accuracy"]``."""
        return self.record["accuracy"]["heads"]

    @torch.no_grad()
    def probabilities(self, images: Sequence[Image.Image], batch_size: int = 256) -> dict[str, torch.Tensor]:
        """``{head: (N, len(HEADS[head]))}`` softmax probabilities, float32 on CPU."""
        out: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
        for start in range(0, len(images), batch_size):
            logits = self.net(to_pixels(images[start : start + batch_size]))
            for name, value in logits.items():
                out[name].append(value.softmax(dim=-1))
        return {name: torch.cat(parts) if parts else torch.empty(0, len(HEADS[name])) for name, parts in out.items()}

    def predict(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        """One ``{head: label}`` per image (labels are the vocabulary's words; ``second`` is a guess on plain
        objects, which show no second colour)."""
        probabilities = self.probabilities(images)
        indices = {name: p.argmax(dim=-1).tolist() for name, p in probabilities.items()}
        return [{name: HEADS[name][indices[name][i]] for name in HEADS} for i in range(len(images))]

    def identity_embedding(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``(N, 27)`` unit-norm float32: the identity heads' probabilities, concatenated (scene/style-free)."""
        return identity_embedding(self.probabilities(images))


def identity_embedding(probabilities: dict[str, torch.Tensor]) -> torch.Tensor:
    """The identity embedding from ``WorldEvaluator.probabilities``'s output (see the module docstring)."""
    shows_second = 1 - probabilities["pattern"][:, PATTERNS.index("plain") : PATTERNS.index("plain") + 1]
    parts = [probabilities[name] * (shows_second if name == "second" else 1) for name in IDENTITY_HEADS]
    features = torch.cat(parts, dim=-1)
    return features / features.norm(dim=-1, keepdim=True)


def prompt_targets(prompt: str, placeholder: str) -> dict[str, str]:
    """The scene and style a world prompt asks for: ``{"style": s}`` plus ``"scene"`` when the prompt names one.

    ``"a <new1> ball on the beach"`` -> ``{"style": "photo", "scene": "beach"}``; ``"a watercolor painting of a
    <new1> ball"`` -> ``{"style": "watercolor"}``. Styles are read from ``STYLE_FORMS``' prefixes (none:
    photo), scenes from ``SCENE_PHRASES`` at the end of the prompt. ``placeholder`` is removed first.
    """
    text = " ".join(prompt.replace(placeholder, " ").split()).lower().rstrip(" .")
    style = "photo"
    for name, form in STYLE_FORMS.items():
        prefix = form.split("{}")[0].strip()
        if name != "photo" and (text + " ").startswith(prefix + " "):
            style = name
    targets = {"style": style}
    for scene, phrase in SCENE_PHRASES.items():
        if phrase and text.endswith(phrase.strip()):
            targets["scene"] = scene
    return targets


def matches(prediction: dict[str, str], targets: dict[str, str]) -> bool:
    """True when every target (scene, style) is what the evaluator recognised."""
    return all(prediction[name] == label for name, label in targets.items())
