"""The original single-file layout of Stable Diffusion v1.x checkpoints (``v1-5-pruned-emaonly.safetensors``).

CompVis' LDM code saves the three networks in one state dict: the UNet under ``model.diffusion_model.`` with its
own block names (``input_blocks.4.1.`` for diffusers' ``down_blocks.1.attentions.0.``), the VAE under
``first_stage_model.`` (``encoder.down.0.block.1.``, 1x1-conv attention weights), the CLIP text tower under
``cond_stage_model.transformer.`` with transformers' names, plus the DDPM schedule buffers (``betas``,
``alphas_cumprod``, ...). This module maps diffusers names to those names, derived from a model config (so the
``tiny`` preset maps too). The correspondence is the one documented by diffusers'
``scripts/convert_diffusers_to_original_stable_diffusion.py``; the code is written independently, and the
checkpoints it produces are read back by diffusers' own ``from_single_file`` converter in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."

_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
_VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def unet_prefixes(config: Mapping) -> list[tuple[str, str, dict[str, str]]]:
    """``(diffusers prefix, original prefix, renames inside the block)`` for every UNet block of ``config``.

    LDM numbers the UNet's blocks sequentially: ``input_blocks.0`` is ``conv_in``, then each level's resnets
    (``.0``, with their attention at ``.1``) and its downsampler; ``output_blocks`` hold ``layers_per_block + 1``
    resnets per level with the upsampler after the last one's attention.
    """
    per_level = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET),
    ]
    for i in range(levels):
        down_attention = config["down_block_types"][i].startswith("CrossAttn")
        up_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per_level):
            index = 1 + i * (per_level + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", _UNET_RESNET))
            if down_attention:
                pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", {}))
        if i < levels - 1:
            pairs.append(
                (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (per_level + 1)}.0.op.", {})
            )
        for j in range(per_level + 1):
            index = i * (per_level + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", _UNET_RESNET))
            if up_attention:
                pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", {}))
        if i < levels - 1:
            last = i * (per_level + 1) + per_level
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{2 if up_attention else 1}.", {}))
    return pairs


def vae_prefixes(config: Mapping) -> list[tuple[str, str, dict[str, str]]]:
    """The same for the VAE: encoder levels keep their order, decoder levels are numbered in reverse."""
    per_level = config.get("layers_per_block", 1)
    levels = len(config["block_out_channels"])
    pairs = [("quant_conv.", "quant_conv.", {}), ("post_quant_conv.", "post_quant_conv.", {})]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in.", f"{part}.conv_in.", {}),
            (f"{part}.conv_out.", f"{part}.conv_out.", {}),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _VAE_RESNET),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _VAE_RESNET),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION),
        ]
    for i in range(levels):
        for j in range(per_level):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", _VAE_RESNET))
        for j in range(per_level + 1):
            pairs.append(
                (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}.", _VAE_RESNET)
            )
        if i < levels - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", {}))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.", {}))
    return pairs


def _rename(key: str, prefixes: list[tuple[str, str, dict[str, str]]]) -> str:
    for diffusers, original, inner in prefixes:
        if key.startswith(diffusers):
            rest = key[len(diffusers) :]
            for old, new in inner.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            return original + rest
    raise KeyError(f"{key}: no original single-file name for this diffusers parameter")


def unet_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers UNet state dict in the original layout (``model.diffusion_model.*`` keys)."""
    prefixes = unet_prefixes(config)
    return {UNET_PREFIX + _rename(key, prefixes): value for key, value in state.items()}


def vae_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers VAE state dict in the original layout; the mid-block attention's linear weights become the
    (C, C, 1, 1) 1x1-convolution weights LDM stores."""
    prefixes = vae_prefixes(config)
    original = {}
    for key, value in state.items():
        name = _rename(key, prefixes)
        if ".mid.attn_1." in name and name.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            value = value.reshape(*value.shape, 1, 1)
        original[VAE_PREFIX + name] = value
    return original


def text_encoder_to_original(state: Mapping[str, torch.Tensor], max_positions: int) -> dict[str, torch.Tensor]:
    """The CLIP text tower under ``cond_stage_model.transformer.text_model.``, with the ``position_ids`` buffer
    (1, max_positions) int64 that the released files carry."""
    original = {TEXT_PREFIX + key.removeprefix("text_model."): value for key, value in state.items()}
    original.setdefault(TEXT_PREFIX + "embeddings.position_ids", torch.arange(max_positions)[None])
    return original


def ddpm_buffers(scheduler_config: Mapping) -> dict[str, torch.Tensor]:
    """The (T,) float32 schedule buffers LDM's ``register_schedule`` saves beside the networks."""
    steps = scheduler_config["num_train_timesteps"]
    start, end = scheduler_config["beta_start"], scheduler_config["beta_end"]
    betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2  # "scaled_linear"
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    variance = betas * (1.0 - previous) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - previous) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
    }
    return {name: value.float() for name, value in buffers.items()}


def single_file_state_dict(unet, vae, text_encoder, scheduler_config: Mapping) -> dict[str, torch.Tensor]:
    """The three diffusers/transformers modules as one original-layout state dict (what a ``.safetensors`` or a
    ``.ckpt``'s ``state_dict`` holds); tensors are contiguous so ``safetensors`` can write them."""
    state = {
        **unet_to_original(unet.state_dict(), unet.config),
        **vae_to_original(vae.state_dict(), vae.config),
        **text_encoder_to_original(text_encoder.state_dict(), text_encoder.config.max_position_embeddings),
        **ddpm_buffers(scheduler_config),
    }
    return {key: value.detach().contiguous() for key, value in state.items()}
