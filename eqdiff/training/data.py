"""What one training run reads, encoded once: targets, reference views, class images (docs/method.md, FDTE, RRA, Data
and batch).

Every image is VAE-encoded exactly once, here, into posterior parameters (mean, logvar); the training loop
samples them every step (same semantics as encoding every step, no VAE encoder in the loop). The pieces come
from the preparation stages' outputs when given (``bands``, ``augment``, ``prior`` directories), otherwise they are
computed in memory by the very same functions those stages call, so ``eqdiff train`` also works on a bare
subject folder.

``sample_batch`` draws one step's rows from a generator seeded by (seed, step) alone: a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eqdiff.config import AugmentConfig, MethodConfig
from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError
from eqdiff.io.output_safety import OutputError, inside
from eqdiff.io.schemas.stage_manifests import AugmentManifest
from eqdiff.method.fdte import FrequencyBand, band_posteriors, encode_posterior, sample_bands
from eqdiff.prep import augment as augment_module
from eqdiff.prep.subjects import (
    Subject,
    center_crop_resize,
    image_to_tensor,
    load_image,
    load_mask,
    mask_to_tensor,
    preprocess_target,
)

logger = logging.getLogger(__name__)

BAND_KEYS = {FrequencyBand.FULL: "full", FrequencyBand.LOW: "low", FrequencyBand.HIGH: "high"}


@dataclass
class TrainingData:
    """Posterior parameters and masks of everything a run samples from, on one device.

    Shapes: N targets, V reference views, K class images; latents (·, 4, h, w) float32 (unscaled posterior
    parameters); masks (·, 1, H, W) float in {0, 1} at pixel resolution, or None when the run needs none.
    """

    target_posteriors: dict[str, torch.Tensor]
    """``{full,low,high}_{mean,logvar}``, each (N, 4, h, w)."""
    target_masks: torch.Tensor | None
    reference_mean: torch.Tensor
    reference_logvar: torch.Tensor
    reference_masks: torch.Tensor | None
    reference_owner: torch.Tensor
    """(V,) int64 on the host: the target index each view was made from (``sample_batch`` reads it every step,
    so ``to()`` leaves it on the host: reading it from a GPU would be a device-to-host sync per step)."""
    class_posteriors: dict[str, torch.Tensor]
    """The same keys as ``target_posteriors`` for the K class images (prior rows draw bands too)."""
    class_reference_mean: torch.Tensor
    class_reference_logvar: torch.Tensor
    reference_image: torch.Tensor
    """(3, H, W) in [-1, 1]: the concept's default inference reference (the first photo, preprocessed)."""
    digest: str
    """Digest of every input tensor: a checkpoint resumes only onto the same data."""

    @property
    def reference_mask(self) -> torch.Tensor | None:
        """(1, H, W) in {0, 1}: ``reference_image``'s mask (it is the first target), None without masks."""
        return None if self.target_masks is None else self.target_masks[0]

    @property
    def num_targets(self) -> int:
        return self.target_posteriors["full_mean"].shape[0]

    def to(self, device: torch.device | str) -> TrainingData:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor) and name != "reference_owner":
                setattr(self, name, value.to(device))
        self.target_posteriors = {k: v.to(device) for k, v in self.target_posteriors.items()}
        self.class_posteriors = {k: v.to(device) for k, v in self.class_posteriors.items()}
        return self


@dataclass
class Batch:
    """One step's rows, [prior..., instance...] (official layout). Index tensors are int64 on CPU."""

    targets: torch.Tensor
    """(B_inst,) target index per instance row."""
    references: torch.Tensor
    """(B_inst,) reference view index per instance row (always a view of another photo)."""
    classes: torch.Tensor
    """(B_prior,) class image index per prior row (empty without prior preservation)."""
    bands: torch.Tensor
    """(B_prior + B_inst,) FrequencyBand per row."""
    timesteps: torch.Tensor
    """(B,) training timesteps."""
    noise: torch.Tensor
    """(B, 4, h, w) ε, shared by each row's target and its reference."""
    latent_noise: torch.Tensor
    """(B, 4, h, w) posterior-sampling noise of the target latents."""
    reference_latent_noise: torch.Tensor
    """(B, 4, h, w) posterior-sampling noise of the reference latents."""

    def to(self, device: torch.device) -> Batch:
        """Copy to ``device`` without blocking the host (pinned staging on CUDA: no sync inside the step)."""
        if device.type != "cuda":
            return self
        moved = {k: v.pin_memory().to(device, non_blocking=True) for k, v in vars(self).items()}
        return Batch(**moved)


def _mask_paths(subject: Subject, masks_dir: Path | None, required: bool) -> list[Path | None]:
    paths = []
    for photo in subject.photos:
        path = (masks_dir / f"{photo.stem}.png") if masks_dir else None
        if path is not None and not path.is_file():
            path = None
        if path is None and required:
            where = masks_dir or subject.directory / "masks"
            raise DataError(
                f"{where}: no mask for {photo.name} (run `eqdiff masks`, or set mgdp.mode: off and "
                "losses.reference_attention/cross_attention: 0)"
            )
        paths.append(path)
    return paths


def prior_rows_draw_bands(config: MethodConfig) -> bool:
    """Whether any prior row can be a LOW or HIGH band image (else class images need only their FULL posterior)."""
    fdte = config.fdte
    return fdte.enabled and fdte.apply_to_prior and (fdte.p_l > 0 or fdte.p_h > 0)


def needs_masks(config: MethodConfig) -> bool:
    return config.mgdp.mode != "off" or (
        config.rra.enabled and (config.losses.reference_attention > 0 or config.losses.cross_attention > 0)
    )


def _reference_views(
    subject: Subject,
    mask_paths: list[Path | None],
    side: int,
    augment: AugmentConfig,
    augment_dir: Path | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[int]]:
    """Reference views (3, H, W) in [-1, 1], their masks, and the index of the photo each came from."""
    views, masks, owners = [], [], []
    manifest = augment_dir / AugmentManifest.FILE if augment_dir is not None else None
    try:
        views_of = AugmentManifest.read(manifest).views if manifest is not None else {}
    except ArtifactError as exc:
        raise DataError(str(exc)) from None
    for index, (photo, mask_path) in enumerate(zip(subject.photos, mask_paths, strict=True)):
        if augment_dir is not None:
            names = views_of.get(photo.stem)
            if not names:
                raise DataError(f"{augment_dir}: no reference views for {photo.name} (re-run `eqdiff augment`)")
            try:  # names listed in a manifest must stay inside the augment folder
                where = f"{manifest}: views.{photo.stem}"
                files = [
                    (inside(augment_dir / "views", n, where), inside(augment_dir / "masks", n, where)) for n in names
                ]
            except OutputError as exc:
                raise DataError(str(exc)) from None
            pairs = [(load_image(view), mask) for view, mask in files]
            pairs = [(img, Image.open(m).convert("L") if m.is_file() else None) for img, m in pairs]
        else:
            image = load_image(photo)
            mask = load_mask(mask_path, image.size) if mask_path else None
            pairs = augment_module.reference_views(
                image,
                mask,
                side,
                augment.views_per_photo,
                augment,
                seed=augment_module.view_seed(augment.seed, photo.stem),
            )
        for view, view_mask in pairs:
            views.append(image_to_tensor(view.resize((side, side), Image.Resampling.BICUBIC)))
            masks.append(
                mask_to_tensor(np.asarray(view_mask.resize((side, side), Image.Resampling.NEAREST)))
                if view_mask is not None
                else None
            )
            owners.append(index)
    return views, masks, owners


def _class_images(class_paths: list[Path], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class images (center-cropped) and one fixed MoCo-v2 view of each, (K, 3, H, W) in [-1, 1]."""
    images, views = [], []
    for index, path in enumerate(class_paths):
        image = load_image(path)
        images.append(image_to_tensor(center_crop_resize(image, side)))
        views.append(image_to_tensor(augment_module.moco_view(image, side, seed=index)))
    return torch.stack(images), torch.stack(views)


def _digest(*tensors: torch.Tensor | None) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is not None:
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_training_data(
    vae,
    subject: Subject,
    config: MethodConfig,
    augment: AugmentConfig,
    class_paths: list[Path],
    masks_dir: Path | None = None,
    augment_dir: Path | None = None,
    band_cache: dict[str, torch.Tensor] | None = None,
) -> TrainingData:
    """Load, validate and VAE-encode everything one run samples from (once)."""
    side = config.train.resolution
    mask_paths = _mask_paths(subject, masks_dir, required=needs_masks(config))
    if band_cache is None:
        resize = config.train.resize
        pairs = [preprocess_target(p, m, side, resize) for p, m in zip(subject.photos, mask_paths, strict=True)]
        targets = torch.stack([t for t, _ in pairs])
        masks = torch.stack([m for _, m in pairs]) if all(m is not None for _, m in pairs) else None
        posteriors = band_posteriors(vae, targets, config.fdte)
    else:
        targets, masks = band_cache["targets"], band_cache.get("masks")
        posteriors = {k: v for k, v in band_cache.items() if k.endswith(("_mean", "_logvar"))}
    views, view_masks, owners = _reference_views(subject, mask_paths, side, augment, augment_dir)
    reference_mean, reference_logvar = encode_posterior(vae, torch.stack(views))
    reference_masks = torch.stack(view_masks) if all(m is not None for m in view_masks) else None
    if needs_masks(config) and (masks is None or reference_masks is None):
        raise DataError(f"{subject.directory}: masks are required for this run but some are missing")
    if class_paths:
        class_images, class_views = _class_images(class_paths, side)
        if prior_rows_draw_bands(config):
            class_posteriors = band_posteriors(vae, class_images, config.fdte)
        else:  # every prior row is FULL: skip two thirds of the class-image encodes (LOW/HIGH never sampled)
            mean, logvar = encode_posterior(vae, class_images)
            class_posteriors = {
                f"{band}_{part}": value
                for band in ("full", "low", "high")
                for part, value in (("mean", mean), ("logvar", logvar))
            }
        class_reference_mean, class_reference_logvar = encode_posterior(vae, class_views)
    else:
        empty = torch.zeros((0, *reference_mean.shape[1:]))
        class_posteriors = {k: empty for k in posteriors}
        class_reference_mean = class_reference_logvar = empty
    return TrainingData(
        target_posteriors=posteriors,
        target_masks=masks,
        reference_mean=reference_mean,
        reference_logvar=reference_logvar,
        reference_masks=reference_masks,
        reference_owner=torch.tensor(owners, dtype=torch.long),
        class_posteriors=class_posteriors,
        class_reference_mean=class_reference_mean,
        class_reference_logvar=class_reference_logvar,
        reference_image=targets[0].clone(),
        digest=_digest(
            targets,
            masks,
            reference_mean,
            reference_masks,
            class_posteriors["full_mean"],
            class_reference_mean,
        ),
    )


def step_generator(seed: int, step: int) -> torch.Generator:
    """The only source of randomness of a step: a CPU generator seeded by (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_batch(data: TrainingData, config: MethodConfig, step: int, num_train_timesteps: int) -> Batch:
    """Draw step ``step``'s rows (official layout: prior rows first)."""
    generator = step_generator(config.train.seed, step)
    n, batch = data.num_targets, config.train.batch_size
    if batch <= n:
        targets = torch.randperm(n, generator=generator)[:batch]
    else:
        targets = torch.randint(n, (batch,), generator=generator)
    references = []
    owners = data.reference_owner
    for target in targets.tolist():
        candidates = torch.nonzero(owners != target).flatten()  # another photo, never the target itself
        references.append(candidates[torch.randint(len(candidates), (1,), generator=generator)].item())
    num_classes = data.class_posteriors["full_mean"].shape[0]
    num_prior = batch if (config.train.with_prior_preservation and num_classes) else 0
    classes = torch.randint(max(num_classes, 1), (num_prior,), generator=generator)
    rows = num_prior + batch
    is_prior = torch.arange(rows) < num_prior
    shape = (rows, *data.reference_mean.shape[1:])
    return Batch(
        targets=targets,
        references=torch.tensor(references, dtype=torch.long),
        classes=classes,
        bands=sample_bands(rows, config.fdte, generator, is_prior=is_prior),
        timesteps=torch.randint(0, num_train_timesteps, (rows,), generator=generator),
        noise=torch.randn(shape, generator=generator),
        latent_noise=torch.randn(shape, generator=generator),
        reference_latent_noise=torch.randn(shape, generator=generator),
    )
