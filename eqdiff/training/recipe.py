"""The EqDiff training recipe: setup / train / save_checkpoint / resume (paper §4; docs/method.md).

One step, top to bottom (``training_step``):

1. sample latents from the cached posteriors of each row's band (FULL/LOW/HIGH, FDTE) and of its reference;
2. noise both with the same ε, the target at t and the reference at max(t − time_gap, 0);
3. MGDP: instance rows keep their background clean (z' = M z_t + (1 − M) z_0);
4. text: the row's vector (S_LF / S_HF / S_ori) injected at the placeholder's token positions;
5. reference pass: the same UNet, stock processors, under ``no_grad``, writes F^r into the bank;
6. main pass with RRA reading the bank and recording the maps L_ra / L_ca need;
7. losses: instance (masked, Eq. 7), prior MSE, L_ra, L_ca.

Randomness: every draw of step s comes from a generator seeded by (seed, s) (``training_data.sample_batch``), so
a run killed after any step and resumed from its checkpoint ends bitwise-identical on CPU. Variants A–F are data
(``config.VARIANTS``), never branches on the step count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eqdiff.config import MethodConfig
from eqdiff.errors import DataError, TrainingError
from eqdiff.io.schemas.concept import ConceptManifest
from eqdiff.method import mgdp, rra
from eqdiff.method.fdte import encode_prompt
from eqdiff.method.prompts import subject_prompt, tokenize, training_reference_prompt
from eqdiff.models.components import Components, Denoiser
from eqdiff.models.concept import attach_concept_modules, save_concept, trainable_parameters
from eqdiff.models.precision import autocast_dtype, store_frozen_in
from eqdiff.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from eqdiff.training.data import Batch, TrainingData, sample_batch
from eqdiff.training.validation import validation_images

logger = logging.getLogger(__name__)

LossCallback = Callable[[int, dict[str, float]], None]
"""Called with (step, {"loss/instance", "loss/prior", "loss/reference_attention", "loss/cross_attention",
"loss/total"}, plus "rra/gates_open" — RRA layers whose gate is open — when RRA is on) every ``train.log_every``
steps."""


FUSED_ADAMW_DEVICES = ("cuda", "cpu")
"""Devices where AdamW runs as one fused kernel (tested equal to the per-tensor update within 1e-6)."""

_SCHEDULING_FIELDS = (
    "steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "validation_steps",
    "validation_prompt",
    "log_every",
    "compile",
)


def noisy_reference(
    scheduler, reference_latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, time_gap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training reference: noised with its target row's own ε at t_ref = max(t − time_gap, 0)
    (docs/official-code.md §4.2)."""
    reference_timesteps = (timesteps - time_gap).clamp_min(0)
    return scheduler.add_noise(reference_latents, noise, reference_timesteps), reference_timesteps


class EqDiffRecipe:
    """Fine-tunes one concept. ``config`` must be resolved (variant applied)."""

    def __init__(
        self,
        config: MethodConfig,
        components: Components,
        data: TrainingData,
        class_noun: str,
        class_prompt: str,
        work_dir: Path,
        callback: LossCallback | None = None,
        progress: bool = True,
        subject_name: str = "",
    ):
        self.config, self.components, self.data = config, components, data
        self.class_noun, self.class_prompt = class_noun, class_prompt
        self.work_dir, self.callback, self.progress = work_dir, callback, progress
        self.subject_name = subject_name
        self.device = components.unet.device
        self.step = 0

    # ------------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Placeholder token, processors, frequency embeddings, the trainable set, AdamW, fixed prompt tensors."""
        cfg, parts = self.config, self.components
        self.bank = rra.ReferenceBank()
        self.embeddings, self.placeholder_id = attach_concept_modules(
            parts,
            cfg.concept.placeholder,
            cfg.concept.initializer_token,
            cfg.rra.enabled,
            decoupled=cfg.fdte.enabled,
            bank=self.bank,
        )
        for module in (parts.unet, parts.text_encoder, parts.vae):
            module.requires_grad_(False)
        self.parameters = trainable_parameters(parts.unet, self.embeddings)
        for param in self.parameters.values():
            param.requires_grad_(True)
        if cfg.train.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(
            list(self.parameters.values()),
            lr=cfg.train.learning_rate,
            betas=(cfg.train.adam_beta1, cfg.train.adam_beta2),
            weight_decay=cfg.train.adam_weight_decay,
            eps=cfg.train.adam_epsilon,
            fused=self.device.type in FUSED_ADAMW_DEVICES,
        )
        self.amp_dtype = autocast_dtype(cfg.train.mixed_precision, self.device)
        if self.amp_dtype is not None:  # trainable weights stay fp32
            store_frozen_in(parts.unet, self.amp_dtype)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.denoiser = Denoiser(parts.unet, compile=cfg.train.compile)
        self._encode_fixed_prompts()
        self._stack_band_posteriors()
        self.run_key = self._run_key()

    def _encode_fixed_prompts(self) -> None:
        """Token ids of the instance prompt and the constant text states of prior and reference prompts."""
        cfg, parts = self.config, self.components
        instance = subject_prompt(cfg.train.instance_prompt, cfg.concept.placeholder, self.class_noun)
        class_prompt = self.class_prompt
        for field, prompt in (("train.instance_prompt", instance), ("prior.class_prompt", class_prompt)):
            try:  # name the params field of an over-long prompt (docs/robustness.md)
                tokenize(parts.tokenizer, [prompt])
            except DataError as exc:
                raise DataError(f"{field}: {exc}") from None
        self.instance_ids = tokenize(parts.tokenizer, [instance], self.device)
        # From the token list on the host: reading it back from the device would be a sync.
        self.placeholder_position = parts.tokenizer(instance).input_ids.index(self.placeholder_id)
        with torch.no_grad():
            encode = parts.text_encoder
            self.prior_states = encode(tokenize(parts.tokenizer, [class_prompt], self.device))[0]
            reference_ids = tokenize(
                parts.tokenizer,
                [
                    training_reference_prompt(cfg.train.instance_prompt, cfg.concept.placeholder, self.class_noun),
                    class_prompt,
                ],
                self.device,
            )
            self.reference_states = encode(reference_ids)[0]  # rows: [instance reference, prior reference]

    def _run_key(self) -> str:
        """Identity of the optimisation a checkpoint belongs to: everything that changes the weights' trajectory.

        Scheduling fields (total steps — the lr is constant —, checkpoint/validation/log intervals, compile) are
        left out, so a run resumed with, e.g., more steps or other checkpoint intervals continues its checkpoints.
        """
        config = self.config.to_dict()
        del config["generate"]  # read for validation images only
        for name in _SCHEDULING_FIELDS:
            config["train"].pop(name)
        payload = json.dumps(
            [config, self.data.digest, self.components.fingerprint, self.class_noun, self.class_prompt],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------------
    def _sample_latents(self, mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        scale = self.components.vae.config.scaling_factor
        return (mean + torch.exp(0.5 * logvar) * noise) * scale

    def _stack_band_posteriors(self) -> None:
        """(3, N, 4, h, w) mean/logvar stacks indexed by FrequencyBand, for one gather per step (no host sync)."""
        order = ("low", "high", "full")  # FrequencyBand.LOW, HIGH, FULL
        for name, source in (("target", self.data.target_posteriors), ("class", self.data.class_posteriors)):
            for part in ("mean", "logvar"):
                setattr(self, f"_{name}_{part}", torch.stack([source[f"{band}_{part}"] for band in order]))

    def _target_latents(self, batch: Batch) -> torch.Tensor:
        """Each row's band image latents: prior rows draw bands too (official), with the plain class prompt."""
        num_prior = len(batch.classes)
        prior_bands, instance_bands = batch.bands[:num_prior], batch.bands[num_prior:]
        mean = torch.cat(
            [self._class_mean[prior_bands, batch.classes], self._target_mean[instance_bands, batch.targets]]
        )
        logvar = torch.cat(
            [self._class_logvar[prior_bands, batch.classes], self._target_logvar[instance_bands, batch.targets]]
        )
        return self._sample_latents(mean, logvar, batch.latent_noise)

    def _reference_latents(self, batch: Batch) -> torch.Tensor:
        data = self.data
        mean = torch.cat([data.class_reference_mean[batch.classes], data.reference_mean[batch.references]])
        logvar = torch.cat([data.class_reference_logvar[batch.classes], data.reference_logvar[batch.references]])
        return self._sample_latents(mean, logvar, batch.reference_latent_noise)

    def _text_states(self, batch: Batch) -> torch.Tensor:
        num_prior, num_inst = len(batch.classes), len(batch.targets)
        vectors = self.embeddings(batch.bands[num_prior:])
        ids = self.instance_ids.expand(num_inst, -1)
        instance = encode_prompt(self.components.text_encoder, ids, self.placeholder_id, vectors)
        prior = self.prior_states.expand(num_prior, -1, -1)
        return torch.cat([prior, instance])

    def training_step(self, batch: Batch, reference_no_grad: bool = True) -> dict[str, torch.Tensor]:
        """Forward the losses of one batch (no backward). The bank stays filled and in READ mode until the caller
        clears it after ``backward`` (gradient checkpointing re-runs the main pass during backward).
        ``reference_no_grad=False`` exists for the test that proves the reference pass needs no graph
        (docs/method.md, RRA: reference pass; the official pass kept one, docs/official-code.md §4.2)."""
        cfg, unet, scheduler = self.config, self.denoiser, self.components.noise_scheduler
        num_prior = len(batch.classes)
        inst = slice(num_prior, None)
        # 1-2. Latents, shared ε, timesteps (the batch is drawn on the host: move it first).
        batch = batch.to(self.device)
        latents = self._target_latents(batch)
        noise, timesteps = batch.noise, batch.timesteps
        noisy = scheduler.add_noise(latents, noise, timesteps)
        # 3. MGDP on the instance rows.
        loss_mask = None
        if self.data.target_masks is not None:
            masks = self.data.target_masks[batch.targets]
            radius = mgdp.scaled_radius(cfg.mgdp.dilate_radius, latents.shape[-1])
            dilated = mgdp.dilate(mgdp.latent_mask(masks, latents.shape[-2:]), radius)
            composed, loss_mask = mgdp.instance_inputs(cfg.mgdp.mode, noisy[inst], latents[inst], dilated)
            noisy = torch.cat([noisy[:num_prior], composed])
        if loss_mask is None:
            loss_mask = torch.ones_like(latents[inst, :1])
        # 4. Text with the frequency vectors injected.
        with self._autocast():
            text = self._text_states(batch)
            # 5. Reference pass (stock UNet, writes F^r).
            self.bank.clear()
            if cfg.rra.enabled:
                ref_noisy, ref_t = noisy_reference(
                    scheduler, self._reference_latents(batch), noise, timesteps, cfg.rra.time_gap
                )
                ref_text = torch.cat(
                    [
                        self.reference_states[1:].expand(num_prior, -1, -1),
                        self.reference_states[:1].expand(len(batch.targets), -1, -1),
                    ]
                )
                self.bank.mode = rra.BankMode.WRITE
                grad_context = torch.no_grad() if reference_no_grad else contextlib.nullcontext()
                with grad_context:
                    unet(ref_noisy, ref_t, ref_text)
            # 6. Main pass.
            self.bank.mode = rra.BankMode.READ if cfg.rra.enabled else rra.BankMode.OFF
            self.bank.record_maps = cfg.losses.reference_attention > 0 or cfg.losses.cross_attention > 0
            self.bank.record_gates = cfg.rra.enabled
            pred = unet(noisy, timesteps, text).sample
        # 7. Losses.
        losses = {"instance": mgdp.masked_loss(pred[inst], noise[inst], loss_mask)}
        zero = losses["instance"].new_zeros(())
        losses["prior"] = F.mse_loss(pred[:num_prior].float(), noise[:num_prior].float()) if num_prior else zero
        raw = self.data.target_masks[batch.targets] if self.data.target_masks is not None else None
        losses["reference_attention"] = zero
        if cfg.losses.reference_attention > 0 and self.bank.reference_maps:
            ref_masks = self.data.reference_masks[batch.references]
            losses["reference_attention"] = rra.reference_attention_loss(self.bank, inst, raw, ref_masks)
        losses["cross_attention"] = zero
        if cfg.losses.cross_attention > 0 and self.bank.cross_maps:
            positions = torch.full((len(batch.targets),), self.placeholder_position, device=self.device)
            losses["cross_attention"] = rra.cross_attention_loss(self.bank, inst, positions, raw)
        losses["total"] = (
            losses["instance"]
            + cfg.losses.prior_loss_weight * losses["prior"]
            + cfg.losses.reference_attention * losses["reference_attention"]
            + cfg.losses.cross_attention * losses["cross_attention"]
        )
        return losses

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------------------------------------------
    def optimization_step(self, reference_no_grad: bool = True) -> dict[str, torch.Tensor]:
        """One step: sample this step's batch, forward, backward, clip, AdamW; returns the (device) losses.

        ``reference_no_grad=False`` builds a graph for the reference pass too (the benchmark's baseline).
        """
        cfg = self.config.train
        batch = sample_batch(
            self.data, self.config, self.step, self.components.noise_scheduler.config.num_train_timesteps
        )
        losses = self.training_step(batch, reference_no_grad=reference_no_grad)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        # Over ALL trainable parameters, frequency vectors included (the official code left them out:
        # docs/official-code.md §7.17).
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.parameters.values()), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        gates = list(self.bank.gate_open.values())
        self.gates_open = torch.stack(gates).sum() if gates else None  # a device tensor: no sync here
        self.bank.clear()
        self.step += 1
        return losses

    def train(self) -> None:
        """Run from the current step to ``train.steps``; checkpoints, validation and logging on schedule.

        Losses leave the device only every ``log_every`` steps (each read is a host-device sync).
        """
        cfg = self.config.train
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not self.progress)
        while self.step < cfg.steps:
            losses = self.optimization_step()
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                values = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
                if self.gates_open is not None:
                    values["rra/gates_open"] = float(self.gates_open)
                self._check_finite(values["loss/total"])
                bar.set_postfix(loss=f"{values['loss/total']:.4f}")
                if self.callback is not None:
                    self.callback(self.step, values)
            if cfg.checkpointing_steps and self.step % cfg.checkpointing_steps == 0 and self.step < cfg.steps:
                self.save_checkpoint()
            if cfg.validation_steps and self.step % cfg.validation_steps == 0:
                self.validate()
        bar.close()

    def _check_finite(self, total: float) -> None:
        if not math.isfinite(total):
            raise TrainingError(
                f"train: loss is {total} at step {self.step}; stopped, the last good checkpoint "
                f"in {self.work_dir / 'checkpoints'} is kept (lower train.learning_rate?)"
            )

    def save_checkpoint(self) -> Path:
        if not all(torch.isfinite(p).all() for p in self.parameters.values()):
            raise TrainingError(f"train: non-finite weights at step {self.step}; checkpoint not written")
        return save_checkpoint(
            self.work_dir / "checkpoints",
            self.step,
            self.run_key,
            self.parameters,
            self.optimizer,
            self.config.train.checkpoints_total_limit,
        )

    def resume(self) -> bool:
        """Continue from this run's newest checkpoint at or below ``train.steps``, if any (other runs'
        checkpoints are ignored)."""
        path = latest_checkpoint(self.work_dir / "checkpoints", self.run_key, self.config.train.steps)
        if path is None:
            return False
        step, weights = load_checkpoint(path, self.optimizer)
        with torch.no_grad():
            for name, param in self.parameters.items():
                param.copy_(weights[name])
        self.step = step
        logger.info("resumed from %s (step %d of %d)", path, step, self.config.train.steps)
        return True

    def validate(self) -> None:
        with self._autocast():  # the frozen UNet may be stored in the autocast dtype
            validation_images(self, self.work_dir / "validation" / f"step-{self.step:06d}.png")

    def concept_manifest(self) -> ConceptManifest:
        cfg = self.config
        return ConceptManifest(
            subject=self.subject_name,
            base_model=self.components.base_model_id,
            base_model_fingerprint=self.components.fingerprint,
            placeholder=cfg.concept.placeholder,
            initializer_token=cfg.concept.initializer_token,
            class_noun=self.class_noun,
            instance_prompt=cfg.train.instance_prompt,
            class_prompt=self.class_prompt,
            resolution=cfg.train.resolution,
            rra=cfg.rra.enabled,
            variant=cfg.train.variant,
            steps=self.step,
            run_key=self.run_key,
            config={k: v for k, v in cfg.to_dict().items() if k != "generate"},
        )

    def save(self, concept_dir: Path) -> Path:
        """Write the concept directory (safetensors + manifest)."""
        if not all(torch.isfinite(p).all() for p in self.parameters.values()):
            raise TrainingError("train: non-finite weights; concept not written")
        data, manifest = self.data, self.concept_manifest()
        return save_concept(concept_dir, dict(self.parameters), data.reference_image, manifest, data.reference_mask)
