"""The SD v1.x architectures the project builds or reads: the random presets' configs, the noise schedule, the
CLIP tokenizer.

``RANDOM_PRESETS`` holds the ``tiny`` and ``sd-v1-random`` configs of the three networks:
``eqdiff.models.presets`` builds them with seeded random weights, and ``eqdiff.models.base_weights`` converts
single-file checkpoints with them (the ``sd-v1-random`` configs are CompVis/stable-diffusion-v1-4's, so a real SD v1.x
file loads with nothing fetched).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eqdiff.errors import ModelError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

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


# ----------------------------------------------------------------------------------------------------------
# The CLIP tokenizer from open-clip-torch's bundled BPE file (docs/architecture.md, Offline models and data).


def clip_bpe_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch wheel."""
    # find_spec locates the package without importing it (importing open_clip costs 2 s: it imports timm and
    # builds its model registry, none of which the tokenizer needs).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("open-clip-torch is not installed: its BPE vocabulary is the CLIP tokenizer's source")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
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
    from transformers import CLIPTokenizer  # here, not above: check-models imports this module (base_weights.py)

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
CLIP_IDS = {  # the CLIP text tower's vocabulary, positions and special tokens (every preset)
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
            **CLIP_IDS,
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
            **CLIP_IDS,
        },
        native_resolution=512,
    ),
}
