"""Each exact fast path (docs/devices.md) against its plain path on the tiny preset (GPU-only checks are marked
``gpu``)."""

from __future__ import annotations

import pytest
import torch
from support.builders import make_recipe
from torch._dynamo.utils import counters

from eqdiff.method.fdte import encode_posterior
from eqdiff.models.components import Denoiser


def test_cached_posterior_samples_equal_encoding_every_step(tiny_components):
    # Training samples z = μ + σ·ε from the cached (μ, log σ²) instead of running the VAE encoder each step.
    vae = tiny_components.vae
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, logvar = encode_posterior(vae, images)
    with torch.no_grad():
        dist = vae.encode(images).latent_dist
    assert torch.equal(mean, dist.mean) and torch.equal(logvar, dist.logvar)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    direct = dist.sample(generator=torch.Generator().manual_seed(1))
    assert torch.allclose(mean + torch.exp(0.5 * logvar) * eps, direct, atol=1e-6)


def test_sdpa_matches_the_explicit_attention_the_losses_record():
    # SDPA everywhere; explicit probabilities only on the 1/32 layers whose maps L_ra / L_ca read.
    from eqdiff.method.rra import _attend

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, 256, 40, generator=generator) for _ in range(3))
    fast, no_maps = _attend(q, k, v, explicit=False)
    explicit, probs = _attend(q, k, v, explicit=True)
    assert no_maps is None and probs.shape == (2, 8, 256, 256)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 8, 256), atol=1e-5)
    assert torch.allclose(fast, explicit, atol=1e-5)


def test_fused_adamw_matches_the_per_tensor_update(subject_dir, tmp_path):

    weights = {}
    for fused in (True, False):
        recipe = make_recipe(subject_dir, tmp_path / str(fused), prior=True)
        assert recipe.optimizer.defaults["fused"]  # the shipped optimizer is the fused one, on CPU too
        initial = {name: value.detach().clone() for name, value in recipe.parameters.items()}
        if not fused:
            group = recipe.optimizer.param_groups[0]
            recipe.optimizer = torch.optim.AdamW(
                group["params"],
                lr=group["lr"],
                betas=group["betas"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
            )
        for _ in range(3):
            recipe.optimization_step()
        weights[fused] = {name: value.detach().clone() for name, value in recipe.parameters.items()}
    for name, value in weights[True].items():
        assert torch.allclose(value, weights[False][name], atol=1e-6), name
    assert all(not torch.equal(value, initial[name]) for name, value in weights[True].items())


def test_channels_last_unet_matches_the_default_layout(tiny_components):
    unet = tiny_components.unet
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([5, 500])
    with torch.no_grad():
        default = unet(latents, timesteps, states).sample
        unet.to(memory_format=torch.channels_last)
        channels_last = unet(latents.to(memory_format=torch.channels_last), timesteps, states).sample
    assert torch.allclose(default, channels_last, atol=1e-5)


@pytest.mark.slow
def test_compiled_training_step_matches_eager_without_graph_breaks(subject_dir, tmp_path):
    # aot_eager = dynamo capture + AOTAutograd, what inductor compiles, without the minutes of code generation.
    # A graph break (e.g. in a processor reading the bank) would silently cost most of compile's speed-up.

    torch._dynamo.reset()
    counters.clear()
    eager = make_recipe(subject_dir, tmp_path / "eager", prior=True)
    compiled = make_recipe(subject_dir, tmp_path / "compiled", prior=True)
    compiled.denoiser = Denoiser(compiled.components.unet, compile=True, backend="aot_eager")
    losses = [recipe.optimization_step() for recipe in (eager, compiled)]
    assert compiled.denoiser.compiled, "compilation failed and fell back to eager"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2  # the reference pass (WRITE) and the main pass (READ)
    for name in losses[0]:
        assert torch.equal(losses[0][name], losses[1][name]), name
    for name, value in eager.parameters.items():
        assert torch.equal(value, compiled.parameters[name]), name


@pytest.mark.gpu
def test_training_step_has_no_host_device_sync(subject_dir, tmp_path):

    recipe = make_recipe(subject_dir, tmp_path, prior=True, device="cuda")
    recipe.optimization_step()  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        recipe.optimization_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    "device, precision",
    [
        ("cpu", "bf16"),
        ("cpu", "fp16"),
        pytest.param("cuda", "bf16", marks=pytest.mark.gpu),
        pytest.param("cuda", "fp16", marks=pytest.mark.gpu),
    ],
)
def test_mixed_precision_step_tracks_fp32(subject_dir, tmp_path, device, precision):
    # The autocast path (half-precision UNet matmuls, fp32 trainable weights and losses; fp16 with a loss scaler).

    losses, updates = {}, {}
    for choice in ("no", precision):
        recipe = make_recipe(subject_dir, tmp_path / choice, prior=True, device=device, mixed_precision=choice)
        before = {name: value.detach().clone() for name, value in recipe.parameters.items()}
        losses[choice] = recipe.optimization_step()["total"].item()
        updates[choice] = torch.cat([(recipe.parameters[n].detach() - before[n]).flatten() for n in before])
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert recipe.amp_dtype == amp_dtype
    assert all(p.dtype == torch.float32 for p in recipe.parameters.values())
    frozen = [p for p in recipe.components.unet.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == amp_dtype for p in frozen)  # stored in the autocast dtype, as diffusers does
    recipe.validate()  # the validation images run the frozen UNet in that dtype too
    assert any((recipe.work_dir / "validation").glob("*.png"))
    assert abs(losses[precision] - losses["no"]) < 0.05 * abs(losses["no"])
    assert torch.isfinite(updates[precision]).all() and updates[precision].abs().max() > 0
    cosine = torch.nn.functional.cosine_similarity(updates[precision], updates["no"], dim=0)
    assert cosine > 0.9, f"the {precision} update points elsewhere than the fp32 one (cosine {cosine:.3f})"
