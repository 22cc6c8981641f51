"""The ``train`` stage's work: one concept from a subject folder, resumable (docs/method.md).

``train_concept`` claims its outputs, loads the base model, the caches of ``augment``/``bands`` and the class
images of ``prior`` (or makes what is missing in memory), runs ``EqDiffRecipe`` and writes the concept
directory (``concept.safetensors`` + ``concept.json``) and a work directory holding resumable checkpoints,
validation images and ``losses.jsonl`` (one ``{"step", "time", "loss/total", ...}`` record per logged step;
``time`` in s since the epoch). A re-run of the same configuration on the same data resumes from its newest
checkpoint at or below ``train.steps``; a finished one is left alone.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from eqdiff.config import AugmentConfig, MethodConfig, PriorConfig
from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError, OutputLock, write_text
from eqdiff.io.manifests import check_cache_inputs
from eqdiff.io.output_safety import OutputError, claim_output, optional_path
from eqdiff.io.schemas.concept import ConceptManifest
from eqdiff.io.schemas.stage_manifests import AugmentManifest, BandsManifest
from eqdiff.models.components import load_components
from eqdiff.models.concept import MANIFEST_FILE, WEIGHTS_FILE
from eqdiff.models.precision import resolve_device
from eqdiff.models.presets import model_input
from eqdiff.prep import prior as prior_module
from eqdiff.prep.bands import load_band_cache
from eqdiff.prep.subjects import discover_subject
from eqdiff.training.data import prepare_training_data
from eqdiff.training.recipe import EqDiffRecipe, LossCallback

logger = logging.getLogger(__name__)


def class_images_for(
    config: MethodConfig,
    prior_config: PriorConfig,
    components,
    class_prompt: str,
    prior: Path | None,
    default_dir: Path,
) -> list[Path]:
    """Class images for prior preservation: the ``--prior`` folder, a real-image folder, or generated ones."""
    num = config.train.num_class_images
    if not config.train.with_prior_preservation:
        return []
    if prior is not None:
        return prior_module.load_class_images(prior, num)
    if prior_config.real_images_dir is not None:
        return prior_module.copy_real_class_images(Path(prior_config.real_images_dir).expanduser(), default_dir, num)
    return prior_module.generate_class_images(
        components, class_prompt, default_dir, num, prior_config, config.train.resolution
    )


WORK_ENTRIES = ("checkpoints", "losses.jsonl", "prior", "validation")
"""What ``train`` writes in its work directory: a non-empty work directory holding none of them is not its own."""


def claim_train_outputs(
    config: MethodConfig, prior_config: PriorConfig, subject_dir: Path, out: Path, work_dir: Path, inputs: list
) -> None:
    """Refuse a concept or work directory that is, holds or lies inside an input, or is not train's own."""
    out_r, work_r = out.resolve(), work_dir.resolve()
    if out_r == work_r or out_r.is_relative_to(work_r) or work_r.is_relative_to(out_r):
        raise OutputError(f"{work_dir}: the work directory overlaps the concept directory {out}; choose another")
    reads = [*inputs, model_input(config.model)]
    folders = [subject_dir, optional_path(prior_config.real_images_dir)]
    claim_output(out, "train", manifest=MANIFEST_FILE, reads=reads, folders=folders)
    claim_output(work_dir, "train", manifest=WORK_ENTRIES, reads=reads, folders=folders)


def truncate_loss_log(path: Path, step: int) -> None:
    """Keep the log's records up to ``step`` (the checkpoint resumed from): a killed run logged steps after its
    last checkpoint, which the resumed run logs again, and may have left a half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or record["step"] > step:
            break
        kept.append(line + "\n")
    write_text(path, "".join(kept))


def is_finished(out: Path, run_key: str, steps: int) -> bool:
    """Whether ``out`` already holds this run's concept, trained for ``steps`` steps."""
    try:
        manifest = ConceptManifest.read(out / MANIFEST_FILE)
    except (OSError, ArtifactError):
        return False
    return manifest.run_key == run_key and manifest.steps == steps and (out / WEIGHTS_FILE).is_file()


def publish_losses(log: Path, out: Path) -> None:
    """Copy the work directory's loss log to ``out`` (rewritten only when it differs: stable for DVC)."""
    text = log.read_text(encoding="utf-8") if log.is_file() else ""
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        write_text(out, text)


def train_concept(
    subject_dir: Path,
    class_noun: str,
    out: Path,
    config: MethodConfig,
    augment_config: AugmentConfig,
    prior_config: PriorConfig,
    *,
    masks: Path | None = None,
    augment: Path | None = None,
    bands: Path | None = None,
    prior: Path | None = None,
    work_dir: Path | None = None,
    losses: Path | None = None,
    device: str = "auto",
    callback: LossCallback | None = None,
) -> Path:
    """Train one concept on ``subject_dir``'s photos and write it to ``out``; returns ``out``.

    ``config`` is the method (its variant applied here); ``augment_config`` makes the reference views when no
    ``augment`` cache is given and ``prior_config`` the class images when no ``prior`` folder is given.

    ``losses``, when given, receives a copy of the work directory's ``losses.jsonl`` once the concept is
    written: an output of its own that does not depend on the scratch work directory surviving.
    """
    config = config.resolved()
    subject = discover_subject(subject_dir, class_noun)
    masks = masks if masks is not None else (subject.directory / "masks")
    work_dir = work_dir or out.with_name(out.name + "-work")
    claim_train_outputs(config, prior_config, subject.directory, out, work_dir, [masks, augment, bands, prior])
    for cache, schema in ((bands, BandsManifest), (augment, AugmentManifest)):
        if cache is not None:  # caches are valid by the photos' contents, not their names
            check_cache_inputs(cache, schema, subject, masks)
    torch_device = resolve_device(device)
    # The work directory (checkpoints, losses) is an output too: a second run there must refuse as well.
    with OutputLock(out), OutputLock(work_dir):
        components = load_components(config.model).to(torch_device)
        side = config.train.resolution
        class_prompt = prior_module.class_prompt(prior_config, class_noun)
        class_paths = class_images_for(config, prior_config, components, class_prompt, prior, work_dir / "prior")
        band_cache = None
        if bands is not None:
            band_cache = load_band_cache(bands, components.fingerprint, side, config.fdte, config.train.resize)
            if band_cache.pop("stems") != [p.stem for p in subject.photos]:
                raise DataError(f"{bands}: band cache was made from other photos than {subject.directory}")
        data = prepare_training_data(
            components.vae,
            subject,
            config,
            augment_config,
            class_paths,
            masks_dir=masks if masks.is_dir() else None,
            augment_dir=augment,
            band_cache=band_cache,
        ).to(torch_device)
        losses_log = work_dir / "losses.jsonl"

        def log_losses(step: int, values: dict[str, float]) -> None:
            losses_log.parent.mkdir(parents=True, exist_ok=True)
            with open(losses_log, "a", encoding="utf-8") as fh:  # an append-only log, not an artefact
                # "time": the wall clock of the step (s since the epoch), so trackers plot losses in real time
                fh.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
            if callback is not None:
                callback(step, values)

        recipe = EqDiffRecipe(
            config,
            components,
            data,
            class_noun,
            class_prompt,
            work_dir,
            log_losses,
            subject_name=subject.name,
        )
        recipe.setup()
        if is_finished(out, recipe.run_key, config.train.steps):
            logger.info("%s: up to date (same data, method and steps), not retrained", out)
        else:
            if recipe.resume():
                truncate_loss_log(losses_log, recipe.step)
            else:
                losses_log.unlink(missing_ok=True)
            recipe.train()
            recipe.save(out)
            logger.info("concept written to %s", out)
        if losses is not None:
            publish_losses(losses_log, losses)
    return out
