"""FDTE: frequency-aware decoupled textual embedding (paper §4.1, Eq. 3-5; docs/method.md, FDTE).

Three pieces:

* **Bands** — LOW/HIGH band images of a preprocessed target, computed in pixel space with ``torch.fft`` on any
  device: FFT over (H, W), centre-shift, multiply by a frequency mask, inverse shift, inverse FFT, then the
  modulus (official) or the real part (paper). The official filter is a *box*: a low-pass of half-width c keeps
  signed frequencies k in [-c, c-1] on both axes, the high-pass is the exact complement of the box of its own
  cutoff. Cutoffs are given at 512 px and scale with the image side.
* **Frequency embeddings** — two learned vectors S_LF, S_HF initialised to the initializer token's row;
  S_ori = S_LF + S_HF. Each training row draws LOW / HIGH / FULL with probabilities (p_l, p_h, p_o) and uses
  S_LF / S_HF / S_ori accordingly; inference always uses S_ori.
* **Injection** — the row's vector replaces the token embedding at the *true token positions* of the
  placeholder, before position embeddings, through the text encoder's public sub-modules (no patched classes).
"""

from __future__ import annotations

import enum

import torch
from torch import nn
from transformers import CLIPTextModel
from transformers.masking_utils import create_causal_mask

from eqdiff.config import BandColour, BandOutput, FdteConfig, FilterShape
from eqdiff.config.base import OFFICIAL_RESOLUTION


class FrequencyBand(enum.IntEnum):
    """Which image (and which learned vector) a training row uses."""

    LOW = 0
    HIGH = 1
    FULL = 2


# ----------------------------------------------------------------------------------------------------------
# Bands.


def scaled_cutoff(cutoff: float, side: int) -> float:
    """A cutoff given at 512 px, expressed in frequency indices of an image of ``side`` pixels."""
    return cutoff * side / OFFICIAL_RESOLUTION


def low_pass_mask(
    height: int, width: int, cutoff: float, shape: FilterShape, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Boolean (H, W) mask in centre-shifted frequency coordinates: True where the low-pass keeps a frequency.

    ``cutoff`` is in frequency indices at 512 px. Box: signed k_y in [-c_y, c_y - 1] and k_x in [-c_x, c_x - 1]
    with c rounded to an integer (official: rows/cols [256 - c, 256 + c) after ``fftshift``). Circle:
    (k_y / c_y)^2 + (k_x / c_x)^2 <= 1.
    """
    ky = torch.arange(height, device=device) - height // 2
    kx = torch.arange(width, device=device) - width // 2
    cy, cx = scaled_cutoff(cutoff, height), scaled_cutoff(cutoff, width)
    if shape == FilterShape.BOX:
        cy, cx = max(1, round(cy)), max(1, round(cx))
        return ((ky >= -cy) & (ky < cy))[:, None] & ((kx >= -cx) & (kx < cx))[None, :]
    return (ky[:, None] / cy) ** 2 + (kx[None, :] / cx) ** 2 <= 1.0


def band_spectra(images: torch.Tensor, config: FdteConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex LOW and HIGH band images, before the modulus/real part.

    Args:
        images: (B, 3, H, W) float in [-1, 1].
    Returns:
        (low, high), each (B, C, H, W) complex64, C = 1 for ``grey`` and 3 for ``rgb``. With equal cutoffs,
        low + high equals the (grey or colour) input.
    """
    x = images.float()
    if config.colour == BandColour.GREY:
        x = x.mean(dim=1, keepdim=True)
    height, width = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    keep_low = low_pass_mask(height, width, config.cutoff_low, config.shape, x.device)
    # The high-pass removes exactly the low-pass region of its own cutoff (paper: H = 1 - L).
    keep_high = ~low_pass_mask(height, width, config.cutoff_high, config.shape, x.device)

    def inverse(mask: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)))

    return inverse(keep_low), inverse(keep_high)


def band_images(images: torch.Tensor, config: FdteConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """LOW and HIGH band images as the VAE sees them.

    Args:
        images: (B, 3, H, W) float in [-1, 1].
    Returns:
        (low, high), each (B, 3, H, W) float32, same dtype/device as the input's float32. ``abs`` gives values
        >= 0 (official: LF in about [0, 1.07], HF in about [0, 1.5]); ``real`` values are signed. Grey bands
        have 3 identical channels. No clamping, as in the official code.
    """
    low, high = band_spectra(images, config)
    take = torch.abs if config.output == BandOutput.ABS else torch.real
    low, high = take(low).float(), take(high).float()
    if config.colour == BandColour.GREY:
        low, high = low.expand(-1, 3, -1, -1), high.expand(-1, 3, -1, -1)
    return low.contiguous(), high.contiguous()


def sample_bands(
    num_rows: int, config: FdteConfig, generator: torch.Generator, is_prior: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw LOW/HIGH/FULL independently per row with (p_l, p_h, p_o); (num_rows,) int64 on CPU.

    Prior rows (``is_prior`` True) draw too when ``apply_to_prior`` (official), else they are FULL. With FDTE
    disabled every row is FULL.
    """
    if not config.enabled:
        return torch.full((num_rows,), int(FrequencyBand.FULL), dtype=torch.long)
    probs = torch.tensor([config.p_l, config.p_h, config.p_o], dtype=torch.float64)
    bands = torch.multinomial(probs, num_rows, replacement=True, generator=generator)
    if is_prior is not None and not config.apply_to_prior:
        bands = torch.where(is_prior.cpu(), torch.full_like(bands, int(FrequencyBand.FULL)), bands)
    return bands


# ----------------------------------------------------------------------------------------------------------
# Learned frequency embeddings.


class FrequencyEmbeddings(nn.Module):
    """S_LF and S_HF (or, with FDTE off, one vector S), each initialised to the initializer token's row.

    The parameter is named ``frequency_embeddings``: row 0 = S_LF, row 1 = S_HF.
    """

    def __init__(self, initial: torch.Tensor, decoupled: bool = True):
        super().__init__()
        rows = 2 if decoupled else 1
        self.frequency_embeddings = nn.Parameter(initial.detach().float().clone().repeat(rows, 1))

    @property
    def decoupled(self) -> bool:
        return self.frequency_embeddings.shape[0] == 2

    @property
    def s_ori(self) -> torch.Tensor:
        """The vector injected at inference: S_LF + S_HF (or S)."""
        return self.frequency_embeddings.sum(dim=0)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        """(B,) FrequencyBand values -> (B, d) vectors: LOW -> S_LF, HIGH -> S_HF, FULL -> S_ori."""
        weights = self.frequency_embeddings
        if not self.decoupled:
            return weights.expand(bands.shape[0], -1)
        bands = bands.to(weights.device)
        s_lf, s_hf = weights[0], weights[1]
        table = torch.stack([s_lf, s_hf, s_lf + s_hf])  # indexed by FrequencyBand
        return table[bands]


# ----------------------------------------------------------------------------------------------------------
# Injection into the CLIP text encoder.


def encode_prompt(
    text_encoder: CLIPTextModel,
    input_ids: torch.Tensor,
    placeholder_id: int,
    vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP ``last_hidden_state`` with ``vectors`` injected at the placeholder's token positions.

    Mirrors ``CLIPTextModel.forward`` through its public sub-modules: token embeddings (with the injection),
    ``embeddings(inputs_embeds=...)`` for positions, the causal encoder, ``final_layer_norm``. Rows without the
    placeholder are untouched; with ``vectors=None`` the output equals the stock forward exactly.

    Args:
        input_ids: (B, L) int64 token ids.
        vectors: (B, d) vectors, one per row, or None.
    Returns:
        (B, L, d) encoder hidden states in the text encoder's dtype.
    """
    token_embeds = text_encoder.get_input_embeddings()(input_ids)
    if vectors is not None:
        at_placeholder = (input_ids == placeholder_id).unsqueeze(-1)
        token_embeds = torch.where(at_placeholder, vectors.to(token_embeds.dtype).unsqueeze(1), token_embeds)
    hidden = text_encoder.embeddings(inputs_embeds=token_embeds)
    causal = create_causal_mask(
        config=text_encoder.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None
    )
    encoded = text_encoder.encoder(inputs_embeds=hidden, attention_mask=causal, is_causal=True)
    return text_encoder.final_layer_norm(encoded.last_hidden_state)


# ----------------------------------------------------------------------------------------------------------
# VAE posterior parameters of the three images of each target (cached by the ``bands`` stage).


@torch.no_grad()
def encode_posterior(vae, images: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior parameters of (B, 3, H, W) images in [-1, 1]: (mean, logvar), each (B, 4, h, w) float32.

    Unscaled (multiply a sample by ``vae.config.scaling_factor`` to get SD latents). The posterior of a fixed
    image is deterministic, so it is computed once and sampled every step (docs/method.md, FDTE).
    """
    means, logvars = [], []
    for chunk in images.split(batch_size):
        dist = vae.encode(chunk.to(device=vae.device, dtype=vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        logvars.append(dist.logvar.float().cpu())
    return torch.cat(means), torch.cat(logvars)


def band_posteriors(vae, targets: torch.Tensor, config: FdteConfig) -> dict[str, torch.Tensor]:
    """Posterior (mean, logvar) of the FULL, LOW and HIGH image of each target.

    Args:
        targets: (N, 3, H, W) float in [-1, 1] (preprocessed training targets).
    Returns:
        ``{"full_mean", "full_logvar", "low_mean", "low_logvar", "high_mean", "high_logvar"}``, each
        (N, 4, h, w) float32 on CPU. LOW/HIGH images are fed to the VAE as they are (no clamping, official).
    """
    low, high = band_images(targets, config)
    out = {}
    for name, images in (("full", targets), ("low", low), ("high", high)):
        out[f"{name}_mean"], out[f"{name}_logvar"] = encode_posterior(vae, images)
    return out
