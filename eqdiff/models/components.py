"""Component builders: the ``tiny`` and ``sd-v1`` presets (their configs and the CLIP tokenizer live in
``eqdiff.models.architectures``), ``load_components``, the placeholder token (docs/architecture.md, Offline models and
data).

Stock components only: diffusers ``UNet2DConditionModel``, ``AutoencoderKL``, ``DDPMScheduler``,
transformers ``CLIPTextModel`` and ``CLIPTokenizer``. A preset is a registry entry that yields a diffusers
directory; every preset is then loaded by the same ``load_components`` a real checkpoint goes through (a diffusers
directory or a single-file checkpoint, read by ``eqdiff.models.base_weights``).

The ``tiny`` preset has SD v1.x's *architecture* (4 UNet levels, 2 transformer layers per down level and 3 per up
level: 16 self- and 16 cross-attention layers, 10 of them in mid+up) at small widths, seeded random weights,
and the real 49,408-token CLIP vocabulary rebuilt from the BPE file inside the ``open-clip-torch`` wheel. Its
images are noise: it exists so that every code path runs for real, offline, on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from eqdiff.config import ModelConfig
from eqdiff.errors import ModelError
from eqdiff.models.architectures import (
    RANDOM_PRESETS,
    SD_V1_SCHEDULER,
    build_clip_tokenizer,
)
from eqdiff.models.base_weights import read_components
from eqdiff.world.preset import world_directory

PRESETS = (*RANDOM_PRESETS, "world")
"""Names ``model.preset`` takes besides ``sd-v1``: the random presets and the trained ``world`` model."""

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """The stock SD v1.x components plus the identity of the base model they came from."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    noise_scheduler: DDPMScheduler
    base_model_id: str
    """Human-readable identity (``tiny:seed=0`` or the directory / hub id)."""
    fingerprint: str
    """Digest of the base weights; a concept only loads onto the base model it was trained on."""
    native_resolution: int

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        for module in (self.text_encoder, self.unet, self.vae):
            if dtype is None or dtype == module.dtype:
                module.to(device=device)
            else:
                module.to(device=device, dtype=dtype)
        return self


def build_random_preset(name: str, seed: int, directory: Path) -> None:
    """Build a seeded random preset and save it as a diffusers directory at ``directory``."""
    preset = RANDOM_PRESETS[name]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**preset.unet)
        vae = AutoencoderKL(**preset.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    finally:
        torch.random.set_rng_state(generator_state)
    unet.save_pretrained(directory / "unet")
    vae.save_pretrained(directory / "vae")
    text_encoder.save_pretrained(directory / "text_encoder")
    build_clip_tokenizer(directory / "tokenizer").save_pretrained(directory / "tokenizer")
    DDPMScheduler.from_config(SD_V1_SCHEDULER).save_pretrained(directory / "scheduler")
    (directory / "eqdiff_preset.json").write_text(
        json.dumps({"preset": name, "seed": seed, "native_resolution": preset.native_resolution}), encoding="utf-8"
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("EQDIFF_CACHE", Path.home() / ".cache" / "eqdiff"))


def _cache_root(config: ModelConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def preset_directory(config: ModelConfig) -> Path:
    """A random preset's directory, built once (atomically) and then reused."""
    root = _cache_root(config)
    directory = root / f"{config.preset}-v1-seed{config.seed}"
    if not (directory / "eqdiff_preset.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{config.preset}-", dir=root))
        try:
            build_random_preset(config.preset, config.seed, staging)
            try:
                staging.rename(directory)
            except OSError:  # another process built it first: theirs is identical
                if not (directory / "eqdiff_preset.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def resolve_model_path(config: ModelConfig) -> str:
    """Directory, single ``.safetensors`` / ``.ckpt`` file (or, when allowed, hub id) that ``load_components`` reads."""
    if config.preset in RANDOM_PRESETS:
        return str(preset_directory(config))
    if config.preset == "world":
        return str(world_directory(config.path, _cache_root(config))[0])
    path = Path(config.path).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in (".safetensors", ".ckpt")):
        return str(path)
    if path.is_file():
        raise ModelError(
            f"model.path: {path} is a {path.suffix or 'suffix-less'} file (expected a diffusers "
            "directory or a single .safetensors / .ckpt checkpoint)"
        )
    if config.allow_download:
        return config.path
    raise ModelError(
        f"model.path: {config.path} is not a local directory or checkpoint file "
        "(set model.allow_download: true to use a hub id)"
    )


def load_components(config: ModelConfig) -> Components:
    """Load the five stock components from a preset's directory, ``model.path`` (a diffusers directory or a single
    checkpoint file, ``eqdiff.models.base_weights``) or a hub id when downloads are allowed."""
    source = resolve_model_path(config)
    tokenizer, text_encoder, unet, vae, scheduler = read_components(source, config.allow_download)
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False).eval()
    if config.preset in RANDOM_PRESETS:
        identity = f"{config.preset}:seed={config.seed}"
        native = RANDOM_PRESETS[config.preset].native_resolution
    elif config.preset == "world":
        identity = f"world:{Path(source).name.removeprefix('world-')}"
        native = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    else:
        identity = str(config.path)
        native = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return Components(
        tokenizer,
        text_encoder,
        unet,
        vae,
        scheduler,
        identity,
        weights_fingerprint(unet, text_encoder),
        native,
    )


def weights_fingerprint(unet: UNet2DConditionModel, text_encoder: CLIPTextModel) -> str:
    """A short digest of a few base weight tensors: cheap, and different for any two different base models."""
    digest = hashlib.sha256()
    for tensor in (
        unet.conv_in.weight,
        unet.conv_out.weight,
        text_encoder.get_input_embeddings().weight[:1024],
        text_encoder.get_input_embeddings().weight[-1:],
    ):
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    architecture = {k: v for k, v in unet.config.items() if not k.startswith("_")}  # no load path
    digest.update(json.dumps(architecture, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Placeholder token (docs/method.md, FDTE).


def add_placeholder_token(components: Components, placeholder: str, initializer_token: str) -> tuple[int, int]:
    """Add ``placeholder`` to the tokenizer and return ``(placeholder_id, initializer_id)``.

    The initializer is looked up as a vocabulary entry (``ktn`` = 42170, a word-internal BPE piece), not as the
    BPE of a word, exactly as the official code's ``encode([...])`` does. The text encoder's embedding table is
    resized and the new row set to the initializer's row; that row is never trained (the learned vectors are
    injected, §4.1), it only keeps the id valid.
    """
    tokenizer = components.tokenizer
    vocab = tokenizer.get_vocab()
    if placeholder in vocab:
        raise ModelError(f"concept.placeholder: {placeholder!r} is already in the tokenizer vocabulary")
    if initializer_token not in vocab:
        raise ModelError(f"concept.initializer_token: {initializer_token!r} is not a tokenizer vocabulary entry")
    initializer_id = vocab[initializer_token]
    tokenizer.add_tokens([placeholder])
    placeholder_id = tokenizer.convert_tokens_to_ids(placeholder)
    text_encoder = components.text_encoder
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        table = text_encoder.get_input_embeddings().weight
        table[placeholder_id] = table[initializer_id]
    text_encoder.get_input_embeddings().requires_grad_(False)
    return placeholder_id, initializer_id


class Denoiser:
    """Calls the UNet, compiled with ``torch.compile`` when asked; if compilation fails, warns once and runs it
    eagerly from then on (a clean fallback: same results, no crash on platforms without a working compiler)."""

    def __init__(self, unet: UNet2DConditionModel, compile: bool = False, backend: str | object = "inductor"):
        self.unet = unet
        self._compiled = torch.compile(unet, backend=backend, dynamic=False) if compile else None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                logger.warning("torch.compile failed (%s); running the UNet eagerly", first)
                self._compiled = None
        return self.unet(*args, **kwargs)
