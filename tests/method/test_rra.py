"""RRA invariants on the tiny preset's real UNet (docs/method.md, RRA; docs/official-code.md §8.1-§8.3,
§8.9-§8.11)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from eqdiff.method import rra


def _inputs(batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 16, 16, generator=generator)
    states = torch.randn(batch, 77, 32, generator=generator)
    return latents, torch.tensor([10, 700][:batch]), states


def _write_reference(unet, bank, timesteps, states):
    bank.mode = rra.BankMode.WRITE
    with torch.no_grad():
        unet(torch.randn(len(timesteps), 4, 16, 16), timesteps, states)
    bank.mode = rra.BankMode.READ


def test_zero_initialised_rra_equals_stock_attention_bit_for_bit(tiny_components):
    unet = tiny_components.unet
    latents, timesteps, states = _inputs()
    stock = unet(latents, timesteps, states).sample
    bank = rra.ReferenceBank()
    rra.install_processors(unet, bank, rra=True)
    _write_reference(unet, bank, timesteps, states)
    assert len(bank.features) == 10  # mid + up self-attention only
    assert torch.equal(unet(latents, timesteps, states).sample, stock)


def test_rra_gradient_at_init_reaches_only_the_gate_row(tiny_components):
    # docs/official-code.md §8.2: only row d of H_r's weight and its bias entry get gradient; W_k^res, W_v^res
    # get zeros.
    unet = tiny_components.unet
    bank = rra.ReferenceBank()
    rra.install_processors(unet, bank, rra=True)
    latents, timesteps, states = _inputs()
    _write_reference(unet, bank, timesteps, states)
    unet(latents, timesteps, states).sample.pow(2).mean().backward()
    for processor in unet.attn_processors.values():
        if isinstance(processor, rra.RRAAttnProcessor):
            dim = processor.to_k_res.weight.shape[0]
            weight_grad, bias_grad = processor.to_out_res.weight.grad, processor.to_out_res.bias.grad
            assert weight_grad[:dim].abs().max() == 0 and bias_grad[:dim].abs().max() == 0
            assert weight_grad[dim].abs().max() > 0
            assert processor.to_k_res.weight.grad.abs().max() == 0
            assert processor.to_v_res.weight.grad.abs().max() == 0


def test_without_reference_the_model_is_custom_diffusion(tiny_components):
    # docs/official-code.md §8.3: no reference features → SD + Custom Diffusion K/V (here equal to the copied base K/V).
    unet = tiny_components.unet
    latents, timesteps, states = _inputs()
    stock = unet(latents, timesteps, states).sample
    bank = rra.ReferenceBank(mode=rra.BankMode.OFF)
    rra.install_processors(unet, bank, rra=True)
    for processor in unet.attn_processors.values():
        if isinstance(processor, rra.RRAAttnProcessor):
            torch.nn.init.normal_(processor.to_out_res.weight)  # RRA weights must not matter without a reference
    assert torch.equal(unet(latents, timesteps, states).sample, stock)


def test_reading_an_unfilled_bank_raises(tiny_components):
    bank = rra.ReferenceBank(mode=rra.BankMode.READ)
    rra.install_processors(tiny_components.unet, bank, rra=True)
    latents, timesteps, states = _inputs()
    with pytest.raises(RuntimeError, match="run the reference pass first"):
        tiny_components.unet(latents, timesteps, states)


def test_reference_pass_uses_the_frozen_cross_attention(tiny_components):
    unet = tiny_components.unet
    latents, timesteps, states = _inputs()
    stock = unet(latents, timesteps, states).sample
    bank = rra.ReferenceBank(mode=rra.BankMode.WRITE)
    rra.install_processors(unet, bank, rra=True)
    for processor in unet.attn_processors.values():
        if isinstance(processor, rra.CustomDiffusionAttnProcessor):
            torch.nn.init.normal_(processor.to_k_custom_diffusion.weight)
    assert torch.equal(unet(latents, timesteps, states).sample, stock)


def test_attention_losses_are_bounded_and_normalised(tiny_components):
    # docs/official-code.md §8.10: S(p) ∈ [0, 1], L_ra ∈ [0, 1]; the L_ca map's max is exactly 1.
    unet = tiny_components.unet
    bank = rra.ReferenceBank()
    rra.install_processors(unet, bank, rra=True)
    latents, timesteps, states = _inputs()
    _write_reference(unet, bank, timesteps, states)
    bank.record_maps = True
    unet(latents, timesteps, states)
    assert len(bank.reference_maps) == 3 and len(bank.cross_maps) == 5  # up_blocks.1 ×3; down_blocks.2 ×2 + up ×3
    masks = (torch.rand(2, 1, 32, 32) > 0.5).float()
    l_ra = rra.reference_attention_loss(bank, slice(0, 2), masks, torch.ones_like(masks))
    assert 0.0 <= l_ra.item() <= 1.0
    assert rra.reference_attention_loss(bank, slice(0, 2), masks, torch.ones_like(masks)).item() < 1e-10
    l_ca = rra.cross_attention_loss(bank, slice(0, 2), torch.tensor([3, 4]), masks)
    assert 0.0 <= l_ca.item() <= 1.0
    ones = torch.ones(2, 1, 32, 32)
    maps = torch.stack(list(bank.cross_maps.values())).mean(dim=(0, 2))[..., 3]
    expected = ((1 - maps / maps.amax(dim=1, keepdim=True)) ** 2).mean()
    assert torch.allclose(rra.cross_attention_loss(bank, slice(0, 2), torch.tensor([3, 3]), ones), expected)


def test_only_processor_weights_are_trainable_names(tiny_components):
    bank = rra.ReferenceBank()
    rra.install_processors(tiny_components.unet, bank, rra=True)
    names = list(rra.trainable_state_dict(tiny_components.unet))
    assert sum(n.endswith("to_k_custom_diffusion.weight") for n in names) == 16
    assert sum(n.endswith("to_out_res.weight") for n in names) == 10
    assert not any(n.startswith("down_blocks") and "_res" in n for n in names)


def test_ddim_timesteps_match_official_inference(tiny_components):
    # docs/official-code.md §8.9: DDIM timesteps 981 → 1 in steps of 20 from SD v1's scheduler config.
    scheduler = DDIMScheduler.from_config(tiny_components.noise_scheduler.config)
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == list(range(981, 0, -20))


def test_gate_clamp_passes_gradient_at_the_boundary():
    # docs/official-code.md §8.2 relies on clamp's sub-gradient 1 at exactly 0 (torch 2.0); current torch gives 0 there.
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = rra.gate_clamp(x)
    y.sum().backward()
    assert torch.equal(y, x.detach().clamp(0, 1))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def _rra_layer(tiny_components, name="mid_block.attentions.0.transformer_blocks.0.attn1"):
    bank = rra.ReferenceBank()
    rra.install_processors(tiny_components.unet, bank, rra=True)
    attn = dict(tiny_components.unet.named_modules())[name]
    return attn, attn.processor, bank, f"{name}.processor"


def _eq_8_9(attn, processor, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Eq. 8-9 in float64, written out (docs/official-code.md §4.4): SA and RA share q; H_r([RA ; SA]);
    M^f = clamp(·, 0, 1)."""

    def linear(layer, value):
        bias = None if layer.bias is None else layer.bias.double()
        return F.linear(value, layer.weight.double(), bias)

    def attention(q, k, v):
        split = [t.view(t.shape[0], t.shape[1], attn.heads, -1).transpose(1, 2) for t in (q, k, v)]
        probs = (split[0] @ split[1].transpose(-1, -2) / math.sqrt(split[0].shape[-1])).softmax(-1)
        return (probs @ split[2]).transpose(1, 2).reshape(q.shape)

    x, reference = x.double(), reference.double()
    q = linear(attn.to_q, x)
    sa = attention(q, linear(attn.to_k, x), linear(attn.to_v, x))
    ra = attention(q, linear(processor.to_k_res, reference), linear(processor.to_v_res, reference))
    fused = linear(processor.to_out_res, torch.cat([ra, sa], dim=-1))
    dim = x.shape[-1]
    gate = fused[..., dim:].clamp(0, 1)
    return linear(attn.to_out[0], sa) * (1 - gate) + fused[..., :dim] * gate


def test_rra_layer_computes_eq_8_9_on_full_precision_reference_features(tiny_components):
    # The official code casts F^r to fp16 before W_k^res/W_v^res (docs/official-code.md §4.3); we keep the
    # compute dtype (fp32 here).
    attn, processor, bank, name = _rra_layer(tiny_components)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        processor.to_out_res.weight.normal_(0, 0.05, generator=generator)
        processor.to_out_res.bias[-1] = 0.5  # gates strictly inside (0, 1) for most tokens
    dim = attn.to_q.in_features
    x = torch.randn(2, 16, dim, generator=generator)
    reference = torch.randn(2, 16, dim, generator=generator) * 3
    bank.mode, bank.features[name] = rra.BankMode.READ, reference
    out = processor(attn, x)
    expected = _eq_8_9(attn, processor, x, reference)
    gate = F.linear(torch.zeros(1, 2 * dim), processor.to_out_res.weight, processor.to_out_res.bias)[0, -1]
    assert 0 < gate < 1
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)


def test_rra_self_attention_passes_the_stock_gradient_no_token_0_detach(tiny_components):
    # The official RRA path detaches spatial token 0's K/V (a Custom Diffusion leftover, gradient only); ours
    # does not: at init the gradient into the layer's input equals stock attention's.
    attn, processor, bank, name = _rra_layer(tiny_components)
    generator = torch.Generator().manual_seed(1)
    dim = attn.to_q.in_features
    x = torch.randn(2, 16, dim, generator=generator)
    weights = torch.randn(2, 16, dim, generator=generator)
    bank.mode, bank.features[name] = rra.BankMode.READ, torch.randn(2, 16, dim, generator=generator)
    grads = []
    for run in (processor, AttnProcessor2_0()):
        leaf = x.clone().requires_grad_(True)
        (run(attn, leaf) * weights).sum().backward()
        grads.append(leaf.grad)
    assert grads[0][:, 0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_cross_attention_detaches_the_bos_key_and_value_only(tiny_components):
    # Custom Diffusion (kept): no gradient through text token 0's key/value; the other tokens get gradient.
    bank = rra.ReferenceBank()
    rra.install_processors(tiny_components.unet, bank, rra=True)
    attn = dict(tiny_components.unet.named_modules())["mid_block.attentions.0.transformer_blocks.0.attn2"]
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, attn.to_q.in_features, generator=generator)
    text = torch.randn(1, 77, attn.to_k.in_features, generator=generator).requires_grad_(True)
    attn.processor(attn, x, encoder_hidden_states=text).pow(2).sum().backward()
    assert text.grad[:, 0].abs().max() == 0
    assert text.grad[:, 1:].abs().amax(dim=-1).min() > 0


def test_cross_attention_maps_of_two_grids_meet_on_the_finer_one():
    """L_ca's layers may sit at two resolutions (the world model: 4 x 4 and 8 x 8): the coarse maps are resized
    to the fine grid and stay distributions over the tokens; maps already on one grid are left as they are."""
    coarse = torch.rand(2, 3, 16, 77).softmax(dim=-1)
    fine = torch.rand(2, 3, 64, 77).softmax(dim=-1)
    resized, same = rra._on_finest_grid([coarse, fine])
    assert resized.shape == fine.shape and same is fine
    assert torch.allclose(resized.sum(dim=-1), torch.ones(2, 3, 64))
    # a coarse cell's distribution reaches the fine cells it covers (the top-left cell -> the top-left 2 x 2)
    assert torch.allclose(resized.view(2, 3, 8, 8, 77)[:, :, 0, 0], coarse.view(2, 3, 4, 4, 77)[:, :, 0, 0])
    assert rra._on_finest_grid([fine, fine])[0] is fine
