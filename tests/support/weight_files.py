"""The ``weights`` tier's files: random weights with the structure of the files users download, built offline.

``build_weight_files(root, size)`` writes, under ``root``:

* ``sd/model.safetensors`` — SD v1.x in the original single-file layout (``v1-5-pruned-emaonly.safetensors``:
  ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*`` and the DDPM schedule
  buffers), mapped by ``eqdiff.models.single_file_keys``;
* ``clip-vit-base-patch32/`` and ``dino-vits16/`` — transformers directories of CLIP ViT-B/32 and DINO ViT-S/16
  (``config.json``, ``model.safetensors``; CLIP with its 49,408-token tokenizer files);
* ``sam_vit_b_01ec64.pth`` — a SAM ``vit_b`` state dict from segment-anything's builder;
* ``groundingdino_swint_ogc.pth`` (``{"model": state_dict}``) from groundingdino-py's builder with its shipped
  ``GroundingDINO_SwinT_OGC.py``, and ``bert-base-uncased/`` (BERT config, random weights, a 30,522-entry
  WordPiece vocabulary with BERT's special-token ids; the real vocabulary is not on this machine).

``size="full"`` uses the real architectures (about 1.07 B + 151 M + 22 M + 94 M + 172 M + 110 M parameters);
``size="small"`` keeps every file's structure and key layout at small widths (the ``tiny`` SD preset, 2-layer
CLIP/DINO, a 2-block SAM registered as ``SMALL_SAM_TYPE``, 1+1-layer GroundingDINO, a 1-layer BERT), for CI.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    ViTConfig,
    ViTModel,
)

from eqdiff.evaluation.evaluate import clip_vit_b32_config, dino_vits16_config
from eqdiff.models.architectures import RANDOM_PRESETS, SD_V1_SCHEDULER, build_clip_tokenizer
from eqdiff.models.single_file_keys import single_file_state_dict
from eqdiff.prep.grounded_sam import read_grounding_dino_config, shipped_grounding_dino_config

SMALL_SAM_TYPE = "vit_b_small"
"""Registry name of the small SAM (``segment_anything.sam_model_registry`` is where real types live too)."""


def small_sam(checkpoint: str | None = None):
    """SAM's own builder (``build_sam._build_sam``: 1024 px input, 256-channel prompt encoder and mask decoder)
    with a 2-block, 64-wide image encoder."""
    build = importlib.import_module("segment_anything.build_sam")._build_sam
    return build(
        encoder_embed_dim=64,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        checkpoint=checkpoint,
    )


@dataclass(frozen=True)
class TierSize:
    sd_preset: str
    clip: CLIPConfig
    dino: ViTConfig
    sam_type: str
    grounding_dino: dict
    """Overrides of the shipped GroundingDINO_SwinT_OGC settings."""
    bert: BertConfig


SIZES = {
    "full": lambda: TierSize("sd-v1-random", clip_vit_b32_config(), dino_vits16_config(), "vit_b", {}, BertConfig()),
    "small": lambda: TierSize(
        "tiny",
        CLIPConfig(
            text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": 224,
                "patch_size": 32,
            },
            projection_dim=16,
        ),
        ViTConfig(
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            image_size=224,
            patch_size=16,
            layer_norm_eps=1e-6,
        ),
        SMALL_SAM_TYPE,
        {"enc_layers": 1, "dec_layers": 1, "dim_feedforward": 64, "num_queries": 20},
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    ),
}


def write_sd_single_file(unet, vae, text_encoder, out: Path, dtype: torch.dtype | None = None) -> Path:
    """The three networks as one original-layout checkpoint: ``.safetensors``, or a ``.ckpt`` holding
    ``{"state_dict": ..., "global_step": 0}`` as Lightning writes it. ``dtype`` casts the floating tensors."""
    state = single_file_state_dict(unet, vae, text_encoder, SD_V1_SCHEDULER)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        safetensors.torch.save_file(state, out)
    else:
        torch.save({"state_dict": state, "global_step": 0}, out)
    return out


def convert_directory(directory: Path, out: Path, dtype: torch.dtype | None = None) -> Path:
    """A diffusers SD v1.x directory's networks as one single-file checkpoint at ``out``."""
    unet = UNet2DConditionModel.from_pretrained(directory, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(directory, subfolder="vae")
    text_encoder = CLIPTextModel.from_pretrained(directory, subfolder="text_encoder")
    return write_sd_single_file(unet, vae, text_encoder, out, dtype)


def build_sd_single_file(preset_name: str, out: Path, seed: int = 0) -> Path:
    preset = RANDOM_PRESETS[preset_name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**preset.unet)
        vae = AutoencoderKL(**preset.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    return write_sd_single_file(unet, vae, text_encoder, out)


def build_clip_directory(config: CLIPConfig, out: Path) -> Path:
    CLIPModel(config).save_pretrained(out)
    build_clip_tokenizer(out).save_pretrained(out)
    CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}).save_pretrained(out)
    return out


def build_dino_directory(config: ViTConfig, out: Path) -> Path:
    ViTModel(config).save_pretrained(out)  # with its pooler, as a ViTModel checkpoint is saved
    return out


def build_bert_directory(config: BertConfig, out: Path) -> Path:
    """A BERT directory: ``config``, random weights, a ``vocab_size``-entry uncased vocabulary with BERT's
    special tokens at their ids (0 [PAD], 100 [UNK], 101 [CLS], 102 [SEP], 103 [MASK])."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(".,?!'-") + [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab += ["toy", "dog", "cat", "a", "the", "stuffed", "animal"]
    vocab += [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"[filler{i}]" for i in range(config.vocab_size - len(vocab))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    BertModel(config).save_pretrained(out)
    return out


def grounding_dino_config_file(overrides: dict, out: Path) -> Path:
    """The shipped ``GroundingDINO_SwinT_OGC.py`` (its literal assignments), with ``overrides``, at ``out``."""
    settings = {**read_grounding_dino_config(shipped_grounding_dino_config("GroundingDINO_SwinT_OGC")), **overrides}
    out.write_text("".join(f"{name} = {value!r}\n" for name, value in settings.items()), encoding="utf-8")
    return out


def build_grounding_dino(config_file: Path, bert_dir: Path, out: Path) -> Path:
    from eqdiff.prep.grounded_sam import build_grounding_dino as build

    torch.save({"model": build(config_file, bert_dir).state_dict()}, out)
    return out


def build_sam(sam_type: str, out: Path) -> Path:
    from segment_anything import sam_model_registry

    builder = small_sam if sam_type == SMALL_SAM_TYPE else sam_model_registry[sam_type]
    torch.save(builder(checkpoint=None).state_dict(), out)
    return out


def build_weight_files(root: Path, size: str, seed: int = 0) -> dict[str, Path]:
    """Every file of the tier under ``root``; returns their paths by role (params-like names)."""
    spec = SIZES[size]()
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    paths = {"sd_single_file": build_sd_single_file(spec.sd_preset, root / "sd" / "model.safetensors", seed)}
    paths["clip_model"] = build_clip_directory(spec.clip, root / "clip-vit-base-patch32")
    paths["dino_model"] = build_dino_directory(spec.dino, root / "dino-vits16")
    paths["sam_checkpoint"] = build_sam(spec.sam_type, root / "sam_vit_b_01ec64.pth")
    paths["text_encoder_dir"] = build_bert_directory(spec.bert, root / "bert-base-uncased")
    if spec.grounding_dino:
        config_file = grounding_dino_config_file(spec.grounding_dino, root / "GroundingDINO_small.py")
        paths["grounding_dino_config"] = config_file
    else:  # the config groundingdino-py ships, by name (as params name it)
        paths["grounding_dino_config"] = Path("GroundingDINO_SwinT_OGC")
        config_file = shipped_grounding_dino_config("GroundingDINO_SwinT_OGC")
    paths["grounding_dino_checkpoint"] = build_grounding_dino(
        config_file, paths["text_encoder_dir"], root / "groundingdino_swint_ogc.pth"
    )
    return paths
