"""The band cache (paper §4.1 Eq. 3-5; docs/method.md, FDTE): preprocessed targets, their LOW/HIGH band images and the
VAE posterior parameters of all three, computed once per subject by the ``bands`` stage.

Training samples latents from the cached posteriors every step (same semantics as encoding every step, without
the VAE encoder in the loop). Layout of ``<dir>``:

* ``bands.safetensors`` — ``targets`` (N, 3, R, R) float32 in [-1, 1]; ``masks`` (N, 1, R, R) float32 in
  {0, 1}; ``low``, ``high`` (N, 3, R, R) float32 (``abs`` output >= 0, ``real`` signed);
  ``{full,low,high}_{mean,logvar}`` (N, 4, R/f, R/f) float32, unscaled (multiply a sample by
  ``vae.config.scaling_factor``).
* ``bands.json`` (``eqdiff.io.schemas.stage_manifests.BandsManifest``) — ``stems`` (row order), ``resolution``,
  ``resize``, ``band_options`` (shape, colour, output, cutoffs), ``fingerprint`` (base model) and ``key`` (what a
  re-run compares to skip: inputs' SHA-256 + the above).
* ``sheet.png`` — per photo: target | LOW | HIGH | mask, under those column labels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from eqdiff.config import FdteConfig, ModelConfig, ResizeMode, section_to_dict
from eqdiff.io.artifacts import (
    ArtifactError,
    OutputLock,
    load_tensors,
    save_png,
    save_tensors,
    staged_directory,
    write_json,
)
from eqdiff.io.manifests import is_up_to_date, normalised, subject_inputs
from eqdiff.io.schemas.stage_manifests import BandsManifest
from eqdiff.io.sheets import tile_sheet
from eqdiff.method.fdte import band_images, band_posteriors
from eqdiff.models.components import load_components
from eqdiff.prep.subjects import Subject, preprocess_target, tensor_to_image

logger = logging.getLogger(__name__)

BAND_OPTIONS = ("shape", "colour", "output", "cutoff_low", "cutoff_high")
"""The ``fdte`` fields that change the band images; the band probabilities do not touch the cache."""
POSTERIOR_KEYS = tuple(f"{band}_{stat}" for band in ("full", "low", "high") for stat in ("mean", "logvar"))
TENSORS_FILE, MANIFEST_FILE, SHEET_FILE = "bands.safetensors", BandsManifest.FILE, "sheet.png"


def band_options(config: FdteConfig) -> dict[str, Any]:
    """The band-shaping options of ``config`` as plain JSON values."""
    values = section_to_dict(config)
    return {name: values[name] for name in BAND_OPTIONS}


def _load_targets(
    subject: Subject, masks_dir: Path, side: int, resize: ResizeMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and preprocess every photo and mask: (N, 3, side, side) [-1, 1], (N, 1, side, side) {0, 1}."""
    targets, masks = [], []
    for photo in subject.photos:
        target, mask = preprocess_target(photo, subject.mask_path(masks_dir, photo), side, resize)
        targets.append(target)
        masks.append(mask)
    return torch.stack(targets), torch.stack(masks)


BAND_SHEET_COLUMNS = ["target", "LOW", "HIGH", "mask"]


def band_sheet(targets: torch.Tensor, low: torch.Tensor, high: torch.Tensor, masks: torch.Tensor) -> Image.Image:
    """One row per photo: target | LOW | HIGH | mask, under those column labels.

    Bands are shown as the VAE sees them (clamped to [-1, 1]): ``abs`` bands are >= 0, so they appear in the
    upper half of the grey range, as in the official code.
    """
    rows = []
    for target, lo, hi, mask in zip(targets, low, high, masks, strict=True):
        mask_rgb = mask.expand(3, -1, -1) * 2.0 - 1.0
        rows.append([tensor_to_image(t) for t in (target, lo, hi, mask_rgb)])
    return tile_sheet(rows, targets.shape[-1], column_labels=BAND_SHEET_COLUMNS)


def band_tensors(targets: torch.Tensor, masks: torch.Tensor, vae, config: FdteConfig) -> dict[str, torch.Tensor]:
    """The ten cached tensors (CPU; shapes in the module docstring), computed on the VAE's device."""
    device = vae.device
    tensors = {"targets": targets, "masks": masks}
    with torch.no_grad():
        low, high = band_images(targets.to(device), config)
        tensors["low"], tensors["high"] = low.cpu(), high.cpu()
        posteriors: dict[str, list[torch.Tensor]] = {}
        for start in tqdm(range(len(targets)), desc="bands", unit="photo"):
            one = band_posteriors(vae, targets[start : start + 1].to(device), config)
            for name, value in one.items():
                posteriors.setdefault(name, []).append(value)
    tensors.update({name: torch.cat(values) for name, values in posteriors.items()})
    return tensors


def compute_band_cache(
    subject: Subject,
    masks_dir: Path,
    out_dir: Path,
    side: int,
    model: ModelConfig,
    config: FdteConfig,
    resize: ResizeMode = ResizeMode.CROP,
) -> Path:
    """Write the band cache of ``subject`` at ``side`` px into ``out_dir`` (layout in the module docstring).

    Every photo and mask is validated before the model is loaded and anything is written, and the directory
    is swapped in whole. When ``bands.json`` records the same inputs, band options, resolution and model
    fingerprint, nothing is rewritten. Bands and posteriors are computed on CUDA when it is available.
    """
    out_dir = Path(out_dir)
    inputs = subject_inputs(subject, masks_dir)
    targets, masks = _load_targets(subject, masks_dir, side, resize)
    components = load_components(model)
    components.vae.to("cuda" if torch.cuda.is_available() else "cpu")
    key = {
        "inputs": inputs,
        "band_options": band_options(config),
        "resolution": side,
        "resize": resize.value,
        "fingerprint": components.fingerprint,
    }
    if is_up_to_date(out_dir / MANIFEST_FILE, key, [out_dir / TENSORS_FILE, out_dir / SHEET_FILE], BandsManifest):
        logger.info("%s: up to date, nothing rewritten", out_dir)
        return out_dir
    tensors = band_tensors(targets, masks, components.vae, config)
    stems = tuple(p.stem for p in subject.photos)
    manifest = BandsManifest(key, stems, side, resize.value, band_options(config), components.fingerprint)
    with OutputLock(out_dir), staged_directory(out_dir) as staging:
        save_tensors(staging / TENSORS_FILE, tensors, metadata={"format": "eqdiff-bands"})
        save_png(staging / SHEET_FILE, band_sheet(targets, tensors["low"], tensors["high"], masks))
        write_json(staging / MANIFEST_FILE, manifest.to_json())
    logger.info("%s: bands of %d photos at %d px", out_dir, len(targets), side)
    return out_dir


def _check_shapes(path: Path, tensors: dict[str, torch.Tensor], num: int, resolution: int) -> None:
    expected = {
        "targets": (num, 3, resolution, resolution),
        "masks": (num, 1, resolution, resolution),
        "low": (num, 3, resolution, resolution),
        "high": (num, 3, resolution, resolution),
    }
    latent_shape = tensors["full_mean"].shape if "full_mean" in tensors else None
    for name in POSTERIOR_KEYS:
        expected[name] = latent_shape
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{path}: missing tensor {name!r} (not an eqdiff band cache)")
        got = tuple(tensors[name].shape)
        if got != tuple(shape) or (name in POSTERIOR_KEYS and (len(got) != 4 or got[:2] != (num, 4))):
            raise ArtifactError(f"{path}: tensor {name!r} has shape {got}, expected {tuple(shape)}")
        if not torch.isfinite(tensors[name]).all():
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or inf values")


def load_band_cache(
    directory: str | Path,
    expected_fingerprint: str,
    resolution: int,
    fdte: FdteConfig | None = None,
    resize: ResizeMode = ResizeMode.CROP,
) -> dict[str, Any]:
    """Read and validate a band cache written by ``compute_band_cache``.

    Returns the ten tensors of ``bands.safetensors`` (CPU, shapes in the module docstring) plus ``"stems"``
    (list[str], the row order). A missing or corrupt file, a cache for another base model or resolution, or
    (when ``fdte`` is given) other band options, is a one-line ``ArtifactError`` naming the file.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    manifest = BandsManifest.read(manifest_path)
    if manifest.fingerprint != expected_fingerprint:
        raise ArtifactError(
            f"{manifest_path}: bands were computed with base model {manifest.fingerprint}, "
            f"expected {expected_fingerprint} (re-run `eqdiff bands`)"
        )
    if manifest.resolution != resolution:
        raise ArtifactError(f"{manifest_path}: bands are at {manifest.resolution} px, expected {resolution} px")
    if manifest.resize != resize.value:
        raise ArtifactError(
            f"{manifest_path}: targets were resized with {manifest.resize!r}, expected train.resize "
            f"{resize.value!r} (re-run `eqdiff bands`)"
        )
    if fdte is not None and manifest.band_options != normalised(band_options(fdte)):
        raise ArtifactError(
            f"{manifest_path}: band options {manifest.band_options} differ from the "
            f"fdte config {band_options(fdte)} (re-run `eqdiff bands`)"
        )
    tensors_path = directory / TENSORS_FILE
    tensors = load_tensors(tensors_path)
    _check_shapes(tensors_path, tensors, len(manifest.stems), resolution)
    return {**tensors, "stems": list(manifest.stems)}
