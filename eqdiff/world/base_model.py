"""Training the ``world`` base model from scratch on the procedural world (docs/world.md, "Base model").

Stock SD v1.x components at small widths, trained in three phases, about 90 minutes on 2 CPU cores:

1. the VAE (``AutoencoderKL``, 3 levels: 64 px images <-> 4 x 16 x 16 latents) on random crops, L1 + a tiny KL
   term as SD's first stage (without the adversarial and perceptual terms, which need pretrained networks);
   ``scaling_factor`` is then set to 1 / std of the training latents, as SD's 0.18215 was measured;
2. the CLIP text encoder, contrastively against a small image tower over the latents (CLIP's objective; the
   tower is discarded), then frozen, as SD v1.x's text encoder is;
3. the UNet (SD v1.x's block types, one layer per block) with SD's noise schedule and epsilon loss (Min-SNR
   weighted) on cached VAE posteriors, captions dropped 10 % of the time (classifier-free guidance), AdamW with
   warm-up and cosine decay, and an EMA, which is what is saved.

The output is a diffusers directory without tokenizer and scheduler (``eqdiff.world.preset`` adds the real CLIP
tokenizer and SD's scheduler), weights in fp16, in shards under 2 MB. The text encoder keeps only the token rows
that world captions use (and the concept initializer's); the preset rebuilds the whole table.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel

from eqdiff.errors import ModelError
from eqdiff.models.architectures import SD_V1_SCHEDULER, build_clip_tokenizer
from eqdiff.world.architecture import (
    WORLD_ARCHITECTURE,
    WORLD_RESOLUTION,
    grow_fine_attention,
    has_fine_attention,
    unet_architecture,
)
from eqdiff.world.preset import (
    RECORD_FILE,
    load_world_model,
    save_world_model,
    world_source,
)
from eqdiff.world.render import render
from eqdiff.world.text_encoder import (
    TOWER_POOLING,
    lr_factor,
    token_ids,
    train_text_encoder,
    training_captions,
    word_separation,
)
from eqdiff.world.vocabulary import STYLES, random_spec

logger = logging.getLogger(__name__)

KEPT_TOKENS = ("ktn",)
"""Vocabulary entries whose rows are kept although no caption uses them (the default concept initializer)."""


@dataclass(frozen=True)
class WorldTrainConfig:
    """How the world base model is trained; the defaults are the shipped model's (docs/world.md)."""

    num_images: int = 40_000
    """Training images drawn once (captions are re-drawn every step)."""
    vae_steps: int = 4_000
    vae_batch_size: int = 32
    vae_crop: int = 32
    """Side of the random crops the VAE trains on (it is convolutional; the mid-block attention sees 8 x 8)."""
    vae_learning_rate: float = 1e-3
    text_steps: int = 600
    """Contrastive (CLIP) steps of the text encoder against a small latent image tower, before the UNet."""
    text_batch_size: int = 256
    text_learning_rate: float = 1e-3
    text_hard_negatives: int = 0
    """Hard-negative captions per image in the text encoder's contrastive phase: the image's caption with one
    attribute swapped (NegCLIP); 0, the shipped model's text encoder, has none (docs/world.md, "Hard negatives
    for the text encoder")."""
    text_tower_pooling: str = "mean"
    """How the contrastive phase's image tower pools its feature maps: ``mean`` (the shipped model's) or
    ``mean+max`` (``eqdiff.world.text_encoder.image_tower``)."""
    text_attribute_loss: float = 0.0
    """Weight of the attribute heads' loss in the text encoder's phase: linear heads read each attribute a
    caption names from the encoder's states (``eqdiff.world.text_encoder.AttributeHeads``); 0, the shipped
    model's text encoder, has none (docs/world.md, "Attribute heads for the text encoder")."""
    steps: int = 8_000
    """UNet optimisation steps (the text encoder is frozen, as SD v1.x's CLIP text encoder is)."""
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    snr_gamma: float = 5.0
    """Min-SNR-gamma loss weighting (Hang et al. 2023): timesteps with SNR above gamma are weighted gamma / SNR."""
    caption_dropout: float = 0.1
    word_keep: float = 0.8
    """Probability that each attribute / scene word of a caption is kept."""
    second_colour: float = 0.0
    """Probability that a patterned object's caption also names its pattern's colour ("a yellow purple spotted
    ball"); 0, the shipped model's captions, never does (docs/world.md, "Naming the second colour in captions")."""
    fine_attention: bool = False
    """Cross-attention at the 16 x 16 level too (cross-attention blocks at every level, as SD v1.x has at its
    finest); off, the shipped model's UNet, that level has none. A part resumed from a model without it grows
    it: the new transformer blocks start with a zero output projection, so the grown UNet first computes exactly
    what the model did (docs/world.md, "Attention at 16 x 16")."""
    ema_decay: float = 0.999
    seed: int = 0
    resume_from: str = ""
    """A world model folder to continue: its VAE and frozen text encoder are reused as they are and its UNet
    trains ``steps`` more steps (a new warm-up and cosine cycle) on the same training set; empty: train all three
    from scratch. A longer training in parts, on the same command, each part within one session."""
    new_text_encoder: bool = False
    """With ``resume_from``: train a new text encoder (this part's ``text_*`` settings) in place of the model's
    and continue its UNet under it; the VAE is still reused as it is."""
    new_unet: bool = False
    """With ``resume_from``: train a new UNet from scratch (``steps`` steps) in place of the model's, under its
    text encoder or, with ``new_text_encoder``, under a new one; the VAE is reused as it is, which saves its
    phase (a third of a first part)."""


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, list]:
    seed, start, count = args
    images, specs = [], []
    for index in range(start, start + count):
        spec = random_spec(np.random.default_rng([seed, index]))
        image, _ = render(spec, WORLD_RESOLUTION)
        images.append(np.asarray(image))
        specs.append(spec)
    return np.stack(images), specs


def draw_training_set(num_images: int, seed: int, workers: int = 2) -> tuple[np.ndarray, list]:
    """``(N, 64, 64, 3) uint8`` images and their specs; image ``i`` depends only on ``(seed, i)``."""
    chunk = 500
    jobs = [(seed, start, min(chunk, num_images - start)) for start in range(0, num_images, chunk)]
    images, specs = [], []
    with get_context("spawn").Pool(workers) as pool, tqdm(total=num_images, desc="world: drawing", unit="img") as bar:
        for part, part_specs in pool.imap(_render_chunk, jobs):
            images.append(part)
            specs.extend(part_specs)
            bar.update(len(part))
    return np.concatenate(images), specs


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_vae(images: np.ndarray, config: WorldTrainConfig, generator: torch.Generator) -> AutoencoderKL:
    vae = AutoencoderKL(**WORLD_ARCHITECTURE["vae"])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.vae_steps, 100))
    for step in (bar := tqdm(range(config.vae_steps), desc="world: VAE", unit="step")):
        # the last 5 % on whole images, so the mid-block attention also sees the 16 x 16 latents it will get
        crop = config.vae_crop if step < 0.95 * config.vae_steps else WORLD_RESOLUTION
        rows = torch.randint(len(images), (config.vae_batch_size,), generator=generator)
        top, left = (int(v) for v in torch.randint(0, WORLD_RESOLUTION - crop + 1, (2,), generator=generator))
        batch = _to_tensor(images[rows.numpy()][:, top : top + crop, left : left + crop])
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = (reconstruction - batch).abs().mean() + 1e-6 * posterior.kl().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(l1=f"{loss.item():.4f}")
    return vae.eval()


@torch.no_grad()
def encode_training_set(vae: AutoencoderKL, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds ``(N, 4, 16, 16)`` of every training image (unscaled)."""
    means, stds = [], []
    for start in tqdm(range(0, len(images), 256), desc="world: encoding", unit="batch"):
        posterior = vae.encode(_to_tensor(images[start : start + 256])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


class _Ema:
    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.live = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.live]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.live], 1 - self.decay)

    @torch.no_grad()
    def copy_to_live(self) -> None:
        for live, shadow in zip(self.live, self.shadow, strict=True):
            live.copy_(shadow)


def train_denoiser(
    means: torch.Tensor,
    stds: torch.Tensor,
    scale: float,
    specs: list,
    text_encoder: CLIPTextModel,
    tokenizer,
    config: WorldTrainConfig,
    generator: torch.Generator,
    unet: UNet2DConditionModel | None = None,
) -> tuple[UNet2DConditionModel, set[int]]:
    """Train the UNet (a new one, or ``unet`` further) on ``scale``-d latents under the frozen ``text_encoder``;
    returns the EMA UNet and the token ids captions used."""
    unet = (unet or UNet2DConditionModel(**unet_architecture(config.fine_attention))).train()
    noise_scheduler = DDPMScheduler.from_config(SD_V1_SCHEDULER)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.steps, config.warmup_steps))
    ema = _Ema([unet], config.ema_decay)
    rng = np.random.default_rng([config.seed, 1])
    used: set[int] = set()
    alphas = noise_scheduler.alphas_cumprod
    for _ in (bar := tqdm(range(config.steps), desc="world: UNet", unit="step")):
        rows = torch.randint(len(specs), (config.batch_size,), generator=generator)
        ids = token_ids(tokenizer, training_captions(specs, rows, rng, config, config.caption_dropout))
        used.update(int(t) for t in ids.unique())
        latents = (means[rows] + stds[rows] * torch.randn(means[rows].shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(rows),), generator=generator)
        a = alphas[timesteps].sqrt().view(-1, 1, 1, 1)
        noisy = a * latents + (1 - a**2).sqrt() * noise
        with torch.no_grad():
            states = text_encoder(ids).last_hidden_state
        snr = alphas[timesteps] / (1 - alphas[timesteps])
        weight = snr.clamp(max=config.snr_gamma) / snr
        error = (unet(noisy, timesteps, states).sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (weight * error).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to_live()
    return unet.eval(), used


FIRST_PART_ONLY = tuple(f.name for f in fields(WorldTrainConfig) if f.name.startswith(("vae_", "text_")))
"""Settings of the VAE and text encoder phases, which a resumed part does not run."""


def kept_networks(new_text_encoder: bool) -> str:
    return "VAE" if new_text_encoder else "VAE and text encoder"


def first_part_settings(source: Path, new_text_encoder: bool = False) -> dict:
    """The VAE and text encoder settings the world model at ``source`` was trained with, from its record (each
    part records those its networks were trained with); those the record lacks are left out. With
    ``new_text_encoder``, only the VAE's: a part that trains its own text encoder keeps only the VAE."""
    record_path = source / RECORD_FILE
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    config = record.get("config", {})
    kept = [name for name in FIRST_PART_ONLY if not (new_text_encoder and name.startswith("text_"))]
    return {name: config[name] for name in kept if name in config}


def check_resume(config: WorldTrainConfig) -> Path | None:
    """The folder ``config.resume_from`` names, checked to be a world model, and ``None`` without one. A resumed
    part runs neither the VAE nor the text encoder phase: its settings for them must be those the model was
    trained with, so that the record says what was run; any other value is refused, not silently ignored. With
    ``new_text_encoder`` the part runs the text encoder phase, and only the VAE settings are held to the model's."""
    if config.text_tower_pooling not in TOWER_POOLING:
        raise ModelError(
            f"--text-tower-pooling {config.text_tower_pooling}: expected one of {', '.join(TOWER_POOLING)}"
        )
    if not config.resume_from:
        for option in ("new_text_encoder", "new_unet"):
            if getattr(config, option):
                network = option.removeprefix("new_").replace("_", " ").replace("unet", "UNet")
                raise ModelError(
                    f"--{option.replace('_', '-')} replaces the {network} of a --resume-from model: name one"
                )
        return None
    source = world_source(config.resume_from, "--resume-from")
    unet_config = json.loads((source / "unet" / "config.json").read_text(encoding="utf-8"))
    if has_fine_attention(unet_config) and not config.fine_attention and not config.new_unet:
        raise ModelError(
            f"--resume-from {source} has cross-attention at 16 x 16: pass --fine-attention to continue it as it is"
        )
    trained = first_part_settings(source, config.new_text_encoder)
    changed = [name for name, value in trained.items() if getattr(config, name) != value]
    if changed:
        options = ", ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in changed)
        raise ModelError(
            f"--resume-from keeps the {kept_networks(config.new_text_encoder)} of {source} (trained with "
            + ", ".join(f"{name} {trained[name]}" for name in changed)
            + f"): {options} would have no effect"
        )
    return source


def train_world_model(out: str | Path, config: WorldTrainConfig = WorldTrainConfig()) -> Path:
    """Train the world base model and write it to ``out`` (unet/, vae/, text_encoder/, world_model.json)."""
    out = Path(out)
    start = time.monotonic()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    source = check_resume(config)
    previous = load_world_model(source) if source else None
    images, specs = draw_training_set(config.num_images, config.seed)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_clip_tokenizer(Path(folder))
    if previous is None:
        vae = train_vae(images, config, generator)
        means, stds = encode_training_set(vae, images)
        scale = float(1.0 / means.std())  # SD's scaling_factor, measured the same way
        vae.register_to_config(scaling_factor=scale)
        text_encoder, used = train_text_encoder(means * scale, specs, tokenizer, config, generator)
        unet = None
    else:
        unet, vae, text_encoder, used, resumed = previous
        if config.new_unet:
            unet = None
        elif config.fine_attention and not has_fine_attention(unet.config):
            unet = grow_fine_attention(unet)
        means, stds = encode_training_set(vae, images)
        scale = float(vae.config.scaling_factor)
        if config.new_text_encoder:
            text_encoder, used = train_text_encoder(means * scale, specs, tokenizer, config, generator)
    separation = word_separation(text_encoder, tokenizer)
    tqdm.write("world: text encoder states, mean distance of one-word swaps: " + str(separation).strip("{}"))
    unet, used_by_unet = train_denoiser(means, stds, scale, specs, text_encoder, tokenizer, config, generator, unet)
    keep = used | used_by_unet | {tokenizer.convert_tokens_to_ids(t) for t in KEPT_TOKENS}
    extra = {"text_separation": separation, **({"resumed_from": resumed} if previous is not None else {})}
    config_record, wall_seconds = asdict(config), time.monotonic() - start
    save_world_model(out, unet, vae, text_encoder, keep, config_record, list(STYLES), wall_seconds, extra)
    return out
