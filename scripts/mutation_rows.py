"""The mutation table of docs/method.md ("Mutation check"), first part: the constants, the ``Mutation`` row and the
training step's rows. ``scripts/mutation_check.py`` applies them; ``mutation_rows_more.py`` holds the rest."""

from __future__ import annotations

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


TRAINING_STEP: tuple[Mutation, ...] = (
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
)
