"""Component builders: the ``tiny`` and ``sd-v1`` presets, the CLIP tokenizer, the placeholder token
(docs/architecture.md, Offline models and data).

Stock components only: diffusers ``UNet2DConditionModel``, ``AutoencoderKL``, ``DDPMScheduler``,
transformers ``CLIPTextModel`` and ``CLIPTokenizer``. A preset is a registry entry that yields a diffusers
directory; every preset is then loaded by the same ``load_components`` a real checkpoint goes through.

The ``tiny`` preset has SD v1.x's *architecture* (4 UNet levels, 2 transformer layers per down level and 3 per up
level: 16 self- and 16 cross-attention layers, 10 of them in mid+up) at small widths, seeded random weights,
and the real 49,408-token CLIP vocabulary rebuilt from the BPE file inside the ``open-clip-torch`` wheel. Its
images are noise: it exists so that every code path runs for real, offline, on a CPU.
"""

from __future__ import annotations

import gzip
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
from eqdiff.errors import EqDiffError
from eqdiff.precision import LOAD_DTYPE

logger = logging.getLogger(__name__)

TINY_RESOLUTION = 64
"""Native image side of the tiny preset (its VAE downsamples by 2, so latents are 32x32)."""

# SD v1.x noise schedule (the `scheduler/scheduler_config.json` of CompVis/stable-diffusion-v1-4).
SD_V1_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class ModelError(EqDiffError, ValueError):
    """A model directory is missing, incomplete or incompatible; the message names the path."""


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


# ----------------------------------------------------------------------------------------------------------
# The CLIP tokenizer from open-clip-torch's bundled BPE file (docs/architecture.md, Offline models and data).


def clip_bpe_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch wheel."""
    import open_clip  # local import: only needed to locate the file

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelError(f"{path}: CLIP BPE vocabulary not found in the open-clip-torch installation")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    # The GPT-2/CLIP byte-to-unicode table (openai/CLIP simple_tokenizer.py, bytes_to_unicode).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer_files(directory: Path) -> None:
    """Write ``vocab.json`` and ``merges.txt`` of the 49,408-token CLIP vocabulary into ``directory``.

    Same construction as openai/CLIP's ``SimpleTokenizer``: skip the header line, keep the first 48,894 merges;
    vocab = the 256 byte-unicode characters, the same with ``</w>``, the merges joined, then the two specials.
    """
    with gzip.open(clip_bpe_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_clip_tokenizer(directory: Path) -> CLIPTokenizer:
    write_clip_tokenizer_files(directory)
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)


# ----------------------------------------------------------------------------------------------------------
# Presets.


@dataclass(frozen=True)
class RandomPreset:
    """A seeded, randomly initialised SD v1.x-architecture model: the configs of its three networks."""

    unet: dict
    vae: dict
    text_encoder: dict
    native_resolution: int


_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_CLIP_IDS = {
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

RANDOM_PRESETS: dict[str, RandomPreset] = {
    # SD v1.x topology at small widths: 16 self- and 16 cross-attention layers, 10 in mid+up. The VAE
    # downsamples by 2, so 64 px images have 32x32 latents.
    "tiny": RandomPreset(
        unet={
            "sample_size": TINY_RESOLUTION // 2,
            "layers_per_block": 2,
            "block_out_channels": (32, 32, 64, 64),
            "down_block_types": _DOWN,
            "up_block_types": _UP,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "norm_num_groups": 8,
        },
        vae={
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
            "block_out_channels": (32, 64),
            "latent_channels": 4,
            "norm_num_groups": 8,
            "sample_size": TINY_RESOLUTION,
        },
        text_encoder={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 5,
            "num_attention_heads": 4,
            **_CLIP_IDS,
        },
        native_resolution=TINY_RESOLUTION,
    ),
    # Full SD v1.x size (CompVis/stable-diffusion-v1-4 configs: 859.5 M UNet, 83.7 M VAE, CLIP ViT-L/14 text
    # tower) with random weights: for speed and memory benchmarks where real weights cannot be carried.
    "sd-v1-random": RandomPreset(
        unet={
            "sample_size": 64,
            "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": _DOWN,
            "up_block_types": _UP,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        vae={
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "latent_channels": 4,
            "sample_size": 512,
        },
        text_encoder={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
            **_CLIP_IDS,
        },
        native_resolution=512,
    ),
}


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


def preset_directory(config: ModelConfig) -> Path:
    """A random preset's directory, built once (atomically) and then reused."""
    root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
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
    """Directory (or, when allowed, hub id) that ``load_components`` reads."""
    if config.preset in RANDOM_PRESETS:
        return str(preset_directory(config))
    path = Path(config.path).expanduser()
    if path.is_dir():
        return str(path)
    if config.allow_download:
        return config.path
    raise ModelError(
        f"model.path: {config.path} is not a local directory (set model.allow_download: true to use a hub id)"
    )


def load_components(config: ModelConfig) -> Components:
    """Load the five stock components from the preset's directory (or hub id when downloads are allowed)."""
    source = resolve_model_path(config)
    local = Path(source).is_dir()
    if local:
        missing = [c for c in COMPONENTS if not (Path(source) / c).is_dir()]
        if missing:
            raise ModelError(f"{source}: not a Stable Diffusion v1.x directory (missing {', '.join(missing)}/)")
    kwargs = {"local_files_only": not config.allow_download}

    def weights(component: str) -> dict:  # one load dtype for every network, whatever its files store
        return {"variant": weights_variant(Path(source) / component) if local else None, **kwargs}

    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", dtype=LOAD_DTYPE, **weights("text_encoder")
        )
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=LOAD_DTYPE, **weights("unet"))
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=LOAD_DTYPE, **weights("vae"))
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: could not load the model ({first})") from None
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False).eval()
    if config.preset in RANDOM_PRESETS:
        identity = f"{config.preset}:seed={config.seed}"
        native = RANDOM_PRESETS[config.preset].native_resolution
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


def weights_variant(folder: Path) -> str | None:
    """``"fp16"`` when a component folder holds only diffusers' fp16 variant files (``*.fp16.safetensors``,
    ``*.fp16.bin``); None when it has full-precision files (preferred: every network is loaded in fp32)."""
    names = [p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")] if folder.is_dir() else []
    if any(".fp16." not in name for name in names):
        return None
    return "fp16" if names else None


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
