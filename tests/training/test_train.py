"""The training recipe: trainable sets, the reference pass's gradients, exact resume, batch layout (docs/method.md,
Losses and optimisation)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support.builders import make_recipe
from support.data import fast_params

from eqdiff.config import VARIANTS, MethodConfig
from eqdiff.errors import TrainingError
from eqdiff.models.concept import load_concept
from eqdiff.training.data import sample_batch
from eqdiff.training.recipe import noisy_reference


def expected_trainable(variant: str) -> tuple[int, int, int]:
    """(frequency vectors, Custom Diffusion K/V tensors, RRA tensors) of docs/method.md, Losses and optimisation for a
    variant."""
    resolved = MethodConfig.from_dict({"train": {"variant": variant}}).resolved()
    return (2 if resolved.fdte.enabled else 1), 32, (40 if resolved.rra.enabled else 0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_requires_grad_is_exactly_the_trainable_set(variant, subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, variant)
    parts = recipe.components
    trainable = {n for n, p in parts.unet.named_parameters() if p.requires_grad}
    assert all(n.endswith(("_custom_diffusion.weight", "_res.weight", "_res.bias")) for n in trainable)
    assert not any(p.requires_grad for p in parts.text_encoder.parameters())
    assert not any(p.requires_grad for p in parts.vae.parameters())
    vectors, kv, rra = expected_trainable(variant)
    assert recipe.embeddings.frequency_embeddings.requires_grad
    assert recipe.embeddings.frequency_embeddings.shape[0] == vectors
    assert sum("_custom_diffusion" in n for n in trainable) == kv
    assert sum("_res" in n for n in trainable) == rra
    assert not any(n.startswith("down_blocks") and "_res" in n for n in trainable)
    # One AdamW group, constant lr, over exactly these tensors (docs/official-code.md §8.13 with the lr of
    # docs/method.md, Losses and optimisation).
    group = recipe.optimizer.param_groups
    assert len(group) == 1 and group[0]["lr"] == 4e-5 and len(group[0]["params"]) == len(trainable) + 1


def test_reference_pass_under_no_grad_gives_identical_gradients(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, prior=True)
    with torch.no_grad():  # make the reference features matter for the gradients
        for name, param in recipe.parameters.items():
            if "to_out_res" in name:
                param.normal_(0, 0.05)
    batch = sample_batch(recipe.data, recipe.config, 0, 1000)
    grads = []
    for no_grad in (True, False):
        recipe.optimizer.zero_grad(set_to_none=True)
        recipe.training_step(batch, reference_no_grad=no_grad)["total"].backward()
        grads.append({n: p.grad.clone() for n, p in recipe.parameters.items()})
        recipe.bank.clear()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
    assert any(g.abs().sum() > 0 for n, g in grads[0].items() if "to_k_res" in n)


def test_batch_layout_prior_first_and_references_from_other_photos(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, prior=True)
    for step in range(20):
        batch = sample_batch(recipe.data, recipe.config, step, 1000)
        assert len(batch.classes) == 2 and len(batch.targets) == 2 and batch.bands.shape == (4,)
        owners = recipe.data.reference_owner[batch.references]
        assert bool((owners != batch.targets).all())
    again = sample_batch(recipe.data, recipe.config, 7, 1000)
    assert torch.equal(again.noise, sample_batch(recipe.data, recipe.config, 7, 1000).noise)


def test_reference_is_noised_with_the_same_epsilon_two_steps_earlier(tiny_components):
    # docs/official-code.md §8.9: t_ref = max(t − 2, 0); the reference and the target share ε.
    scheduler = tiny_components.noise_scheduler
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([0, 1, 500])
    noisy, ref_t = noisy_reference(scheduler, latents, noise, timesteps, 2)
    assert ref_t.tolist() == [0, 0, 498]
    assert torch.equal(noisy, scheduler.add_noise(latents, noise, torch.tensor([0, 0, 498])))


def test_non_finite_loss_stops_with_a_clear_error(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, steps=2, checkpointing_steps=1)
    for key, value in recipe.data.target_posteriors.items():
        if key.endswith("_mean"):
            value.fill_(float("nan"))
    recipe._stack_band_posteriors()  # the per-step gather reads these stacks
    with pytest.raises(TrainingError, match="loss is nan at step 1"):
        recipe.train()
    assert not (tmp_path / "work" / "checkpoints").exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from eqdiff.stages.train import run as train_concept
    from support.data import fast_params
    params = fast_params(train={"steps": 5, "checkpointing_steps": 2, "with_prior_preservation": False})

    def die(step, values):
        if step == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

    train_concept(Path(sys.argv[1]), "toy", Path(sys.argv[2]), params, callback=die)
    """
)


@pytest.mark.slow
def test_killed_and_resumed_training_is_bitwise_identical(subject_dir, tmp_path):
    from eqdiff.stages.train import run as train_concept

    params = fast_params(train={"steps": 5, "checkpointing_steps": 2, "with_prior_preservation": False})
    straight = train_concept(subject_dir, "toy", tmp_path / "straight", params)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, str(script), str(subject_dir), str(tmp_path / "killed"), "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (tmp_path / "killed").exists()  # no half-written concept
    assert (tmp_path / "killed-work" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train_concept(subject_dir, "toy", tmp_path / "killed", params)
    a, b = load_concept(straight), load_concept(resumed)
    assert a.weights.keys() == b.weights.keys()
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name
    assert any(not torch.equal(a.weights[n], w) for n, w in make_initial(subject_dir, tmp_path).items())


def make_initial(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path / "init")
    return {n: p.detach() for n, p in recipe.parameters.items()}


def test_gradient_checkpointing_gives_the_same_gradients(subject_dir, tmp_path):
    grads = []
    for checkpointing in (False, True):
        recipe = make_recipe(subject_dir, tmp_path / str(checkpointing), gradient_checkpointing=checkpointing)
        batch = sample_batch(recipe.data, recipe.config, 0, 1000)
        recipe.training_step(batch)["total"].backward()
        grads.append({n: p.grad for n, p in recipe.parameters.items()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_validation_images_and_loss_callback(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, steps=2, validation_steps=2, log_every=1)
    seen = []
    recipe.callback = lambda step, values: seen.append((step, sorted(values)))
    recipe.train()
    keys = ["loss/cross_attention", "loss/instance", "loss/prior", "loss/reference_attention", "loss/total"]
    keys.append("rra/gates_open")
    assert seen == [(1, keys), (2, keys)]
    assert (tmp_path / "work" / "validation" / "step-000002.png").is_file()


def test_resume_ignores_scheduling_fields_but_not_the_method(subject_dir, tmp_path):
    base = make_recipe(subject_dir, tmp_path / "a", steps=3, checkpointing_steps=1)
    longer = make_recipe(subject_dir, tmp_path / "b", steps=9, checkpointing_steps=4, log_every=3)
    other = make_recipe(subject_dir, tmp_path / "c", learning_rate=1e-4)
    assert base.run_key == longer.run_key != other.run_key


def test_prior_rows_without_bands_only_encode_the_full_image(subject_dir, tmp_path):
    recipe = make_recipe(subject_dir, tmp_path, variant="C", prior=True)  # variant C: FDTE off
    posteriors = recipe.data.class_posteriors
    assert torch.equal(posteriors["low_mean"], posteriors["full_mean"])
    assert recipe.optimization_step()["total"].isfinite()


def test_lowering_steps_resumes_from_the_last_checkpoint_at_or_below_them(subject_dir, tmp_path, caplog):
    """A 6-step run leaves checkpoints 2 and 4; asked for 3 steps, training resumes from 2, never from 4."""
    import json
    import logging

    from eqdiff.stages.train import run as train_concept

    def params(steps: int) -> dict:
        return fast_params(train={"steps": steps, "checkpointing_steps": 2, "with_prior_preservation": False})

    out = tmp_path / "concept"
    train_concept(subject_dir, "toy", out, params(6))
    assert sorted(p.name for p in (tmp_path / "concept-work" / "checkpoints").iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    with caplog.at_level(logging.INFO, logger="eqdiff"):
        train_concept(subject_dir, "toy", out, params(3))
    assert "checkpoint-2 (step 2 of 3)" in caplog.text and "checkpoint-4" not in caplog.text
    manifest = json.loads((out / "concept.json").read_text())
    assert manifest["steps"] == manifest["config"]["train"]["steps"] == 3
    records = [json.loads(line) for line in (tmp_path / "concept-work" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    straight = load_concept(train_concept(subject_dir, "toy", tmp_path / "straight", params(3)))
    for name, weight in load_concept(out).weights.items():
        assert torch.equal(weight, straight.weights[name]), name


def test_checkpoint_rotation_keeps_the_one_just_written(tmp_path):
    """After lowering train.steps, the new low checkpoints must not be rotated out by an older run's later ones."""
    from eqdiff.training.checkpoints import latest_checkpoint, list_checkpoints, save_checkpoint

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    for step in (9, 10, 1, 2):
        save_checkpoint(tmp_path, step, "key", {"w": weight}, optimizer, total_limit=2)
    assert list_checkpoints(tmp_path) == [2, 10]
    assert latest_checkpoint(tmp_path, "key", max_step=4) == tmp_path / "checkpoint-2"
    assert latest_checkpoint(tmp_path, "key", max_step=10) == tmp_path / "checkpoint-10"
