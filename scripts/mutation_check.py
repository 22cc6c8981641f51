"""Mutation check of docs/method.md ("Mutation check"): revert each recipe decision and see its test fail.

Every row of that table names a decision reverted in the code (a small text change) and the test that must fail
when it is. ``MUTATIONS`` below is that table as data: for each row its text, the file, an exact ``old`` snippet
and its ``new`` replacement, and the pytest node id(s) that must fail. One mutation at a time, the script writes
the change, runs the test(s) in a subprocess (``pytest -x -q -p no:cacheprovider``) and restores the file byte for
byte (``try``/``finally``, mtime included); at the end it checks that ``git diff --quiet`` holds for every file it
touched. ``old`` must occur exactly once in its file: when the code drifts, the script stops with an error naming
the mutation instead of testing something else.

A mutation "FAILS as required" when pytest reports a failed or erroring test (exit code 1); it "SURVIVED" when the
test(s) pass; "BROKEN" is any other outcome (a collection error, a timeout): the mutation must be rewritten.

Run it from the repository root, one test at a time (30-60 minutes for all on a 2-core machine)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py              # all mutations
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py --only 12    # mutation 12 (see --list)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutation_check.py -k "L_ra"    # rows whose text contains L_ra
    .venv/bin/python scripts/mutation_check.py --list                         # the table, nothing run
    .venv/bin/python scripts/mutation_check.py --check-docs                   # script and docs table agree?

``--baseline`` also runs each selected mutation's test(s) on the unchanged code first (they must pass). The exit
code is 1 if any mutation survived or broke, 2 if a file could not be restored.

The files must be clean in git before a run (the restore check compares against git). A subprocess gets
``PYTHONPATH`` = the repository root, so the checkout's own ``eqdiff`` is the one mutated and imported.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "method.md"

# Test modules, as the docs table abbreviates them (``decisions::``, ``inference::``, ``test_train.py::`` ...).
DECISIONS = "tests/training/test_recipe_decisions.py::"
INFERENCE = "tests/pipelines/test_inference_decisions.py::"
TRAIN = "tests/training/test_train.py::"
REGRESSION = "tests/training/test_regression.py::test_loss_components_and_image_corner_match_the_stored_values"
RRA = "tests/method/test_rra.py::"
FDTE = "tests/method/test_fdte.py::"
MGDP = "tests/method/test_mgdp.py::"
BANDS = "tests/prep/test_bands.py::"
AUGMENT = "tests/prep/test_augment.py::"
PRIOR = "tests/prep/test_prior.py::"
CONFIG = "tests/config/test_config.py::"

# The decisions tests most rows point at.
SHARED_EPSILON = DECISIONS + "test_each_row_and_its_reference_share_epsilon_at_t_minus_2"
MAIN_TEXT = DECISIONS + "test_main_text_injects_the_rows_band_vector_into_the_unprefixed_instance_prompt"
LOSSES = DECISIONS + "test_loss_components_their_weights_and_the_mean_over_instance_rows"
BAND_LATENTS = DECISIONS + "test_band_latents_per_row_prior_rows_included_and_mgdp_on_the_instance_rows"
REFERENCE_ROWS = INFERENCE + "test_reference_rows_default_to_the_training_reference_prompt_and_the_empty_prompt"

RECIPE = "eqdiff/training/recipe.py"
DATA = "eqdiff/training/data.py"
RRA_PY = "eqdiff/method/rra.py"
FDTE_PY = "eqdiff/method/fdte.py"
MGDP_PY = "eqdiff/method/mgdp.py"
PIPELINE = "eqdiff/pipelines/eqdiff_pipeline.py"
METHOD_CONFIG = "eqdiff/config/method.py"
STAGES_CONFIG = "eqdiff/config/stages.py"


@dataclass(frozen=True)
class Mutation:
    """One reverted decision: ``old`` (exactly once in ``file``) becomes ``new``; each of ``tests`` must fail."""

    row: str
    """The row's text in docs/method.md, "Mutation check" (the first cell)."""
    file: str
    """Path relative to the repository root."""
    old: str
    new: str
    tests: tuple[str, ...]
    """pytest node ids, relative to the repository root."""


def M(row: str, file: str, old: str, new: str, *tests: str) -> Mutation:  # noqa: N802 - reads like a table row
    return Mutation(row, file, old, new, tests)


MUTATIONS: tuple[Mutation, ...] = (
    # --- The training step: what the reference pass receives.
    M(
        "the reference noised with the next row's ε (`noise.roll(1, 0)`)",
        RECIPE,
        "self._reference_latents(batch), noise, timesteps, cfg.rra.time_gap",
        "self._reference_latents(batch), noise.roll(1, 0), timesteps, cfg.rra.time_gap",
        SHARED_EPSILON,
    ),
    M(
        "the reference noised with a fresh ε",
        RECIPE,
        "self._reference_latents(batch), noise, timesteps, cfg.rra.time_gap",
        "self._reference_latents(batch), torch.randn_like(noise), timesteps, cfg.rra.time_gap",
        SHARED_EPSILON,
    ),
    M(
        "t_ref = t (no time gap)",
        RECIPE,
        "self._reference_latents(batch), noise, timesteps, cfg.rra.time_gap",
        "self._reference_latents(batch), noise, timesteps, 0",
        SHARED_EPSILON,
    ),
    M(
        "clipping without the frequency vectors",
        RECIPE,
        "torch.nn.utils.clip_grad_norm_(list(self.parameters.values()), cfg.max_grad_norm)",
        "torch.nn.utils.clip_grad_norm_(\n"
        '                [p for n, p in self.parameters.items() if n != "frequency_embeddings"], cfg.max_grad_norm\n'
        "            )",
        DECISIONS + "test_clipping_scales_every_trainable_tensor_frequency_vectors_included",
    ),
    M(
        "reference text keeps the placeholder",
        RECIPE,
        "training_reference_prompt(cfg.train.instance_prompt, cfg.concept.placeholder, self.class_noun),",
        "instance,",
        DECISIONS + "test_reference_text_is_the_instance_prompt_without_the_placeholder",
    ),
    # --- The training step: what the main pass receives.
    M(
        '"a far away " prefix on the instance prompt',
        RECIPE,
        "instance = subject_prompt(",
        'instance = "a far away " + subject_prompt(',
        MAIN_TEXT,
    ),
    M(
        "S_LF and S_HF swapped",
        FDTE_PY,
        "table = torch.stack([s_lf, s_hf, s_lf + s_hf])",
        "table = torch.stack([s_hf, s_lf, s_lf + s_hf])",
        MAIN_TEXT,
    ),
    M(
        "rows ordered [instance…, prior…] in the text",
        RECIPE,
        "return torch.cat([prior, instance])",
        "return torch.cat([instance, prior])",
        MAIN_TEXT,
    ),
    # --- The losses the step returns.
    M(
        "prior weight dropped from the total",
        RECIPE,
        '+ cfg.losses.prior_loss_weight * losses["prior"]',
        '+ losses["prior"]',
        LOSSES,
    ),
    M(
        "official L_ra accumulation (0.525·L₀ + 0.5·L₁)",
        RRA_PY,
        "return ((m_g * s - m_g) ** 2).mean()",
        "per_row = ((m_g * s - m_g) ** 2).mean(dim=1)\n    return 0.525 * per_row[0] + 0.5 * per_row[1:].sum()",
        LOSSES,
    ),
    M(
        "official L_ca accumulation",
        RRA_PY,
        "return ((m_g - a) ** 2).mean()",
        "per_row = ((m_g - a) ** 2).mean(dim=1)\n    return 0.525 * per_row[0] + 0.5 * per_row[1:].sum()",
        LOSSES,
    ),
    M(
        "L_ca at the word index (position − 1)",
        RECIPE,
        "torch.full((len(batch.targets),), self.placeholder_position, device=self.device)",
        "torch.full((len(batch.targets),), self.placeholder_position - 1, device=self.device)",
        LOSSES,
    ),
    M(
        "paper-form L_ra (unsquared, no M^g on S)",
        RRA_PY,
        "return ((m_g * s - m_g) ** 2).mean()",
        "return torch.linalg.vector_norm(s - m_g, dim=1).mean()",
        LOSSES,
    ),
    M(
        "instance loss without the ×C factor",
        MGDP_PY,
        "per_row = (error * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1.0)",
        "per_row = (error * mask).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)).clamp_min(1.0) * error.shape[1])",
        LOSSES,
    ),
    # --- Bands and MGDP in the step.
    M(
        "prior rows always FULL in the step",
        RECIPE,
        "prior_bands, instance_bands = batch.bands[:num_prior], batch.bands[num_prior:]",
        "prior_bands, instance_bands = torch.full_like(batch.bands[:num_prior], 2), batch.bands[num_prior:]  # FULL",
        BAND_LATENTS,
    ),
    M(
        "`sample_bands` never draws for prior rows",
        FDTE_PY,
        "if is_prior is not None and not config.apply_to_prior:",
        "if is_prior is not None:",
        BAND_LATENTS,
    ),
    M(
        "MGDP composition off",
        MGDP_PY,
        "return compose_noisy_latents(noisy_latents, latents, mask), mask",
        "return noisy_latents, mask",
        BAND_LATENTS,
    ),
    M(
        "the step uses the unscaled dilation radius",
        RECIPE,
        "radius = mgdp.scaled_radius(cfg.mgdp.dilate_radius, latents.shape[-1])",
        "radius = cfg.mgdp.dilate_radius",
        BAND_LATENTS,
    ),
    M(
        "`scaled_radius` returns the radius unscaled",
        MGDP_PY,
        "return max(1, round(radius * latent_side / REFERENCE_LATENT_SIDE))",
        "return radius",
        DECISIONS + "test_dilation_radius_is_given_at_512_px_and_scaled_with_the_latent_side",
    ),
    M(
        "masks not binarised",
        MGDP_PY,
        "binary = (mask >= 0.5).to(mask.dtype)",
        "binary = mask",
        MGDP + "test_latent_mask_binarises_then_resizes_nearest",
    ),
    # --- Ablation variants and the trainable set.
    M(
        "variant E composes",
        MGDP_PY,
        "if mode == MgdpMode.MASKED_LOSS:\n        return noisy_latents, mask",
        "if mode == MgdpMode.MASKED_LOSS:\n        return compose_noisy_latents(noisy_latents, latents, mask), mask",
        DECISIONS + "test_ablation_variants_feed_the_step_what_their_row_says[E]",
    ),
    M(
        "variant A learns two vectors",
        RECIPE,
        "decoupled=cfg.fdte.enabled,",
        "decoupled=True,",
        DECISIONS + "test_ablation_variants_feed_the_step_what_their_row_says[A]",
    ),
    M(
        "the token table trainable",
        RECIPE,
        "self.parameters = trainable_parameters(parts.unet, self.embeddings)",
        "self.parameters = trainable_parameters(parts.unet, self.embeddings) | {\n"
        '            "token_table": parts.text_encoder.get_input_embeddings().weight\n'
        "        }",
        TRAIN + "test_requires_grad_is_exactly_the_trainable_set[A]",
    ),
    M(
        "RRA built on the down blocks",
        RRA_PY,
        'RRA_PREFIXES = ("mid_block.", "up_blocks.")',
        'RRA_PREFIXES = ("down_blocks.", "mid_block.", "up_blocks.")',
        TRAIN + "test_requires_grad_is_exactly_the_trainable_set[B]",
    ),
    M(
        "lr 1e-5 (unscaled)",
        METHOD_CONFIG,
        "learning_rate: float = 4e-5",
        "learning_rate: float = 1e-5",
        TRAIN + "test_requires_grad_is_exactly_the_trainable_set[A]",
    ),
    # --- RRA layers.
    M(
        "reference features rounded through fp16",
        RRA_PY,
        "reference = reference.to(weight_dtype)",
        "reference = reference.to(torch.float16).to(weight_dtype)",
        RRA + "test_rra_layer_computes_eq_8_9_on_full_precision_reference_features",
    ),
    M(
        "spatial token 0's K/V detached in RRA",
        RRA_PY,
        "key = _split_heads(attn.to_k(hidden_states), heads)\n"
        "        value = _split_heads(attn.to_v(hidden_states), heads)",
        "key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)\n"
        "        key = _split_heads(torch.cat([key[:, :1].detach(), key[:, 1:]], dim=1), heads)\n"
        "        value = _split_heads(torch.cat([value[:, :1].detach(), value[:, 1:]], dim=1), heads)",
        RRA + "test_rra_self_attention_passes_the_stock_gradient_no_token_0_detach",
    ),
    M(
        "BOS K/V not detached in cross-attention",
        RRA_PY,
        "return detach * key + (1 - detach) * key.detach(), detach * value + (1 - detach) * value.detach()",
        "return key, value",
        RRA + "test_cross_attention_detaches_the_bos_key_and_value_only",
    ),
    M(
        "stock clamp for the gate",
        RRA_PY,
        "gate_clamp(fused[..., dim:])",
        "fused[..., dim:].clamp(0, 1)",
        RRA + "test_rra_gradient_at_init_reaches_only_the_gate_row",
    ),
    M(
        "sigmoid gate",
        RRA_PY,
        "gate_clamp(fused[..., dim:])",
        "torch.sigmoid(fused[..., dim:])",
        RRA + "test_zero_initialised_rra_equals_stock_attention_bit_for_bit",
    ),
    M(
        "gates counted open only when > 0",
        RRA_PY,
        "(fused[..., dim:] >= 0).any().detach()",
        "(fused[..., dim:] > 0).any().detach()",
        DECISIONS + "test_gates_open_is_counted_and_logged",
    ),
    M(
        "`rra/gates_open` not logged",
        RECIPE,
        "                if self.gates_open is not None:\n"
        '                    values["rra/gates_open"] = float(self.gates_open)\n',
        "",
        DECISIONS + "test_gates_open_is_counted_and_logged",
    ),
    # --- Inference.
    M(
        "inference reference text = the prompt by default",
        PIPELINE,
        "reference_prompts = [self.default_reference_prompt] * len(prompts)",
        "reference_prompts = [remove_placeholder(p, self.placeholder) for p in prompts]",
        REFERENCE_ROWS,
    ),
    M(
        "the stage ignores `generate.reference_text`",
        "eqdiff/pipelines/generate.py",
        "reference_prompt=reference_prompt,",
        "reference_prompt=None,",
        INFERENCE + "test_the_generation_prompt_without_placeholder_is_the_option",
    ),
    M(
        # The default (clean, shared) path computes the unconditional rows' reference once per timestep from the
        # cache's text: it gets the reference prompt's states instead of the empty prompt's.
        "uncond rows' reference under the prompt",
        PIPELINE,
        "self._unconditional_reference.use(ref_clean, uncond)",
        "self._unconditional_reference.use(ref_clean, self._reference_text(reference_prompts[:1], uncond))",
        REFERENCE_ROWS,
    ),
    M(
        "noised reference by default",
        PIPELINE,
        "reference_noise: ReferenceNoise = ReferenceNoise.CLEAN,",
        "reference_noise: ReferenceNoise = ReferenceNoise.NOISED,",
        REFERENCE_ROWS,
    ),
    M(
        "reference rows not shared",
        PIPELINE,
        "share_reference_rows: bool = True,",
        "share_reference_rows: bool = False,",
        REFERENCE_ROWS,
    ),
    M(
        "one generator for a batch",
        "eqdiff/pipelines/generate.py",
        'generators = [image_generator(config.seed, j["seed_index"], j["sample_index"]) for j in chunk]',
        'generators = [image_generator(config.seed, chunk[0]["seed_index"], chunk[0]["sample_index"])] * len(chunk)',
        INFERENCE + "test_every_image_of_a_batch_has_its_own_generator",
    ),
    # --- Data preparation.
    M(
        "class images with DDIM by default",
        STAGES_CONFIG,
        "scheduler: ClassScheduler = ClassScheduler.PNDM",
        "scheduler: ClassScheduler = ClassScheduler.DDIM",
        PRIOR + "test_class_images_are_sampled_with_the_base_models_default_pndm",
    ),
    M(
        "`squash` resizes like `crop`",
        "eqdiff/prep/subjects.py",
        "target = image_to_tensor(image.resize((side, side), Image.Resampling.BILINEAR))",
        "target = image_to_tensor(center_crop_resize(image, side))",
        BANDS + "test_targets_are_centre_cropped_by_default_and_squashed_as_an_option",
    ),
    M(
        "symmetric low-pass box",
        FDTE_PY,
        "return ((ky >= -cy) & (ky < cy))[:, None] & ((kx >= -cx) & (kx < cx))[None, :]",
        "return ((ky >= -cy) & (ky <= cy))[:, None] & ((kx >= -cx) & (kx <= cx))[None, :]",
        FDTE + "test_box_low_pass_keeps_the_official_asymmetric_range",
    ),
    M(
        "real part instead of the modulus",
        FDTE_PY,
        "take = torch.abs if config.output == BandOutput.ABS else torch.real",
        "take = torch.real",
        BANDS + "test_default_bands_match_the_official_filter_on_a_synthetic_512_image",
    ),
    M(
        "injection one token off",
        FDTE_PY,
        "at_placeholder = (input_ids == placeholder_id).unsqueeze(-1)",
        "at_placeholder = (input_ids == placeholder_id).roll(-1, dims=1).unsqueeze(-1)",
        FDTE + "test_injection_lands_on_the_true_token_not_the_word_index",
    ),
    M(
        "the target photo allowed as its own reference",
        DATA,
        "candidates = torch.nonzero(owners != target).flatten()",
        "candidates = torch.arange(len(owners))",
        TRAIN + "test_batch_layout_prior_first_and_references_from_other_photos",
    ),
    M(
        "reference views unseeded",
        "eqdiff/prep/augment.py",
        "rng = random.Random(seed)\n    base = center_crop_resize(",
        "rng = random.Random()\n    base = center_crop_resize(",
        AUGMENT + "test_views_are_deterministic_in_seed_and_differ_across_seeds",
    ),
    M(
        "MoCo views unseeded",
        "eqdiff/prep/augment.py",
        'rng = random.Random(seed)\n    image = image.convert("RGB")',
        'rng = random.Random()\n    image = image.convert("RGB")',
        AUGMENT + "test_moco_view_is_seeded_and_square",
    ),
    M(
        "the step's draws from the global RNG",
        DATA,
        "return torch.Generator().manual_seed(seed * 1_000_003 + step)",
        "return torch.default_generator",
        TRAIN + "test_killed_and_resumed_training_is_bitwise_identical",
    ),
    M(
        "trained K/V in the reference pass",
        RRA_PY,
        "key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)",
        "key, value = self._custom_key_value(encoder_hidden_states, query.dtype)",
        RRA + "test_reference_pass_uses_the_frozen_cross_attention",
    ),
    M(
        'class prompt with an "a photo of " prefix',
        STAGES_CONFIG,
        'class_prompt: str = "{}"',
        'class_prompt: str = "a photo of {}"',
        PRIOR + "test_the_class_prompt_is_the_class_noun_alone_by_default",
    ),
    M(
        "L_ca on up_blocks.1 only",
        RRA_PY,
        'LOSS_BLOCKS_CA = ("down_blocks.2.", "up_blocks.1.")',
        'LOSS_BLOCKS_CA = ("up_blocks.1.",)',
        LOSSES,
    ),
    M(
        "L_ra with the mid block's maps",
        RRA_PY,
        'LOSS_BLOCK_RA = ("up_blocks.1.",)',
        'LOSS_BLOCK_RA = ("mid_block.", "up_blocks.1.")',
        LOSSES,
    ),
    M(
        "guidance default 7.5",
        METHOD_CONFIG,
        "guidance_scale: float = 12.5",
        "guidance_scale: float = 7.5",
        CONFIG + "test_defaults_are_the_official_recipe_with_fixes",
    ),
    # --- Numbers only the stored regression values see.
    M(
        "the pipeline's DDIM with trailing spacing",
        PIPELINE,
        "scheduler = DDIMScheduler.from_config(components.noise_scheduler.config)",
        'scheduler = DDIMScheduler.from_config(components.noise_scheduler.config, timestep_spacing="trailing")',
        REGRESSION,
    ),
    M(
        "instance loss × 1.01",
        RECIPE,
        'losses = {"instance": mgdp.masked_loss(pred[inst], noise[inst], loss_mask)}',
        'losses = {"instance": 1.01 * mgdp.masked_loss(pred[inst], noise[inst], loss_mask)}',
        REGRESSION,
    ),
    M(
        "prior loss × 1.01",
        RECIPE,
        'losses["prior"] = F.mse_loss(',
        'losses["prior"] = 1.01 * F.mse_loss(',
        REGRESSION,
    ),
    M(
        "L_ra × 1.01",
        RECIPE,
        'losses["reference_attention"] = rra.reference_attention_loss(',
        'losses["reference_attention"] = 1.01 * rra.reference_attention_loss(',
        REGRESSION,
    ),
    M(
        "L_ca × 1.01",
        RECIPE,
        'losses["cross_attention"] = rra.cross_attention_loss(',
        'losses["cross_attention"] = 1.01 * rra.cross_attention_loss(',
        REGRESSION,
    ),
    M(
        "guidance × 1.01 (the image only)",
        PIPELINE,
        "noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)",
        "noise_pred = noise_uncond + 1.01 * guidance_scale * (noise_cond - noise_uncond)",
        REGRESSION,
    ),
)


# ----------------------------------------------------------------------------------------------------------
# Applying, running, restoring.


class DriftError(RuntimeError):
    """The code no longer holds a mutation's ``old`` snippet exactly once."""


def mutated_text(mutation: Mutation, text: str) -> str:
    count = text.count(mutation.old)
    if count != 1:
        raise DriftError(
            f"{mutation.file}: the snippet of {mutation.row!r} occurs {count} times (expected exactly once): "
            f"the code drifted, update the mutation\n--- snippet ---\n{mutation.old}"
        )
    return text.replace(mutation.old, mutation.new)


def check_all_apply(mutations: list[Mutation]) -> None:
    """Every selected mutation's snippet is in its file exactly once and the mutated file still compiles (checked
    before anything is written)."""
    for mutation in mutations:
        compile(mutated_text(mutation, (ROOT / mutation.file).read_text(encoding="utf-8")), mutation.file, "exec")


def git_clean(files: list[str]) -> bool:
    return subprocess.run(["git", "diff", "--quiet", "--", *files], cwd=ROOT).returncode == 0


@dataclass
class Outcome:
    status: str
    """``FAILS as required``, ``SURVIVED`` or ``BROKEN``."""
    detail: str
    seconds: float


def summary_and_reason(output: str) -> str:
    """pytest's last summary line and the first ``E`` line (why the test failed), shortened."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    reason = next((line for line in lines if line.startswith("E ")), "")
    reason = re.sub(r"\s+", " ", reason[1:].strip())
    return summary + (f" | {reason[:160]}" if reason else "")


def run_tests(tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """(pytest exit code or None on timeout, its output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, output + f"\ntimed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def apply_and_run(mutation: Mutation, timeout: float) -> Outcome:
    """Write the mutation, run its tests, and always restore the file (content and timestamps)."""
    path = ROOT / mutation.file
    original = path.read_bytes()
    stat = path.stat()
    start = time.monotonic()
    try:
        path.write_bytes(mutated_text(mutation, original.decode("utf-8")).encode("utf-8"))
        code, output = run_tests(mutation.tests, timeout)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # cached bytecode of the original stays valid
    seconds = time.monotonic() - start
    detail = summary_and_reason(output)
    if code == 1:
        return Outcome("FAILS as required", detail, seconds)
    if code == 0:
        return Outcome("SURVIVED", detail, seconds)
    return Outcome("BROKEN", f"pytest exit {code}: {detail}", seconds)


# ----------------------------------------------------------------------------------------------------------
# The docs table.


def docs_rows() -> list[str]:
    """First cells of the table in docs/method.md's "Mutation check" section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Mutation check", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| mutation |")]
    return [row[2:].rsplit(" | ", 1)[0].strip() for row in rows]


def check_docs() -> int:
    documented, scripted = docs_rows(), [m.row for m in MUTATIONS]
    missing = [row for row in documented if row not in scripted]
    extra = [row for row in scripted if row not in documented]
    for row in missing:
        print(f"in docs/method.md, not in the script: {row}")
    for row in extra:
        print(f"in the script, not in docs/method.md: {row}")
    print(f"{len(documented)} rows in docs/method.md, {len(scripted)} mutations in the script")
    return 1 if missing or extra else 0


# ----------------------------------------------------------------------------------------------------------


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def select(args: argparse.Namespace) -> list[tuple[int, Mutation]]:
    chosen = list(enumerate(MUTATIONS, 1))
    if args.only:
        bad = [n for n in args.only if not 1 <= n <= len(MUTATIONS)]
        if bad:
            raise SystemExit(f"--only {bad[0]}: mutations are numbered 1 to {len(MUTATIONS)} (see --list)")
        chosen = [(n, m) for n, m in chosen if n in args.only]
    if args.k:
        needle = args.k.lower()
        chosen = [(n, m) for n, m in chosen if needle in m.row.lower() or any(needle in t.lower() for t in m.tests)]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=int, action="append", metavar="N", help="run mutation N (repeatable)")
    parser.add_argument("-k", metavar="TEXT", help="run the mutations whose row text or test id contains TEXT")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests; run nothing")
    parser.add_argument("--check-docs", action="store_true", help="compare the rows with docs/method.md's table")
    parser.add_argument("--baseline", action="store_true", help="first check each test passes on unchanged code")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run (default 1800)")
    args = parser.parse_args(argv)

    if args.check_docs:
        return check_docs()
    chosen = select(args)
    if args.list:
        for number, mutation in chosen:
            print(f"{number:2d}. {mutation.row}  [{mutation.file}]")
            for test in mutation.tests:
                print(f"      {test}")
        return 0
    if not chosen:
        print("no mutation selected")
        return 1

    files = sorted({m.file for _, m in chosen})
    if not git_clean(files):
        print(f"refusing to run: uncommitted changes in {', '.join(files)} (the restore check compares with git)")
        return 2
    check_all_apply([m for _, m in chosen])
    # SIGTERM (e.g. a killed background run) unwinds like Ctrl-C, so the ``finally`` restores the file.
    signal.signal(signal.SIGTERM, _interrupt)

    results: list[tuple[int, Mutation, Outcome]] = []
    started = time.monotonic()
    interrupted = False
    try:
        for number, mutation in chosen:
            if args.baseline:
                code, output = run_tests(mutation.tests, args.timeout)
                if code != 0:
                    print(
                        f"{number:2d}. {mutation.row}: BASELINE FAILS, the test does not pass unchanged: "
                        f"{summary_and_reason(output)}",
                        flush=True,
                    )
                    results.append((number, mutation, Outcome("BROKEN", "baseline fails", 0.0)))
                    continue
            outcome = apply_and_run(mutation, args.timeout)
            results.append((number, mutation, outcome))
            print(f"{number:2d}. {outcome.status:17s} {mutation.row}  ({outcome.seconds:.0f} s)", flush=True)
            print(f"      {outcome.detail}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", flush=True)
    finally:
        restored = git_clean(files)
        if not restored:
            print(f"ERROR: git diff is not empty for {', '.join(files)} after the run: restore them by hand")

    caught = sum(o.status == "FAILS as required" for _, _, o in results)
    print(f"\n{caught} of {len(results)} mutations fail as required ({time.monotonic() - started:.0f} s in all)")
    for number, mutation, outcome in results:
        if outcome.status != "FAILS as required":
            print(f"  {outcome.status}: {number}. {mutation.row} -> {', '.join(mutation.tests)}")
    if not restored:
        return 2
    if interrupted:
        return 130
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
