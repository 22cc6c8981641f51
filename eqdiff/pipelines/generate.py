"""The ``generate`` stage's work: sample a concept over named prompt sets into a samples folder.

Prompt sets are files of templates (``{}`` = the subject slot) under any name that is a valid folder name (the
paper's ``unstylized`` and ``stylized``, DreamBench's ``live``, ...); without any, the package's short demo lists.
Each image's generator comes from (seed, set, prompt index, sample index), so any image reproduces alone.
Layout: ``OUT/<set>/<prompt:03d>_<sample:02d>.png``, ``OUT/index.json`` (``eqdiff.io.schemas.samples.SampleIndex``)
and ``OUT/grid.png``. Images are written one by one, atomically; a re-run with the same
concept, prompts and settings keeps the images already there (no lost or duplicated images).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from eqdiff.config import GenerateConfig, ReferenceBackground, ReferenceText
from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError, OutputLock, save_png, write_json, write_text
from eqdiff.io.manifests import file_digest
from eqdiff.io.output_safety import claim_output, inside
from eqdiff.io.schemas.concept import ConceptManifest
from eqdiff.io.schemas.evaluation import check_prompt_set
from eqdiff.io.schemas.samples import SampleImage, SampleIndex
from eqdiff.method.prompts import builtin_prompt_file, read_prompt_file, remove_placeholder, subject_prompt, tokenize
from eqdiff.models.concept import WEIGHTS_FILE, has_reference_mask
from eqdiff.models.precision import inference_dtype, resolve_device
from eqdiff.pipelines.eqdiff_pipeline import EqDiffPipeline, image_generator
from eqdiff.pipelines.reference import grey_background
from eqdiff.prep.subjects import load_image

logger = logging.getLogger(__name__)

DEFAULT_SETS = {"unstylized": "demo_unstylized", "stylized": "demo_stylized"}


def parse_prompt_sets(specs: list[str]) -> dict[str, Path]:
    if not specs:
        return {name: builtin_prompt_file(file) for name, file in DEFAULT_SETS.items()}
    sets = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--prompts {spec!r}: expected SET=FILE, e.g. stylized=prompts/style.txt")
        if name in sets:
            raise DataError(f"--prompts {spec!r}: prompt set {name!r} is given twice")
        sets[check_prompt_set(name, "--prompts set")] = Path(path)
    return sets


def _grid(paths: list[Path], columns: int = 8, thumb: int = 128) -> Image.Image:
    rows = (len(paths) + columns - 1) // columns
    grid = Image.new("RGB", (min(len(paths), columns) * thumb, rows * thumb), (255, 255, 255))
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            grid.paste(image.convert("RGB").resize((thumb, thumb)), ((k % columns) * thumb, (k // columns) * thumb))
    return grid


def _check_grey_reference(concept: Path, reference: Path | None) -> None:
    """One line, before the base model is loaded, when ``reference_background: grey`` has no mask to use."""
    field = "generate.reference_background: grey"
    if reference is not None:
        raise DataError(f"{field} masks the concept's own reference, and --reference {reference} has no mask; "
                        "leave out --reference or use photo")  # fmt: skip
    if not has_reference_mask(concept):
        raise DataError(f"{field} needs the reference's mask, and the concept at {concept} was trained without "
                        "masks (or before concepts kept it); use photo")  # fmt: skip


def generate_samples(
    concept: Path,
    out: Path,
    config: GenerateConfig,
    prompt_sets: dict[str, Path] | None = None,
    reference: Path | None = None,
    device: str = "auto",
    model_settings: Mapping[str, Any] | None = None,
) -> Path:
    """Generate ``config.num_images_per_prompt`` images for every template of every prompt set into ``out``.

    The base model is the concept's own; ``model_settings`` (the params' ``model`` values, those set) may move its
    cache or allow downloads (``eqdiff.models.concept.concept_model``), and a value that would change it is refused.
    """
    prompt_sets = prompt_sets or parse_prompt_sets([])
    for name in prompt_sets:  # each name becomes a folder of ``out``; the params ``prompts:`` keys come here too
        check_prompt_set(name, "prompt set")
    reads = [concept, reference, *prompt_sets.values()]
    claim_output(out, "generate", manifest=".run_key", reads=reads)
    templates = {name: read_prompt_file(path) for name, path in prompt_sets.items()}
    for name, lines in templates.items():  # each image's seed index is set * 100000 + prompt index
        if len(lines) >= 100_000:
            raise DataError(f"{prompt_sets[name]}: {len(lines)} prompts, expected fewer than 100000 per set")
    grey = config.reference_background == ReferenceBackground.GREY
    if grey:
        _check_grey_reference(concept, reference)
    reference_image = load_image(reference) if reference is not None else None
    torch_device = resolve_device(device)
    dtype = inference_dtype(config.precision, torch_device)
    pipe = EqDiffPipeline.from_concept_dir(concept, device=torch_device, dtype=dtype, model_settings=model_settings)
    if config.compile:
        pipe.enable_compile()
    if grey:
        reference_image = grey_background(pipe.reference_image, pipe.reference_mask)
    manifest = ConceptManifest.read(concept / ConceptManifest.FILE)
    jobs = []
    for set_index, (name, lines) in enumerate(templates.items()):
        for prompt_index, template in enumerate(lines):
            prompt = subject_prompt(template, pipe.placeholder, manifest.class_noun)
            try:  # refuse an over-long prompt before anything is written, naming its line (docs/robustness.md)
                tokenize(pipe.tokenizer, [prompt])
            except DataError as exc:
                raise DataError(f"{prompt_sets[name]}:{prompt_index + 1}: {exc}") from None
            for sample in range(config.num_images_per_prompt):
                seed_index = set_index * 100_000 + prompt_index
                jobs.append(
                    {
                        "file": f"{name}/{prompt_index:03d}_{sample:02d}.png",
                        "prompt": prompt,
                        "template": template,
                        "prompt_set": name,
                        "prompt_index": prompt_index,
                        "sample_index": sample,
                        "seed": config.seed,
                        "seed_index": seed_index,
                    }
                )
    run_key = hashlib.sha256(
        repr(
            (
                file_digest(concept / WEIGHTS_FILE),
                sorted(vars(config).items()),
                jobs,
                file_digest(reference) if reference else None,
            )
        ).encode()
    ).hexdigest()[:16]
    with OutputLock(out):
        key_file = out / ".run_key"
        if out.is_dir() and not key_file.is_file() and any(out.iterdir()):
            raise ArtifactError(f"{out}: not an eqdiff samples folder (no .run_key); choose a new or empty --out")
        if out.exists() and (not key_file.is_file() or key_file.read_text().strip() != run_key):
            shutil.rmtree(out)  # another concept or other settings: nothing there can be reused
        write_text(key_file, run_key)
        missing = [job for job in jobs if not (out / job["file"]).is_file()]
        if len(missing) < len(jobs):
            logger.info("%s: %d of %d images already there, kept", out, len(jobs) - len(missing), len(jobs))
        # Batches are aligned to the full job list, so a resumed run computes each missing image in the very
        # batch an uninterrupted run used (CPU kernels may round differently at another batch size).
        chunks = [jobs[start : start + config.batch_size] for start in range(0, len(jobs), config.batch_size)]
        chunks = [chunk for chunk in chunks if any(job in missing for job in chunk)]
        bar = tqdm(total=len(missing), desc="generate", unit="image")
        for chunk in chunks:
            generators = [image_generator(config.seed, j["seed_index"], j["sample_index"]) for j in chunk]
            reference_prompt = None  # the concept's training reference prompt
            if config.reference_text == ReferenceText.PROMPT:
                reference_prompt = [remove_placeholder(j["prompt"], pipe.placeholder) for j in chunk]
            images = pipe(
                [j["prompt"] for j in chunk],
                generator=generators,
                reference_image=reference_image,
                reference_prompt=reference_prompt,
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                eta=config.eta,
                height=config.resolution,
                reference_noise=manifest.config["rra"]["reference_noise"],
                progress=False,
            ).images
            for job, image in zip(chunk, images, strict=True):
                if job in missing:
                    save_png(inside(out, job["file"], "generate"), image)
                    bar.update(1)
        bar.close()
        save_png(out / "grid.png", _grid([out / j["file"] for j in jobs]))
        index = SampleIndex(
            out,
            subject=manifest.subject or "",
            class_noun=manifest.class_noun,
            placeholder=pipe.placeholder,
            variant=manifest.variant,
            calibrated=manifest.config["model"]["preset"] == "sd-v1",  # random presets: noise
            images=tuple(SampleImage(**{k: v for k, v in j.items() if k != "seed_index"}) for j in jobs),
        )
        write_json(out / SampleIndex.FILE, index.to_json())
    logger.info("%d images in %s", len(jobs), out)
    return out
