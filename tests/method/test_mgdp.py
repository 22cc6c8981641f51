"""MGDP invariants: dilation, composition, masked loss (docs/method.md, MGDP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eqdiff.config import MgdpMode
from eqdiff.method import mgdp


def official_dilate(mask: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    # official eqdiff/tools.py `dilate`: reflect-pad 2 + 5×5 max-pool, repeated (docs/official-code.md §3).
    for _ in range(iterations):
        mask = F.max_pool2d(F.pad(mask, (2, 2, 2, 2), mode="reflect"), kernel_size=5, stride=1)
    return mask


def test_radius_10_dilation_equals_five_official_iterations():
    # docs/official-code.md §8.5: exact equality with one 21×21 max filter clipped at the borders.
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        mask = (torch.rand(2, 1, 64, 64, generator=generator) > 0.995).float()
        assert torch.equal(mgdp.dilate(mask, 10), official_dilate(mask))


def test_masked_loss_with_full_mask_is_channels_times_mse():
    # docs/official-code.md §8.6: with m ≡ 1 the instance loss is 4 × MSE, not 1×.
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    ones = torch.ones(3, 1, 8, 8)
    assert torch.allclose(mgdp.masked_loss(pred, target, ones), 4 * F.mse_loss(pred, target))


def test_masked_loss_ignores_the_background():
    pred, target = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    changed = pred.clone()
    changed[..., 4:, :] += 100
    assert torch.equal(mgdp.masked_loss(pred, target, mask), mgdp.masked_loss(changed, target, mask))


def test_composition_keeps_a_clean_background():
    noisy, clean = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    composed, loss_mask = mgdp.instance_inputs(MgdpMode.MGDP, noisy, clean, mask)
    assert torch.equal(composed[..., 0, 0], clean[..., 0, 0]) and torch.equal(composed[..., 3, 3], noisy[..., 3, 3])
    assert torch.equal(loss_mask, mask)
    plain, mdl_mask = mgdp.instance_inputs(MgdpMode.MASKED_LOSS, noisy, clean, mask)
    assert torch.equal(plain, noisy) and torch.equal(mdl_mask, mask)
    off, off_mask = mgdp.instance_inputs(MgdpMode.OFF, noisy, clean, mask)
    assert torch.equal(off, noisy) and bool((off_mask == 1).all())


def test_latent_mask_binarises_then_resizes_nearest():
    soft = torch.full((1, 1, 16, 16), 0.4)
    soft[..., :8, :] = 0.6
    latent = mgdp.latent_mask(soft, (4, 4))
    assert latent.unique().tolist() == [0.0, 1.0] and latent[..., :2, :].eq(1).all()
