"""Every recipe decision of docs/method.md, checked inside the real training step (``EqDiffRecipe.training_step``
/ ``optimization_step`` on the tiny preset): each test recomputes what the step must feed the UNet or return from
the batch and the training data alone, so reverting a decision (another row's ε, clipping without the frequency
vectors, the placeholder in the reference text, the official loss accumulation, ...) fails here.

The UNet is never mocked: ``record_unet_calls`` wraps the recipe's real ``Denoiser`` and keeps a copy of each
call's inputs and output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support.data import fast_params

from eqdiff.config import AugmentConfig, MethodConfig
from eqdiff.method import mgdp, rra
from eqdiff.method.fdte import FrequencyBand, encode_prompt
from eqdiff.method.prompts import tokenize
from eqdiff.models.components import load_components
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.data import BAND_KEYS, prepare_training_data, sample_batch
from eqdiff.training.recipe import EqDiffRecipe

WEIGHTS = {"prior_loss_weight": 0.7, "reference_attention": 0.3, "cross_attention": 0.2}
"""Non-default loss weights, so that a weight dropped or applied twice shows."""


def make_recipe(subject_dir, tmp_path, variant="F", **sections):
    params = fast_params(train={"variant": variant, "with_prior_preservation": True})
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    config = MethodConfig.from_dict(params).resolved()
    components = load_components(config.model)
    subject = discover_subject(subject_dir, "toy")
    class_paths = sorted(subject_dir.glob("*.png"))[:2]
    data = prepare_training_data(
        components.vae, subject, config, AugmentConfig(views_per_photo=2), class_paths, masks_dir=subject_dir / "masks"
    )
    recipe = EqDiffRecipe(config, components, data, "toy", "toy", tmp_path / "work", progress=False)
    recipe.setup()
    return recipe


def record_unet_calls(recipe) -> list[dict]:
    """Wrap the recipe's real denoiser; every call appends its bank mode, inputs and output (copies)."""
    calls, real = [], recipe.denoiser

    def spy(sample, timestep, text, *args, **kwargs):
        mode = recipe.bank.mode
        out = real(sample, timestep, text, *args, **kwargs)
        calls.append(
            {"mode": mode, "sample": sample.detach().clone(), "t": timestep.detach().clone(), "text": text.detach()}
            | {"pred": out.sample.detach().clone()}
        )
        return out

    recipe.denoiser = spy
    return calls


def posterior_sample(posteriors: dict, rows_bands, indices, noise, scale) -> torch.Tensor:
    """Row i: (mean + σ·noise) × scale of image ``indices[i]``'s posterior of band ``rows_bands[i]``."""
    rows = []
    for k, (band, index) in enumerate(zip(rows_bands.tolist(), indices.tolist(), strict=True)):
        name = BAND_KEYS[FrequencyBand(band)]
        mean, logvar = posteriors[f"{name}_mean"][index], posteriors[f"{name}_logvar"][index]
        rows.append((mean + torch.exp(0.5 * logvar) * noise[k]) * scale)
    return torch.stack(rows)


def expected_main_inputs(recipe, batch):
    """What the main pass must receive: each row's band latents noised with its ε at its t, and MGDP on the
    instance rows with the mask dilated by the radius scaled to the latent grid."""
    data, config = recipe.data, recipe.config
    scale = recipe.components.vae.config.scaling_factor
    num_prior = len(batch.classes)
    latents = torch.cat(
        [
            posterior_sample(data.class_posteriors, batch.bands[:num_prior], batch.classes, batch.latent_noise, scale),
            posterior_sample(
                data.target_posteriors, batch.bands[num_prior:], batch.targets, batch.latent_noise[num_prior:], scale
            ),
        ]
    )
    noisy = recipe.components.noise_scheduler.add_noise(latents, batch.noise, batch.timesteps)
    side = latents.shape[-1]
    radius = mgdp.scaled_radius(config.mgdp.dilate_radius, side)
    mask = mgdp.dilate(mgdp.latent_mask(data.target_masks[batch.targets], (side, side)), radius)
    if config.mgdp.mode == "mgdp":
        noisy[num_prior:] = mask * noisy[num_prior:] + (1 - mask) * latents[num_prior:]
    loss_mask = mask if config.mgdp.mode != "off" else torch.ones_like(mask)
    return noisy, loss_mask


def clip_states(recipe, prompt: str) -> torch.Tensor:
    parts = recipe.components
    with torch.no_grad():
        return parts.text_encoder(tokenize(parts.tokenizer, [prompt]))[0][0]


def expected_main_text(recipe, batch) -> torch.Tensor:
    """Prior rows: CLIP("toy"). Instance rows: "photo of a <new1> toy" (no prefix) with the row's vector — S_LF,
    S_HF, S_LF + S_HF by band, or the single S without FDTE — at the placeholder token."""
    parts, num_prior = recipe.components, len(batch.classes)
    table = recipe.embeddings.frequency_embeddings.detach()
    vectors = []
    for band in batch.bands[num_prior:].tolist():
        if table.shape[0] == 1:
            vectors.append(table[0])
        else:
            vectors.append({FrequencyBand.LOW: table[0], FrequencyBand.HIGH: table[1]}.get(band, table[0] + table[1]))
    ids = tokenize(parts.tokenizer, ["photo of a <new1> toy"] * len(vectors))
    with torch.no_grad():
        instance = encode_prompt(parts.text_encoder, ids, recipe.placeholder_id, torch.stack(vectors))
    prior = clip_states(recipe, "toy").expand(num_prior, -1, -1)
    return torch.cat([prior, instance])


def run_step(recipe, step: int):
    batch = sample_batch(recipe.data, recipe.config, step, 1000)
    calls = record_unet_calls(recipe)
    with torch.no_grad():
        losses = recipe.training_step(batch)
    return batch, calls, losses


def step_with_band_images_in_prior_and_instance_rows(recipe) -> int:
    for step in range(500):
        batch = sample_batch(recipe.data, recipe.config, step, 1000)
        is_band = batch.bands != FrequencyBand.FULL
        if is_band[: len(batch.classes)].any() and is_band[len(batch.classes) :].any():
            return step
    raise AssertionError("no step in 500 drew a band image in both a prior and an instance row")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Variant F with prior preservation and non-default loss weights, S_LF ≠ S_HF (both start as the initializer
    row), and a step in which a prior row and an instance row draw a band image."""
    from eqdiff.prep.sample import make_sample_subject

    root = tmp_path_factory.mktemp("decisions")
    subject = make_sample_subject(root / "toy", num_photos=3)
    recipe = make_recipe(subject, root, losses=WEIGHTS)
    with torch.no_grad():
        vectors = recipe.embeddings.frequency_embeddings
        vectors.add_(0.5 * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0)))
    step = step_with_band_images_in_prior_and_instance_rows(recipe)
    batch, calls, losses = run_step(recipe, step)
    yield recipe, batch, calls, losses
    recipe.bank.clear()


# ----------------------------------------------------------------------------------------------------------
# What the UNet receives.


def test_each_row_and_its_reference_share_epsilon_at_t_minus_2(full):
    recipe, batch, calls, _ = full
    assert [c["mode"] for c in calls] == [rra.BankMode.WRITE, rra.BankMode.READ]
    data, num_prior = recipe.data, len(batch.classes)
    scale = recipe.components.vae.config.scaling_factor
    full_band = torch.full((len(batch.bands),), int(FrequencyBand.FULL))  # references are never band-filtered
    reference = torch.cat(
        [
            posterior_sample(
                {"full_mean": data.class_reference_mean, "full_logvar": data.class_reference_logvar},
                full_band[:num_prior],
                batch.classes,
                batch.reference_latent_noise,
                scale,
            ),
            posterior_sample(
                {"full_mean": data.reference_mean, "full_logvar": data.reference_logvar},
                full_band[num_prior:],
                batch.references,
                batch.reference_latent_noise[num_prior:],
                scale,
            ),
        ]
    )
    reference_t = (batch.timesteps - 2).clamp_min(0)
    expected = recipe.components.noise_scheduler.add_noise(reference, batch.noise, reference_t)
    assert torch.equal(calls[0]["t"], reference_t)
    torch.testing.assert_close(calls[0]["sample"], expected, rtol=0, atol=1e-6)


def test_reference_text_is_the_instance_prompt_without_the_placeholder(full):
    recipe, batch, calls, _ = full
    num_prior = len(batch.classes)
    text = calls[0]["text"]
    for row in range(num_prior):
        torch.testing.assert_close(text[row], clip_states(recipe, "toy"), rtol=0, atol=1e-6)
    for row in range(num_prior, len(text)):
        torch.testing.assert_close(text[row], clip_states(recipe, "photo of a toy"), rtol=0, atol=1e-6)


def test_band_latents_per_row_prior_rows_included_and_mgdp_on_the_instance_rows(full):
    recipe, batch, calls, _ = full
    assert (batch.bands[: len(batch.classes)] != FrequencyBand.FULL).any()  # the fixture picked such a step
    expected, _ = expected_main_inputs(recipe, batch)
    assert torch.equal(calls[1]["t"], batch.timesteps)
    torch.testing.assert_close(calls[1]["sample"], expected, rtol=0, atol=1e-6)


def test_main_text_injects_the_rows_band_vector_into_the_unprefixed_instance_prompt(full):
    recipe, batch, calls, _ = full
    torch.testing.assert_close(calls[1]["text"], expected_main_text(recipe, batch), rtol=0, atol=1e-6)


def test_dilation_radius_is_given_at_512_px_and_scaled_with_the_latent_side():
    assert [mgdp.scaled_radius(10, side) for side in (64, 32, 16, 8, 128)] == [10, 5, 2, 1, 20]
    assert mgdp.scaled_radius(0, 32) == 0
    # The demo (64 px on the tiny preset's 32-latent grid): a centred 8×8 subject dilates to 18×18, not 28×28.
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 12:20, 12:20] = 1
    assert mgdp.dilate(mask, mgdp.scaled_radius(10, 32)).mean() == pytest.approx(18 * 18 / 32**2)


# ----------------------------------------------------------------------------------------------------------
# What the step returns.


def per_row_reference_attention(bank, rows: slice, target_masks, reference_masks) -> torch.Tensor:
    """Official L_ra per instance row (docs/official-code.md §4.5): mean_p (M^g·S − M^g)², S(p) = Σ_j A(p, j) M^r(j)."""
    maps = torch.stack([m[rows] for m in bank.reference_maps.values()]).mean(dim=(0, 2))
    side = math.isqrt(maps.shape[1])
    m_g = F.interpolate(target_masks, size=(side, side), mode="nearest").flatten(1)
    m_r = F.interpolate(reference_masks, size=(side, side), mode="nearest").flatten(1)
    s = (maps * m_r[:, None, :]).sum(-1)
    return ((m_g * s - m_g) ** 2).mean(dim=1)


def per_row_cross_attention(bank, rows: slice, position: int, target_masks) -> torch.Tensor:
    """L_ca per instance row (docs/official-code.md §4.6): mean (M^g − a)², a = the placeholder's map over its
    maximum."""
    maps = torch.stack([m[rows] for m in bank.cross_maps.values()]).mean(dim=(0, 2))
    side = math.isqrt(maps.shape[1])
    a = maps[..., position]
    a = a / a.amax(dim=1, keepdim=True)
    m_g = F.interpolate(target_masks, size=(side, side), mode="nearest").flatten(1)
    return ((m_g - a) ** 2).mean(dim=1)


def test_loss_components_their_weights_and_the_mean_over_instance_rows(full):
    recipe, batch, calls, losses = full
    bank, data, num_prior = recipe.bank, recipe.data, len(batch.classes)
    inst = slice(num_prior, None)
    pred, noise = calls[1]["pred"], batch.noise
    _, loss_mask = expected_main_inputs(recipe, batch)
    # Instance loss: Σ_{c,h,w} M·e / Σ_{h,w} M per row (= C × the masked mean), then the row mean.
    error = (pred[inst] - noise[inst]) ** 2
    instance = ((error * loss_mask).sum(dim=(1, 2, 3)) / loss_mask.sum(dim=(1, 2, 3))).mean()
    prior = ((pred[:num_prior] - noise[:num_prior]) ** 2).mean()
    # The maps: L_ra on the three up_blocks.1 RRA layers, L_ca on down_blocks.2 + up_blocks.1 (official).
    assert sorted(bank.reference_maps) == [
        f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn1.processor" for i in range(3)
    ]
    assert len(bank.cross_maps) == 5 and all(n.startswith(("down_blocks.2.", "up_blocks.1.")) for n in bank.cross_maps)
    masks = data.target_masks[batch.targets]
    reference = per_row_reference_attention(bank, inst, masks, data.reference_masks[batch.references]).mean()
    position = int(
        (tokenize(recipe.components.tokenizer, ["photo of a <new1> toy"])[0] == recipe.placeholder_id).nonzero()
    )
    assert position == 4
    cross = per_row_cross_attention(bank, inst, position, masks).mean()
    expected = {"instance": instance, "prior": prior, "reference_attention": reference, "cross_attention": cross}
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-7, msg=name)
    total = instance + 0.7 * prior + 0.3 * reference + 0.2 * cross
    torch.testing.assert_close(losses["total"], total, rtol=1e-6, atol=0)


@pytest.mark.parametrize("variant", ["A", "E", "A_MGDP"])
def test_ablation_variants_feed_the_step_what_their_row_says(variant, subject_dir, tmp_path):
    # A: no RRA pass, one learned vector S in every instance row, plain noising, all-ones loss mask (C × MSE).
    # E: composition off but the masked loss kept (the MDL ablation).
    # A_MGDP: A's single pass and single vector, with MGDP's composed input and masked loss.
    recipe = make_recipe(subject_dir, tmp_path, variant)
    batch, calls, losses = run_step(recipe, 0)
    assert [c["mode"] for c in calls] == (
        [rra.BankMode.OFF] if variant.startswith("A") else [rra.BankMode.WRITE, rra.BankMode.READ]
    )
    main = calls[-1]
    expected, loss_mask = expected_main_inputs(recipe, batch)
    torch.testing.assert_close(main["sample"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(main["text"], expected_main_text(recipe, batch), rtol=0, atol=1e-6)
    inst = slice(len(batch.classes), None)
    error = (main["pred"][inst] - batch.noise[inst]) ** 2
    instance = ((error * loss_mask).sum(dim=(1, 2, 3)) / loss_mask.sum(dim=(1, 2, 3))).mean()
    torch.testing.assert_close(losses["instance"], instance, rtol=1e-5, atol=1e-7)
    if variant.startswith("A"):
        assert recipe.embeddings.frequency_embeddings.shape[0] == 1
        assert float(losses["reference_attention"]) == 0 and float(losses["cross_attention"]) == 0
    if variant == "A_MGDP":  # the mask reaches the loss and (the sample matched above) composes the input
        assert bool((loss_mask < 1).any()) and recipe.config.mgdp.mode == "mgdp"
    elif variant == "E":
        assert bool((loss_mask < 1).any())  # the loss is masked ...
        plain = recipe.components.noise_scheduler.add_noise  # ... and the input is not composed
        assert not torch.equal(main["sample"][inst], plain(expected[inst], batch.noise[inst], batch.timesteps[inst]))


# ----------------------------------------------------------------------------------------------------------
# The optimisation step.


def test_clipping_scales_every_trainable_tensor_frequency_vectors_included(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, train={"max_grad_norm": 1e-3})
    batch = sample_batch(recipe.data, recipe.config, 0, 1000)
    recipe.training_step(batch)["total"].backward()
    raw = {n: p.grad.clone() for n, p in recipe.parameters.items() if p.grad is not None}
    recipe.bank.clear()
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw.values()]))
    assert total > 1e-2  # so clipping to 1e-3 really acts
    assert float(torch.linalg.vector_norm(raw["frequency_embeddings"])) > 1e-3
    recipe.optimization_step()  # step 0 again: the same batch
    factor = 1e-3 / (total + 1e-6)  # torch's clip_grad_norm_ coefficient
    for name, grad in raw.items():
        torch.testing.assert_close(recipe.parameters[name].grad, grad * factor, rtol=1e-4, atol=1e-12, msg=name)


def test_gates_open_is_counted_and_logged(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, train={"steps": 2, "log_every": 1})
    gates = [p for p in recipe.components.unet.attn_processors.values() if isinstance(p, rra.RRAAttnProcessor)]
    assert len(gates) == 10
    seen = []
    recipe.callback = lambda step, values: seen.append(values)
    with torch.no_grad():  # close one layer's gate: a pre-activation of -100 everywhere
        dim = gates[0].to_k_res.weight.shape[0]
        gates[0].to_out_res.weight[dim].zero_()
        gates[0].to_out_res.bias[dim] = -100.0
    recipe.train()
    # At init every other pre-activation is exactly 0 (zero H_r): M^f = 0 there, but the gate is open (gradient).
    assert seen[0]["rra/gates_open"] == 9
    assert 0 <= seen[1]["rra/gates_open"] <= 9
    variant_a = make_recipe(subject_dir, tmp_path / "a", "A", train={"steps": 1})
    variant_a.callback = lambda step, values: seen.append(values)
    variant_a.train()
    assert "rra/gates_open" not in seen[-1]  # no RRA, no gates
