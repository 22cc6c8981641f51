"""Grounded-SAM mask backend (docs/architecture.md, Offline models and data): GroundingDINO finds the class noun's
box, SAM segments that box.

Every model file comes from a local path in params (``masks.grounding_dino_config``,
``masks.grounding_dino_checkpoint``, ``masks.sam_checkpoint``, ``masks.text_encoder_dir``); a missing one is a
one-line ``MaskModelError`` naming it. Checkpoints are read with ``torch.load(weights_only=True)`` and must
match the architecture key for key. GroundingDINO runs through its pure-PyTorch multi-scale deformable
attention (no compiled ops needed); its BERT wrapper is adapted to transformers 5 (``_BertTextEncoder``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from eqdiff.config import ConfigError, MasksConfig
from eqdiff.errors import DataError, MaskModelError
from eqdiff.prep.subjects import IMAGENET_MEAN, IMAGENET_STD, PhotoMask

logger = logging.getLogger(__name__)


def _require_file(path: str, what: str, directory: bool = False) -> Path:
    resolved = Path(path).expanduser()
    exists = resolved.is_dir() if directory else resolved.is_file()
    if not exists:
        raise MaskModelError(f"{resolved}: {what} not found")
    return resolved


def _load_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file, never unpickling arbitrary objects (docs/robustness.md)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files; all mean the same here
        raise MaskModelError(f"{path}: not a weights-only {what} checkpoint ({str(exc).splitlines()[0]})") from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]  # GroundingDINO's release format: {"model": state_dict, ...}
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise MaskModelError(f"{path}: expected a {what} state dict of tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _load_strict(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    what: str,
    ignorable: Callable[[str], bool] = lambda key: False,
) -> None:
    """Load ``state``; any missing key, or an unexpected one that is not ``ignorable``, is an error."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise MaskModelError(f"{path}: does not fit the {what} architecture ({str(exc).splitlines()[1:2]})") from None
    unexpected = [k for k in result.unexpected_keys if not ignorable(k)]
    if result.missing_keys or unexpected:
        example = (result.missing_keys or unexpected)[0]
        raise MaskModelError(
            f"{path}: does not match the {what} architecture ({len(result.missing_keys)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {example!r})"
        )


class _BertTextEncoder(torch.nn.Module):
    """GroundingDINO's BERT wrapper (``bertwarper.BertModelWarper``) for transformers 5.

    groundingdino-py 0.4.0 wraps BERT with ``get_extended_attention_mask`` / ``get_head_mask``, which
    transformers 5 removed. This wrapper keeps the same sub-module names (so checkpoint keys ``bert.*`` load
    unchanged) and the same computation: a (B, L, L) sub-sentence mask becomes an additive (B, 1, L, L) mask,
    exactly as the removed ``get_extended_attention_mask`` did.
    """

    def __init__(self, bert_model: torch.nn.Module):
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        mask = attention_mask[:, None] if attention_mask.dim() == 3 else attention_mask[:, None, None]
        additive = (1.0 - mask.to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        return {"last_hidden_state": self.encoder(hidden, attention_mask=additive)[0]}


@contextlib.contextmanager
def _bert_wrapper_for_transformers5() -> Iterator[None]:
    """Swap GroundingDINO's BERT wrapper for ``_BertTextEncoder`` while a model is built (and only then)."""
    import groundingdino.models.GroundingDINO.groundingdino as gd_module

    original = gd_module.BertModelWarper
    gd_module.BertModelWarper = _BertTextEncoder
    try:
        yield
    finally:
        gd_module.BertModelWarper = original


def shipped_grounding_dino_config(value: str) -> Path | None:
    """The config file groundingdino-py ships under ``value`` (``GroundingDINO_SwinT_OGC`` or with ``.py``)."""
    if "/" in value or "\\" in value:
        return None
    import groundingdino.config

    directory = Path(groundingdino.config.__file__).parent
    shipped = sorted(p.stem for p in directory.glob("GroundingDINO_*.py"))
    stem = value.removesuffix(".py")
    return directory / f"{stem}.py" if stem in shipped else None


def read_grounding_dino_config(path: Path) -> dict[str, Any]:
    """The settings of a GroundingDINO config file, read without running it.

    groundingdino's ``SLConfig.fromfile`` imports the file as a Python module, so a config path in params would
    run arbitrary code. The shipped configs are flat ``NAME = literal`` assignments; exactly those are read
    (``ast.literal_eval``), and anything else (an import, a call, ``_base_`` inheritance) is a one-line error.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        raise MaskModelError(f"{path}: not a GroundingDINO config file (Python assignments)") from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare literal
        single = isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        try:
            if not single:
                raise ValueError
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise MaskModelError(
                f"{path}:{node.lineno}: only `name = literal` lines are read from a GroundingDINO config "
                "(no code is run); use a config shipped with groundingdino-py by name, e.g. GroundingDINO_SwinT_OGC"
            ) from None
    if "_base_" in values or "modelname" not in values:
        raise MaskModelError(f"{path}: not a self-contained GroundingDINO config (needs modelname, no _base_)")
    return values


def build_grounding_dino(config_file: Path, text_encoder_dir: Path) -> torch.nn.Module:
    """GroundingDINO from its config file (read as literals, never run), random weights, ``text_encoder_dir``'s BERT."""
    settings = read_grounding_dino_config(config_file)  # a bad config is refused before the heavy import
    with warnings.catch_warnings():
        # groundingdino imports timm.models.layers, deprecated in timm 1.x: a FutureWarning at every first use
        warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

    args = SLConfig(settings)
    args.text_encoder_type = str(text_encoder_dir)  # a local directory, never the config's hub id
    args.device = "cpu"
    chatter = io.StringIO()  # groundingdino prints its text encoder path; keep it out of stdout
    try:
        with _bert_wrapper_for_transformers5(), contextlib.redirect_stdout(chatter):
            model = build_model(args)
    except (AttributeError, KeyError, TypeError, ValueError, AssertionError, OSError) as exc:
        # What the builder reads comes from the config file: a missing or ill-typed setting is the file's fault.
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaskModelError(f"{config_file}: not a usable GroundingDINO config ({detail})") from None
    logger.debug("groundingdino: %s", chatter.getvalue().strip())
    return model


@dataclass
class GroundedSam:
    """GroundingDINO (box for the class noun) + SAM (mask for that box), both in eval mode on ``device``."""

    detector: torch.nn.Module
    predictor: Any  # segment_anything.SamPredictor
    device: torch.device


@functools.lru_cache(maxsize=1)
def load_grounded_sam(config: MasksConfig) -> GroundedSam:
    """Build both models from their local files (cached per process for the same config)."""
    from segment_anything import SamPredictor, sam_model_registry

    dino_config = shipped_grounding_dino_config(config.grounding_dino_config) or _require_file(
        config.grounding_dino_config, "GroundingDINO config file"
    )
    dino_checkpoint = _require_file(config.grounding_dino_checkpoint, "GroundingDINO checkpoint")
    sam_checkpoint = _require_file(config.sam_checkpoint, "SAM checkpoint")
    text_encoder_dir = _require_file(config.text_encoder_dir, "GroundingDINO text-encoder directory", True)
    if config.sam_model_type not in sam_model_registry:
        raise ConfigError(
            f"masks.sam_model_type: expected one of {' | '.join(sam_model_registry)}, got {config.sam_model_type!r}"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector = build_grounding_dino(dino_config, text_encoder_dir)
    # BERT position/token-type id buffers are rebuilt by transformers; a checkpoint may or may not hold them.
    _load_strict(
        detector,
        _load_weights(dino_checkpoint, "GroundingDINO"),
        dino_checkpoint,
        "GroundingDINO",
        ignorable=lambda key: key.endswith(("position_ids", "token_type_ids")),
    )
    sam = sam_model_registry[config.sam_model_type](checkpoint=None)
    _load_strict(sam, _load_weights(sam_checkpoint, "SAM"), sam_checkpoint, f"SAM {config.sam_model_type}")
    return GroundedSam(detector.eval().to(device), SamPredictor(sam.eval().to(device)), device)


def _detection_input(image: Image.Image, short_side: int) -> torch.Tensor:
    """GroundingDINO's eval transform (``RandomResize([800], max_size=1333)``, ToTensor, ImageNet norm).

    Returns (3, h, w) float32 with the short side ``short_side`` unless the long side would pass 5/3 of it.
    """
    width, height = image.size
    max_side = round(short_side * 1333 / 800)
    size = short_side
    if max(width, height) / min(width, height) * size > max_side:
        size = int(round(max_side * min(width, height) / max(width, height)))
    new_w, new_h = (size, int(size * height / width)) if width < height else (int(size * width / height), size)
    array = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


@torch.inference_mode()
def detect_box(
    models: GroundedSam, image: Image.Image, class_noun: str, config: MasksConfig, photo: Path
) -> tuple[np.ndarray, float]:
    """The best GroundingDINO box for ``class_noun``: (xyxy float32 in photo pixels, score in [0, 1])."""
    detector = models.detector
    caption = class_noun.lower().strip().rstrip(".") + "."  # GroundingDINO's caption convention
    token_ids = detector.tokenizer(caption)["input_ids"]
    noun_positions = [i for i, t in enumerate(token_ids) if t not in set(detector.specical_tokens)]
    outputs = detector(_detection_input(image, config.detection_size)[None].to(models.device), captions=[caption])
    probs = outputs["pred_logits"][0].sigmoid()[:, noun_positions].float().cpu()  # (queries, noun tokens)
    scores = probs.max(dim=1).values
    keep = (scores > config.box_threshold) & (probs > config.text_threshold).any(dim=1)
    if not keep.any():
        raise DataError(
            f"{photo}: GroundingDINO found no {class_noun!r} box above masks.box_threshold="
            f"{config.box_threshold:g} (best score {float(scores.max()):.3f})"
        )
    best = int(torch.where(keep, scores, -1.0).argmax())
    cx, cy, w, h = outputs["pred_boxes"][0, best].float().cpu().tolist()  # normalised (cx, cy, w, h)
    width, height = image.size
    box = np.array([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
    box = box.clip(0, [width, height, width, height]).astype(np.float32)
    return box, float(scores[best])


def grounded_sam_mask(
    models: GroundedSam, image: Image.Image, class_noun: str, config: MasksConfig, photo: Path
) -> PhotoMask:
    """Text -> best box -> SAM mask for that box, (H, W) bool at the photo's size."""
    box, score = detect_box(models, image, class_noun, config, photo)
    models.predictor.set_image(np.asarray(image.convert("RGB")), image_format="RGB")
    masks, _, _ = models.predictor.predict(box=box, multimask_output=False)
    details = {"box_xyxy": [round(float(v), 1) for v in box], "box_score": round(score, 4)}
    return PhotoMask(np.asarray(masks[0], dtype=bool), float(models.predictor.model.mask_threshold), details)
