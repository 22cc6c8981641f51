"""Training the ``world`` base model from scratch on the procedural world (docs/world.md, "Base model").

Stock SD v1.x components at small widths, trained in two phases, about 90 minutes on 2 CPU cores:

1. the VAE (``AutoencoderKL``, 3 levels: 64 px images <-> 4 x 16 x 16 latents) on random crops, L1 + a tiny KL
   term as SD's first stage (without the adversarial and perceptual terms, which need pretrained networks);
   ``scaling_factor`` is then set to 1 / std of the training latents, as SD's 0.18215 was measured;
2. the UNet (SD v1.x's block types, one layer per block) and the CLIP text encoder, jointly, with SD's
   noise schedule and epsilon loss on cached VAE posteriors, captions dropped 10 % of the time (classifier-free
   guidance), AdamW with warm-up and cosine decay, and an EMA of both networks, which is what is saved.

The output is a diffusers directory without tokenizer and scheduler (``eqdiff.world.preset`` adds the real CLIP
tokenizer and SD's scheduler), weights in fp16. Text-encoder rows of tokens that no world caption uses are
zeroed before saving (they were never trained; zero rows keep the repository copy small) except the concept
initializer's row.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from eqdiff.architectures import CLIP_IDS, SD_V1_SCHEDULER, build_clip_tokenizer
from eqdiff.world.preset import RECORD_FILE, world_digest
from eqdiff.world.render import render
from eqdiff.world.vocabulary import STYLES, caption, random_spec

logger = logging.getLogger(__name__)

WORLD_RESOLUTION = 64
WORLD_ARCHITECTURE = {
    "unet": {
        "sample_size": WORLD_RESOLUTION // 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64, 96, 96),
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 64,
        "attention_head_dim": 8,
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
KEPT_TOKENS = ("ktn",)
"""Vocabulary entries whose rows are kept although no caption uses them (the default concept initializer)."""


@dataclass(frozen=True)
class WorldTrainConfig:
    """How the world base model is trained; the defaults are the shipped model's (docs/world.md)."""

    num_images: int = 40_000
    """Training images drawn once (captions are re-drawn every step)."""
    vae_steps: int = 1_500
    vae_batch_size: int = 32
    vae_crop: int = 32
    """Side of the random crops the VAE trains on (it is convolutional; the mid-block attention sees 8 x 8)."""
    vae_learning_rate: float = 1e-3
    steps: int = 3_600
    """UNet + text encoder optimisation steps."""
    batch_size: int = 32
    learning_rate: float = 5e-4
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    word_keep: float = 0.8
    """Probability that each attribute / scene word of a caption is kept."""
    ema_decay: float = 0.999
    seed: int = 0


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


def _lr(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_vae(images: np.ndarray, config: WorldTrainConfig, generator: torch.Generator) -> AutoencoderKL:
    vae = AutoencoderKL(**WORLD_ARCHITECTURE["vae"])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr(s, config.vae_steps, 100))
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
    config: WorldTrainConfig,
    generator: torch.Generator,
) -> tuple[UNet2DConditionModel, CLIPTextModel, set[int]]:
    """Train UNet + text encoder on ``scale``-d latents; returns the EMA networks and the token ids captions used."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_clip_tokenizer(Path(folder))
    unet = UNet2DConditionModel(**WORLD_ARCHITECTURE["unet"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**WORLD_ARCHITECTURE["text_encoder"]))
    noise_scheduler = DDPMScheduler.from_config(SD_V1_SCHEDULER)
    networks = [unet, text_encoder]
    parameters = [p for m in networks for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr(s, config.steps, config.warmup_steps))
    ema = _Ema(networks, config.ema_decay)
    rng = np.random.default_rng([config.seed, 1])
    used: set[int] = set()
    alphas = noise_scheduler.alphas_cumprod
    for _ in (bar := tqdm(range(config.steps), desc="world: UNet + text encoder", unit="step")):
        rows = torch.randint(len(specs), (config.batch_size,), generator=generator)
        texts = [
            "" if rng.random() < config.caption_dropout else caption(specs[int(i)], rng, config.word_keep) for i in rows
        ]
        ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        used.update(int(t) for t in ids.unique())
        latents = (means[rows] + stds[rows] * torch.randn(means[rows].shape, generator=generator)) * scale
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(rows),), generator=generator)
        a = alphas[timesteps].sqrt().view(-1, 1, 1, 1)
        noisy = a * latents + (1 - a**2).sqrt() * noise
        states = text_encoder(ids).last_hidden_state
        loss = F.mse_loss(unet(noisy, timesteps, states).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to_live()
    return unet.eval(), text_encoder.eval(), used


def train_world_model(out: str | Path, config: WorldTrainConfig = WorldTrainConfig()) -> Path:
    """Train the world base model and write it to ``out`` (unet/, vae/, text_encoder/, world_model.json)."""
    out = Path(out)
    start = time.monotonic()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images, specs = draw_training_set(config.num_images, config.seed)
    vae = train_vae(images, config, generator)
    means, stds = encode_training_set(vae, images)
    scale = float(1.0 / means.std())  # SD's scaling_factor, measured the same way
    vae.register_to_config(scaling_factor=scale)
    unet, text_encoder, used = train_denoiser(means, stds, scale, specs, config, generator)
    save_world_model(out, unet, vae, text_encoder, used, config, time.monotonic() - start)
    return out


def save_world_model(
    out: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    used: set[int],
    config: WorldTrainConfig,
    wall_seconds: float,
) -> None:
    """Write the EMA networks in fp16 and ``world_model.json`` (config, digest of the files, wall time)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_clip_tokenizer(Path(folder))
    keep = sorted(used | {tokenizer.convert_tokens_to_ids(t) for t in KEPT_TOKENS})
    with torch.no_grad():
        table = text_encoder.get_input_embeddings().weight
        kept = table[keep].clone()
        table.zero_()
        table[keep] = kept
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.to(torch.float16).save_pretrained(out / name)
    record = {
        "config": asdict(config),
        "styles": list(STYLES),
        "kept_token_ids": len(keep),
        "digest": world_digest(out),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(wall_seconds),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
