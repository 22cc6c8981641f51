"""Class images for prior preservation (docs/method.md, Losses and optimisation; docs/official-code.md §1.1).

Two sources, one output layout (``<dir>/NNNN.png`` + ``<dir>/prior.json``, whose schema is
``eqdiff.io.schemas.stage_manifests.PriorManifest``):

* **generated** — the base model samples the class prompt (official: the class noun alone) with its default
  scheduler (PNDM, as official; ``prior.scheduler: ddim`` is the alternative),
  classifier-free guidance 7.5, in batches. Image i has its own CPU generator seeded from (seed, i), and
  batches are aligned to multiples of ``batch_size``, so a resumed run computes every missing image in exactly
  the batch an uninterrupted run would have used (CPU kernels may round differently at another batch size):
  resumed outputs are byte-identical. Existing valid images are kept; each image is written atomically.
* **real** — a user folder of real class images (``prior.real_images_dir``), validated and re-encoded to PNG.

The output directory is meant to persist across runs: **DVC must declare it ``persist: true``**, otherwise
``dvc repro`` deletes it before the stage runs and the resumability is lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline
from PIL import Image
from tqdm import tqdm

from eqdiff.config import ClassScheduler, ModelConfig, PriorConfig
from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError, OutputLock, save_png, staged_directory, write_json
from eqdiff.io.manifests import file_digest, is_up_to_date, normalised
from eqdiff.io.output_safety import inside
from eqdiff.io.schemas.stage_manifests import PriorManifest
from eqdiff.models.components import Components, load_components
from eqdiff.prep.subjects import image_files, load_image

logger = logging.getLogger(__name__)

MANIFEST_FILE = PriorManifest.FILE


def class_prompt(config: PriorConfig, class_noun: str) -> str:
    """The class prompt with ``{}`` replaced by the class noun (``"{}"`` -> ``"dog"``, as official)."""
    return config.class_prompt.replace("{}", class_noun.strip())


def image_seed(seed: int, index: int) -> int:
    """Seed of class image ``index``: independent of batch size and of which images already exist."""
    return int.from_bytes(hashlib.sha256(f"prior:{seed}:{index}".encode()).digest()[:8], "little")


def _image_name(index: int) -> str:
    return f"{index:04d}.png"


def _is_valid(path: Path, resolution: int) -> bool:
    if not path.is_file():
        return False
    try:
        return load_image(path).size == (resolution, resolution)
    except DataError:
        logger.warning("%s: unreadable class image, generating it again", path)
        return False


def _read_manifest(path: Path) -> PriorManifest | None:
    """The manifest at ``path``, or None when there is none or it is not one (it is remade)."""
    try:
        return PriorManifest.read(path)
    except ArtifactError:
        return None


def _claim_directory(out_dir: Path, key: dict[str, Any]) -> None:
    """Make ``out_dir`` hold only images of ``key``: images of another configuration are removed.

    Class images without a manifest are not ours to delete: that is an error naming the folder.
    """
    recorded = _read_manifest(out_dir / MANIFEST_FILE)
    if recorded is not None and recorded.key == normalised(key):
        return
    existing = sorted(out_dir.glob("[0-9][0-9][0-9][0-9].png"))
    if existing and recorded is None:
        raise ArtifactError(
            f"{out_dir}: holds class images without a {MANIFEST_FILE} manifest; remove them or "
            "use prior.real_images_dir"
        )
    if existing:
        logger.warning("%s: class images were made with other settings; generating them again", out_dir)
        for path in existing:
            path.unlink()
    # Written before any image, so a killed run leaves images attributed to the settings that made them.
    write_json(out_dir / MANIFEST_FILE, PriorManifest(key, ()).to_json())


SCHEDULERS = {ClassScheduler.PNDM: PNDMScheduler, ClassScheduler.DDIM: DDIMScheduler}
"""Class-image samplers. PNDM is SD v1.x's default scheduler, which the official recipe's pipeline used."""
SCHEDULER_OPTIONS = {ClassScheduler.PNDM: {"skip_prk_steps": True}, ClassScheduler.DDIM: {}}
"""SD v1.x's own ``scheduler_config.json`` sets ``skip_prk_steps`` (PLMS only); our configs are read as DDPM's."""


def build_pipeline(components: Components, scheduler: ClassScheduler = ClassScheduler.PNDM) -> StableDiffusionPipeline:
    """A stock SD pipeline over the base components with the chosen scheduler and no safety checker."""
    pipeline = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=SCHEDULERS[scheduler].from_config(components.noise_scheduler.config, **SCHEDULER_OPTIONS[scheduler]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample_class_images(
    pipeline: StableDiffusionPipeline,
    prompt: str,
    indices: Sequence[int],
    config: PriorConfig,
    resolution: int,
    output_type: str = "pil",
) -> list[Image.Image] | torch.Tensor:
    """Class images ``indices`` of ``prompt``, each from its own CPU generator (any image reproduces alone)."""
    generators = [torch.Generator("cpu").manual_seed(image_seed(config.seed, i)) for i in indices]
    return pipeline(
        prompt=[prompt] * len(indices),
        height=resolution,
        width=resolution,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        generator=generators,
        output_type=output_type,
    ).images


def generate_class_images(
    components: Components,
    prompt: str,
    out_dir: str | Path,
    num_images: int,
    config: PriorConfig,
    resolution: int,
) -> list[Path]:
    """Sample ``num_images`` class images of ``prompt`` into ``out_dir/NNNN.png`` (RGB, resolution^2).

    Resumable: valid images already there (made with the same prompt, model, steps, guidance, seed and
    resolution, per ``prior.json``) are kept; the others are generated and written one by one, atomically.
    Returns the ``num_images`` paths in index order.
    """
    out_dir = Path(out_dir)
    key = {
        "mode": "generated",
        "prompt": prompt,
        "fingerprint": components.fingerprint,
        "resolution": resolution,
        "scheduler": config.scheduler.value,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "seed": config.seed,
    }
    paths = [out_dir / _image_name(i) for i in range(num_images)]
    with OutputLock(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        _claim_directory(out_dir, key)
        missing = {i for i, path in enumerate(paths) if not _is_valid(path, resolution)}
        batches = [range(s, min(s + config.batch_size, num_images)) for s in range(0, num_images, config.batch_size)]
        batches = [b for b in batches if missing.intersection(b)]
        if batches:
            pipeline = build_pipeline(components, config.scheduler)
            for batch in tqdm(batches, desc="prior", unit="batch"):
                images = sample_class_images(pipeline, prompt, batch, config, resolution)
                for index, image in zip(batch, images, strict=True):
                    if index in missing:
                        save_png(paths[index], image)
        manifest = PriorManifest(normalised(key), tuple(p.name for p in paths))
        if _read_manifest(out_dir / MANIFEST_FILE) != manifest:
            write_json(out_dir / MANIFEST_FILE, manifest.to_json())
    logger.info("%s: %d class images (%d generated now)", out_dir, num_images, len(missing))
    return paths


def copy_real_class_images(source_dir: str | Path, out_dir: str | Path, num_images: int) -> list[Path]:
    """Validate the first ``num_images`` images of ``source_dir`` (sorted by name) and re-encode them to PNG.

    Images keep their size (8-bit RGB, EXIF orientation applied); training crops them. Fewer images than
    asked, or any bad file, is a one-line DataError; nothing is written until every image has been read.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: prior.real_images_dir is not a folder")
    sources = list(image_files(source_dir))
    if len(sources) < num_images:
        raise DataError(
            f"{source_dir}: found {len(sources)} class image(s), expected at least {num_images} "
            "(train.num_class_images)"
        )
    sources = sources[:num_images]
    key = {"mode": "real", "inputs": {p.name: file_digest(p) for p in sources}}
    paths = [out_dir / _image_name(i) for i in range(num_images)]
    if is_up_to_date(out_dir / MANIFEST_FILE, key, paths, PriorManifest):
        logger.info("%s: up to date, nothing rewritten", out_dir)
        return paths
    # No progress bar while validating: an error must stay a single stderr line (docs/robustness.md).
    images = [load_image(p) for p in sources]
    with OutputLock(out_dir), staged_directory(out_dir) as staging:
        for path, image in tqdm(list(zip(paths, images, strict=True)), desc="prior (copy)", unit="image"):
            save_png(staging / path.name, image)
        manifest = PriorManifest(key, tuple(p.name for p in paths), tuple(p.name for p in sources))
        write_json(staging / MANIFEST_FILE, manifest.to_json())
    return paths


def prepare_class_images(
    class_noun: str,
    out_dir: str | Path,
    num_images: int,
    config: PriorConfig,
    model: ModelConfig,
    resolution: int,
) -> list[Path]:
    """The ``prior`` stage: copy ``config.real_images_dir`` when set, else generate with the base model."""
    if not class_noun or not class_noun.strip():
        raise DataError("--class-noun: expected a class noun such as 'dog' or 'toy'")
    if config.real_images_dir is not None:
        return copy_real_class_images(Path(config.real_images_dir).expanduser(), out_dir, num_images)
    components = load_components(model)
    if torch.cuda.is_available():
        components.to("cuda")
    return generate_class_images(components, class_prompt(config, class_noun), out_dir, num_images, config, resolution)


def load_class_images(directory: str | Path, num: int) -> list[Path]:
    """The first ``num`` class images listed in ``<directory>/prior.json``; ArtifactError when fewer."""
    directory = Path(directory)
    try:
        manifest = PriorManifest.read(directory / MANIFEST_FILE)
    except ArtifactError as exc:
        raise ArtifactError(f"{exc} (run `eqdiff prior`)") from None
    where = f"{directory / MANIFEST_FILE}: images"
    paths = [inside(directory, name, where) for name in manifest.images]
    if len(paths) < num:
        raise ArtifactError(f"{directory}: holds {len(paths)} class image(s), expected at least {num}")
    for path in paths[:num]:
        if not path.is_file():
            raise ArtifactError(f"{path}: class image listed in {MANIFEST_FILE} is missing (re-run `eqdiff prior`)")
    return paths[:num]
