"""The world base model's networks: SD v1.x components at small widths (docs/world.md, "Base model"), and the
growth of a trained UNet by cross-attention at its 16 x 16 level (docs/world.md, "Attention at 16 x 16")."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from eqdiff.errors import ModelError
from eqdiff.models.architectures import CLIP_IDS

WORLD_RESOLUTION = 64
WORLD_ARCHITECTURE = {
    "unet": {
        "sample_size": WORLD_RESOLUTION // 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64, 128),
        # no attention at the 16 x 16 level (unless ``fine_attention``), cross-attention at 8 x 8 and 4 x 4 and in
        # the mid block (the RRA and L_ca/L_ra layers, down_blocks.2 and up_blocks.1, are cross-attention blocks as
        # in SD v1.x)
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 64,
        # diffusers' name for the number of heads: 2 heads of 32 and 64 channels (16 at 16 x 16; CPU attention
        # with 4-wide heads took half of each training step)
        "attention_head_dim": 2,
        "norm_num_groups": 16,
    },
    "vae": {
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": WORLD_RESOLUTION,
    },
    "text_encoder": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        **CLIP_IDS,
    },
}
FINE_ATTENTION_BLOCKS = {"down_block_types": "CrossAttnDownBlock2D", "up_block_types": "CrossAttnUpBlock2D"}
"""The block types of the 16 x 16 level (the first down block, the last up block) with ``fine_attention``."""


def _fine_attention_blocks(config: dict) -> dict:
    """``config`` (UNet arguments) with cross-attention blocks at the 16 x 16 level."""
    down, up = config["down_block_types"], config["up_block_types"]
    return {
        **config,
        "down_block_types": (FINE_ATTENTION_BLOCKS["down_block_types"], *down[1:]),
        "up_block_types": (*up[:-1], FINE_ATTENTION_BLOCKS["up_block_types"]),
    }


def unet_architecture(fine_attention: bool) -> dict:
    """The world UNet's ``UNet2DConditionModel`` arguments, with or without cross-attention at 16 x 16."""
    architecture = WORLD_ARCHITECTURE["unet"]
    return _fine_attention_blocks(architecture) if fine_attention else dict(architecture)


def has_fine_attention(unet_config: dict) -> bool:
    return tuple(unet_config["down_block_types"])[0] == FINE_ATTENTION_BLOCKS["down_block_types"]


@torch.no_grad()
def grow_fine_attention(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """``unet`` with cross-attention blocks added at its 16 x 16 level, every other weight kept. The new blocks'
    output projections are zero, and each is added to its input (diffusers' ``Transformer2DModel`` is residual),
    so the grown UNet computes exactly what ``unet`` did until training moves them."""
    grown = UNet2DConditionModel(**_fine_attention_blocks({k: v for k, v in unet.config.items() if k[0] != "_"}))
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    new_blocks = (grown.down_blocks[0], grown.up_blocks[-1])
    allowed = ("down_blocks.0.attentions.", f"up_blocks.{len(grown.up_blocks) - 1}.attentions.")
    if unexpected or any(not key.startswith(allowed) for key in missing):
        raise ModelError(f"growing attention at 16 x 16: unexpected weights {unexpected or missing}")
    for block in new_blocks:
        for attention in block.attentions:
            attention.proj_out.weight.zero_()
            attention.proj_out.bias.zero_()
    return grown
