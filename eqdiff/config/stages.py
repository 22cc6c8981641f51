"""Params sections of the preparation, evaluation and orchestration stages (docs/architecture.md, Offline models and
data; docs/method.md, Data and batch, Evaluation)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eqdiff.config.base import MAX_SEED, NUM_TRAIN_TIMESTEPS, Section, _check, _check_range


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Reference views of the instance photos (docs/method.md, Data and batch; official Custom Diffusion zoom rule)."""

    SECTION = "augment"
    LIMITS = {
        "views_per_photo": (1, 1000, "views are materialised on disk"),
        "seed": (0, MAX_SEED, "a seed torch and NumPy accept"),
    }
    views_per_photo: int = 4
    """Fixed, seeded reference views materialised per photo."""
    seed: int = 0
    """Seed of the views; each photo's views derive from (seed, file stem)."""
    zoom_out_prob: float = 0.66
    """Probability of a zoom-out view (else zoom-in), official ~0.66."""
    zoom_out_scale: tuple[float, float] = (170.0, 512.0)
    """Zoom-out side range at 512 px (scaled with the image side); the photo is pasted on a grey canvas."""
    zoom_in_scale: tuple[float, float] = (614.0, 716.0)
    """Zoom-in side range at 512 px (scaled with the image side); a random crop of the enlarged photo."""
    hflip: bool = False
    """Flip each view horizontally with probability 0.5 (off, as official)."""
    rotation_degrees: float = 0.0
    """Rotate each view by an angle drawn from U[-r, r] degrees (0 = off, as official)."""

    def validate(self) -> None:
        _check(self.views_per_photo > 0, "augment", "views_per_photo", "an integer > 0", self.views_per_photo)
        _check(
            0.0 <= self.zoom_out_prob <= 1.0, "augment", "zoom_out_prob", "a probability in [0, 1]", self.zoom_out_prob
        )
        _check_range("augment", "zoom_out_scale", self.zoom_out_scale, 1.0, 512.0)
        _check_range("augment", "zoom_in_scale", self.zoom_in_scale, 512.0, 4096.0)
        _check(
            0.0 <= self.rotation_degrees <= 180.0,
            "augment",
            "rotation_degrees",
            "degrees in [0, 180]",
            self.rotation_degrees,
        )


class ClassScheduler(enum.StrEnum):
    PNDM = "pndm"
    DDIM = "ddim"


@dataclass(frozen=True)
class PriorConfig(Section):
    """Class images for prior preservation (docs/method.md, Losses and optimisation; docs/official-code.md §1.1)."""

    SECTION = "prior"
    LIMITS = {
        "num_inference_steps": (1, NUM_TRAIN_TIMESTEPS, "the scheduler's num_train_timesteps"),
        "guidance_scale": (1, 100, "larger values saturate the images and far larger overflow to NaN"),
        "batch_size": (1, 256, "activation memory grows with it"),
        "seed": (0, MAX_SEED, "a seed torch and NumPy accept"),
    }
    class_prompt: str = "{}"
    """Prompt of the generated class images; ``{}`` is replaced by the class noun (official: the noun)."""
    scheduler: ClassScheduler = ClassScheduler.PNDM
    """Sampler of the class images: ``pndm`` (the base model's default, as official) or ``ddim``."""
    num_inference_steps: int = 50
    """Sampler steps per class image."""
    guidance_scale: float = 7.5
    """Classifier-free guidance weight (official: the pipeline default 7.5)."""
    batch_size: int = 4
    """Class images per pipeline call (official ``--sample_batch_size`` 4)."""
    seed: int = 0
    """Base seed; image i gets its own generator seeded from (seed, i), so a resumed run repeats it."""
    real_images_dir: str | None = None
    """A folder of real class images to validate and copy instead of generating (null = generate)."""

    def validate(self) -> None:
        _check(bool(self.class_prompt.strip()), "prior", "class_prompt", "a non-empty prompt", self.class_prompt)
        for name in ("num_inference_steps", "batch_size"):
            _check(getattr(self, name) > 0, "prior", name, "an integer > 0", getattr(self, name))
        _check(self.guidance_scale >= 1.0, "prior", "guidance_scale", "a number >= 1", self.guidance_scale)
        if self.real_images_dir is not None:
            _check(
                bool(self.real_images_dir.strip()),
                "prior",
                "real_images_dir",
                "a folder path or null",
                self.real_images_dir,
            )


@dataclass(frozen=True)
class EvaluateConfig(Section):
    """Evaluation models (docs/method.md, Evaluation): CLIP ViT-B/32 and DINO ViT-S/16 from local directories."""

    SECTION = "evaluate"
    LIMITS = {
        "batch_size": (1, 4096, "activation memory grows with it"),
        "seed": (0, MAX_SEED, "a seed torch and NumPy accept"),
    }
    clip_model: str | None = None
    """Local transformers directory of CLIP ViT-B/32 (null = seeded random weights, uncalibrated)."""
    dino_model: str | None = None
    """Local transformers directory of DINO ViT-S/16 (null = seeded random weights, uncalibrated)."""
    batch_size: int = 16
    """Images per forward pass."""
    seed: int = 0
    """Seed of the random weights used where a model directory is null."""
    world: bool = False
    """Also the world-native metrics (world_text, world_identity, world_identity_match), for the world preset."""

    def validate(self) -> None:
        _check(self.batch_size > 0, "evaluate", "batch_size", "an integer > 0", self.batch_size)
        for name in ("clip_model", "dino_model"):
            value = getattr(self, name)
            _check(value is None or bool(value.strip()), "evaluate", name, "a directory path or null", value)


class MaskBackend(enum.StrEnum):
    U2NETP = "u2netp"
    GROUNDED_SAM = "grounded-sam"
    FILES = "files"


@dataclass(frozen=True)
class MasksConfig(Section):
    """Subject masks (docs/architecture.md, Offline models and data; docs/method.md, MGDP): the backend, its
    thresholds and its local model files."""

    SECTION = "masks"
    LIMITS = {"detection_size": (32, 2048, "GroundingDINO's memory grows with its square")}
    backend: MaskBackend = MaskBackend.U2NETP
    """``u2netp`` (offline default, shipped in a wheel), ``grounded-sam`` (text-prompted) or ``files``."""
    threshold: float = 0.5
    """u2netp: foreground where the min-max-normalised saliency is >= this value."""
    refine: bool = True
    """u2netp: refine the masks across the subject's photos (``eqdiff.prep.mask_refine``); false = plain U²-Netp."""
    max_foreground_warn: float = 0.95
    """A mask covering more than this fraction of its photo is reported as a warning."""
    files_dir: str | None = None
    """``files`` backend: folder of the user's masks, ``<photo stem>.png`` (or ``.jpg``) per photo;
    ``{subject_dir}`` stands for each subject's folder (``{subject_dir}/masks``)."""
    grounding_dino_config: str | None = None
    """``grounded-sam``: a config shipped with groundingdino-py by name (``GroundingDINO_SwinT_OGC``) or a local
    config file of ``name = literal`` lines, read without running it."""
    grounding_dino_checkpoint: str | None = None
    """``grounded-sam``: local GroundingDINO checkpoint (``.pth``, loaded with ``weights_only=True``)."""
    sam_checkpoint: str | None = None
    """``grounded-sam``: local SAM checkpoint (``.pth`` state dict, loaded with ``weights_only=True``)."""
    sam_model_type: str = "vit_h"
    """``grounded-sam``: key of ``segment_anything.sam_model_registry`` matching ``sam_checkpoint``."""
    text_encoder_dir: str | None = None
    """``grounded-sam``: local BERT directory (config, vocab) for GroundingDINO's text encoder; never a hub id."""
    box_threshold: float = 0.35
    """``grounded-sam``: a box is kept when its best class-noun token probability exceeds this."""
    text_threshold: float = 0.25
    """``grounded-sam``: and when at least one class-noun token probability exceeds this."""
    detection_size: int = 800
    """``grounded-sam``: short side of GroundingDINO's input in pixels (its own default 800; long side <= 5/3 x)."""

    def validate(self) -> None:
        _check(0.0 < self.threshold < 1.0, "masks", "threshold", "a number in (0, 1)", self.threshold)
        _check(
            0.0 < self.max_foreground_warn <= 1.0,
            "masks",
            "max_foreground_warn",
            "a fraction in (0, 1]",
            self.max_foreground_warn,
        )
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, "masks", name, "a probability in [0, 1)", value)
        _check(self.detection_size >= 32, "masks", "detection_size", "an integer >= 32", self.detection_size)
        _check(
            bool(self.sam_model_type.strip()),
            "masks",
            "sam_model_type",
            "a SAM model type (vit_h, ...)",
            self.sam_model_type,
        )
        required = {
            MaskBackend.FILES: ("files_dir",),
            MaskBackend.GROUNDED_SAM: (
                "grounding_dino_config",
                "grounding_dino_checkpoint",
                "sam_checkpoint",
                "text_encoder_dir",
            ),
        }.get(self.backend, ())
        for name in required:
            value = getattr(self, name)
            _check(
                value is not None and bool(value.strip()),
                "masks",
                name,
                f"a local path (required by backend {self.backend.value})",
                value,
            )


@dataclass(frozen=True)
class OrchestrationConfig(Section):
    """Where runs are tracked and how flows fan out (docs/architecture.md, Stages); read by ``tasks/`` and ``flows/``
    only."""

    SECTION = "orchestration"
    LIMITS = {"n_workers": (1, 1024, "local Dask workers, each a process")}
    tracking_uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI (default: a SQLite store in the project directory)."""
    experiment: str = "eqdiff"
    """MLflow experiment name."""
    dask_address: str | None = None
    """Address of an existing Dask scheduler (``tcp://host:8786``); null = start a local cluster."""
    n_workers: int = 2
    """Local cluster workers; where GPUs exist, one worker per GPU (at most this many)."""
    store: str | None = None
    """Absolute directory that the flow's machine and every Dask worker mount at this same path (a shared
    filesystem): the flows' ``runs/`` and ``reports/`` go there and subject photos and prompt files are copied
    there first; null = the flow's working directory, nothing copied."""
    cron: str = "0 3 * * *"
    """Cron schedule of the served benchmark deployment."""

    def validate(self) -> None:
        _check(bool(self.tracking_uri.strip()), "orchestration", "tracking_uri", "an MLflow URI", self.tracking_uri)
        _check(bool(self.experiment.strip()), "orchestration", "experiment", "a non-empty name", self.experiment)
        _check(self.n_workers > 0, "orchestration", "n_workers", "an integer > 0", self.n_workers)
        _check(len(self.cron.split()) == 5, "orchestration", "cron", "a 5-field cron expression", self.cron)
        if self.store is not None:
            _check(self.store.startswith("/"), "orchestration", "store", "an absolute path or null", self.store)
        if self.dask_address is not None:
            _check(
                "://" in self.dask_address,
                "orchestration",
                "dask_address",
                "tcp://host:port or null",
                self.dask_address,
            )
