"""MGDP: mask-guided diffusion process (paper §4.2, Eq. 6-7; docs/method.md, MGDP).

The subject mask, binarised and dilated on the latent grid, decides where the forward process adds noise:
z'_t = M ⊙ z_t + (1 − M) ⊙ z_0 (Eq. 6), so the background stays clean and carries no gradient signal; the
instance loss is the masked squared error normalised by the mask area (Eq. 7, official normalisation
Σ_{c,h,w} M·e / Σ_{h,w} M = C × masked mean, kept because it sets the balance with the prior loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eqdiff.config import MgdpMode


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Binarise at 0.5 and resize (nearest) to the latent grid.

    Args:
        mask: (B, 1, H, W) float in [0, 1].
    Returns:
        (B, 1, h, w) float in {0, 1}.
    """
    binary = (mask >= 0.5).to(mask.dtype)
    return F.interpolate(binary, size=latent_size, mode="nearest")


REFERENCE_LATENT_SIDE = 64
"""Latent side at which ``mgdp.dilate_radius`` is given (a 512 px image in SD v1.x; the official recipe)."""


def scaled_radius(radius: int, latent_side: int) -> int:
    """A dilation radius given on the 64-latent grid, scaled to ``latent_side`` and rounded (at least 1 when
    ``radius`` > 0), so the dilated mask covers the same fraction of the image at any resolution."""
    if radius == 0:
        return 0
    return max(1, round(radius * latent_side / REFERENCE_LATENT_SIDE))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Max filter of Chebyshev radius ``radius`` (a (2r+1)² window), clipped at the borders.

    Equals the official 5 iterations of reflect-pad-2 + 5×5 max-pool for radius 10 (docs/official-code.md §8.5).
    Args: mask (B, 1, h, w) float. Returns the same shape.
    """
    if radius == 0:
        return mask
    padded = F.pad(mask, (radius,) * 4, mode="constant", value=float("-inf"))
    return F.max_pool2d(padded, kernel_size=2 * radius + 1, stride=1)


def compose_noisy_latents(noisy_latents: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 6: z'_t = M ⊙ z_t + (1 − M) ⊙ z_0, with (B, 1, h, w) ``mask`` broadcast over channels."""
    return mask * noisy_latents + (1.0 - mask) * latents


def masked_loss(model_pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per row: Σ_{c,h,w} M·(ε − ε̂)² / Σ_{h,w} M, then the mean over rows (a scalar).

    With M ≡ 1 this is C × MSE (C = 4 latent channels), the official normalisation.
    """
    error = (model_pred.float() - target.float()) ** 2
    mask = mask.float()
    per_row = (error * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return per_row.mean()


def instance_inputs(
    mode: MgdpMode,
    noisy_latents: torch.Tensor,
    latents: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet input and the loss mask of the instance rows for a mode.

    ``off``: plain noising, loss mask all ones: C × MSE, exactly Custom Diffusion's valid-region loss without
    its zoom augmentation (the same ×C balance with the prior loss as the official code).
    ``masked_loss`` (MDL ablation): plain noising, masked loss. ``mgdp``: composition and masked loss.
    """
    if mode == MgdpMode.MGDP:
        return compose_noisy_latents(noisy_latents, latents, mask), mask
    if mode == MgdpMode.MASKED_LOSS:
        return noisy_latents, mask
    return noisy_latents, torch.ones_like(mask)
