"""``load_components``, the placeholder token (docs/architecture.md, Offline models and data).

Stock components only: diffusers ``UNet2DConditionModel``, ``AutoencoderKL``, ``DDPMScheduler``,
transformers ``CLIPTextModel`` and ``CLIPTokenizer``. A preset is an entry of the preset registry
(``eqdiff.models.presets``) that yields a diffusers directory or checkpoint file; every preset is then loaded by the
same ``load_components`` a real checkpoint goes through (a diffusers directory or a single-file checkpoint, read by
``eqdiff.models.base_weights``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from eqdiff.config import ModelConfig
from eqdiff.errors import ModelError
from eqdiff.models.base_weights import read_components
from eqdiff.models.presets import cache_root, preset

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


def resolve_model_path(config: ModelConfig) -> str:
    """Directory, single ``.safetensors`` / ``.ckpt`` file (or, when allowed, hub id) that ``load_components`` reads:
    what the entry of ``model.preset`` gives (a preset's directory is built or completed once in the cache)."""
    return preset(config.preset).source(config, cache_root(config))


def load_components(config: ModelConfig) -> Components:
    """Load the five stock components from a preset's directory, ``model.path`` (a diffusers directory or a single
    checkpoint file, ``eqdiff.models.base_weights``) or a hub id when downloads are allowed."""
    entry = preset(config.preset)
    source = resolve_model_path(config)
    try:
        loaded = read_components(source, config.allow_download)
    except ModelError as exc:
        rebuild = getattr(entry, "rebuild", None)  # a cache the preset derives heals once (derived_cache)
        if rebuild is None:
            raise
        logger.warning("%s; rebuilding that cache once", exc)
        source = rebuild(config, cache_root(config))
        try:
            loaded = read_components(source, config.allow_download)
        except ModelError as again:
            raise ModelError(f"{again}; it was rebuilt once already: delete the folder {source}") from None
    tokenizer, text_encoder, unet, vae, scheduler = loaded
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False).eval()
    identity = entry.identity(config, source)
    native = entry.native_resolution(config)
    if native is None:
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
    injected, paper §4.1; docs/official-code.md §2.3), it only keeps the id valid.
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
