"""Typed, frozen configuration: one dataclass per ``params.yaml`` section (DESIGN §3, STYLE rule 4).

Every section is built with ``Section(**mapping)``, so an unknown key fails loudly; cross-field checks live in
``__post_init__``; derived values are properties and are never written back, so what is logged is what ran.
``ConfigError`` carries a one-line message naming the field (``fdte.p_l``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eqdiff.errors import EqDiffError


class ConfigError(EqDiffError, ValueError):
    """A params file or section is invalid; the message names the field and what was expected."""


class FilterShape(enum.StrEnum):
    BOX = "box"
    CIRCLE = "circle"


class BandColour(enum.StrEnum):
    GREY = "grey"
    RGB = "rgb"


class BandOutput(enum.StrEnum):
    ABS = "abs"
    REAL = "real"


class MgdpMode(enum.StrEnum):
    OFF = "off"
    MASKED_LOSS = "masked_loss"
    MGDP = "mgdp"


class ReferenceNoise(enum.StrEnum):
    CLEAN = "clean"
    NOISED = "noised"


class MixedPrecision(enum.StrEnum):
    AUTO = "auto"
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


def _check(condition: bool, section: str, name: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{section}.{name}: expected {expected}, got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(section: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """Type-check one field value against its annotation (ints are accepted where floats are expected)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = " | ".join(m.value for m in hint)
            raise ConfigError(f"{section}.{f.name}: expected one of {choices}, got {value!r}") from None
    if hint is bool:
        _check(isinstance(value, bool), section, f.name, "true or false", value)
    elif hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), section, f.name, "an integer", value)
    elif hint is float:
        # Not math.isfinite: it raises OverflowError on an int beyond float range (10**400); this refuses it.
        ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= sys.float_info.max
        _check(ok, section, f.name, "a finite number", value)
        return float(value)
    elif hint is str:
        _check(isinstance(value, str), section, f.name, "a string", value)
    elif origin is tuple:
        _check(isinstance(value, list | tuple), section, f.name, "a list", value)
        return tuple(value)
    return value


class Section:
    """Mixin: type coercion of every field, then the section's own ``validate``."""

    SECTION = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(self.SECTION, f, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError."""

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> typing.Self:
        if mapping is not None and not isinstance(mapping, dict):
            raise ConfigError(f"{cls.SECTION}: expected a mapping of keys, got {mapping!r}")
        mapping = dict(mapping or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known, key=str)  # YAML keys may be ints, bools or null
        if unknown:
            key = unknown[0] if isinstance(unknown[0], str) and unknown[0].isprintable() else repr(unknown[0])
            raise ConfigError(f"{cls.SECTION}.{key}: unknown key (known keys: {', '.join(sorted(known))})")
        return cls(**mapping)


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which base model to build or load (DESIGN §2)."""

    SECTION = "model"
    preset: str = "tiny"
    """``tiny`` (seeded random weights, SD v1.x architecture, small widths), ``sd-v1-random`` (the same at full
    SD v1.x size, for benchmarks) or ``sd-v1`` (a diffusers directory of real weights)."""
    path: str | None = None
    """For ``sd-v1``: a local diffusers directory, or a hub id when ``allow_download`` is true."""
    allow_download: bool = False
    """Allow ``path`` to be a hub id fetched over the network; off by default (nothing downloads)."""
    seed: int = 0
    """Seed of the tiny preset's random weights."""
    cache_dir: str | None = None
    """Where the tiny preset is saved once and loaded back from (default ``~/.cache/eqdiff``)."""

    def validate(self) -> None:
        presets = ("tiny", "sd-v1-random", "sd-v1")
        _check(self.preset in presets, "model", "preset", " | ".join(presets), self.preset)
        if self.preset == "sd-v1":
            _check(bool(self.path), "model", "path", "a local diffusers directory for preset sd-v1", self.path)


@dataclass(frozen=True)
class ConceptConfig(Section):
    """The learned concept's token (DESIGN §4.1)."""

    SECTION = "concept"
    placeholder: str = "<new1>"
    """New token added to the tokenizer; must not already be in the vocabulary."""
    initializer_token: str = "ktn"
    """Vocabulary entry (not the BPE of a word) whose embedding row initialises S_LF and S_HF."""

    def validate(self) -> None:
        _check(
            bool(self.placeholder.strip()) and " " not in self.placeholder,
            "concept",
            "placeholder",
            "a non-empty token without spaces",
            self.placeholder,
        )


@dataclass(frozen=True)
class FdteConfig(Section):
    """Frequency-aware decoupled textual embedding (DESIGN §4.1)."""

    SECTION = "fdte"
    enabled: bool = True
    """Two frequency vectors S_LF, S_HF; off = one learned vector injected in every row."""
    shape: FilterShape = FilterShape.BOX
    """Frequency mask shape: ``box`` (official) or ``circle`` (paper)."""
    colour: BandColour = BandColour.GREY
    """``grey`` (channel mean, official) or ``rgb``."""
    output: BandOutput = BandOutput.ABS
    """``abs`` (complex modulus, official) or ``real``."""
    cutoff_low: float = 50.0
    """Kept half-width of the low-pass, frequency-index units at 512 px (scaled with the image size)."""
    cutoff_high: float = 5.0
    """Removed half-width of the high-pass, frequency-index units at 512 px."""
    p_l: float = 0.1
    """Probability that a row trains on its LOW band with S_LF."""
    p_h: float = 0.1
    """Probability that a row trains on its HIGH band with S_HF."""
    p_o: float = 0.8
    """Probability that a row trains on the original image with S_ori = S_LF + S_HF."""
    apply_to_prior: bool = True
    """Draw bands for prior rows too (official)."""

    def validate(self) -> None:
        for name in ("p_l", "p_h", "p_o"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, "fdte", name, "a probability in [0, 1]", value)
        total = self.p_l + self.p_h + self.p_o
        _check(abs(total - 1.0) < 1e-6, "fdte", "p_l", f"p_l + p_h + p_o = 1 (they sum to {total:g})", self.p_l)
        # Nyquist at 512 px is 256 frequency indices (DESIGN §4.1, §6).
        for name in ("cutoff_low", "cutoff_high"):
            value = getattr(self, name)
            _check(0.0 < value <= 256.0, "fdte", name, "a cutoff in (0, 256] (Nyquist at 512 px)", value)


@dataclass(frozen=True)
class MgdpConfig(Section):
    """Mask-guided diffusion process (DESIGN §4.2)."""

    SECTION = "mgdp"
    mode: MgdpMode = MgdpMode.MGDP
    """``off`` (plain loss), ``masked_loss`` (MDL ablation) or ``mgdp`` (composition + masked loss)."""
    dilate_radius: int = 10
    """Chebyshev radius of the mask dilation in latent pixels (official: 5 × 5×5 max-pool = 10)."""

    def validate(self) -> None:
        _check(self.dilate_radius >= 0, "mgdp", "dilate_radius", "an integer >= 0", self.dilate_radius)


@dataclass(frozen=True)
class RraConfig(Section):
    """Residual reference attention (DESIGN §4.3, §4.6)."""

    SECTION = "rra"
    enabled: bool = True
    """Install RRA on the mid+up self-attention layers and run the reference pass."""
    time_gap: int = 2
    """Training reference timestep t_ref = max(t - time_gap, 0)."""
    reference_noise: ReferenceNoise = ReferenceNoise.CLEAN
    """Inference reference latent: ``clean`` posterior mean (official) or ``noised`` to the current t."""

    def validate(self) -> None:
        _check(self.time_gap >= 0, "rra", "time_gap", "an integer >= 0", self.time_gap)


@dataclass(frozen=True)
class LossConfig(Section):
    """Loss weights (DESIGN §4.2-§4.3)."""

    SECTION = "losses"
    prior_loss_weight: float = 1.0
    """Weight of the prior-preservation MSE."""
    reference_attention: float = 0.1
    """Weight of L_ra (reference-attention mask loss); 0 turns it off."""
    cross_attention: float = 0.1
    """Weight of L_ca (Break-a-Scene cross-attention loss, official); 0 turns it off."""

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name) >= 0, "losses", f.name, "a weight >= 0", getattr(self, f.name))


VARIANTS: dict[str, dict[str, Any]] = {
    # The paper's ablation (Table 2), as data: each variant is a set of overrides on the full method.
    "A": {
        "rra.enabled": False,
        "losses.reference_attention": 0.0,
        "losses.cross_attention": 0.0,
        "fdte.enabled": False,
        "mgdp.mode": "off",
    },
    "B": {"losses.reference_attention": 0.0, "losses.cross_attention": 0.0, "fdte.enabled": False, "mgdp.mode": "off"},
    "C": {"fdte.enabled": False, "mgdp.mode": "off"},
    "D": {"mgdp.mode": "off"},
    "E": {"mgdp.mode": "masked_loss"},
    "F": {},
}
"""Ablation presets A-F (DESIGN §4.4): A = Custom Diffusion, B = +RRA, C = +L_ra (and the official L_ca),
D = +FDTE, E = D + MDL, F = D + MGDP (the full method)."""


@dataclass(frozen=True)
class TrainConfig(Section):
    """The training recipe (DESIGN §4.4)."""

    SECTION = "train"
    variant: str = "F"
    """Ablation preset A-F applied on top of the sections (see ``VARIANTS``)."""
    steps: int = 600
    """Optimisation steps."""
    resolution: int = 512
    """Training image side in pixels (the tiny preset uses 64)."""
    batch_size: int = 2
    """Instance rows per step (plus as many prior rows when prior preservation is on)."""
    with_prior_preservation: bool = True
    """Add class-image rows with the plain class prompt."""
    num_class_images: int = 200
    """Class images used for prior preservation."""
    learning_rate: float = 4e-5
    """AdamW learning rate, constant (the paper's 1e-5 scaled x batch 2 x 2 for prior, as official)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_weight_decay: float = 1e-2
    """AdamW decoupled weight decay."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping over all trainable parameters (0 = off)."""
    seed: int = 42
    """Seed of every random draw in training."""
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    """``auto`` = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in backward to save memory."""
    compile: bool = False
    """Run the UNet through ``torch.compile`` (falls back to eager, with a warning, where compiling fails)."""
    checkpointing_steps: int = 100
    """Write a resumable checkpoint every N steps (0 = only at the end)."""
    checkpoints_total_limit: int = 2
    """Keep at most this many checkpoints."""
    validation_steps: int = 0
    """Write validation images every N steps (0 = never)."""
    instance_prompt: str = "photo of a {}"
    """Training prompt of the subject's photos; ``{}`` is the subject slot (placeholder + class noun)."""
    validation_prompt: str = "a {} on the beach"
    """Validation prompt; ``{}`` is the subject slot (placeholder + class noun)."""
    log_every: int = 1
    """Hand loss components to the callback every N steps (each one costs a host-device sync)."""

    def validate(self) -> None:
        _check(self.variant in VARIANTS, "train", "variant", "one of A | B | C | D | E | F", self.variant)
        for name in ("steps", "resolution", "batch_size", "num_class_images", "log_every"):
            _check(getattr(self, name) > 0, "train", name, "an integer > 0", getattr(self, name))
        for name in ("checkpointing_steps", "validation_steps", "checkpoints_total_limit"):
            _check(getattr(self, name) >= 0, "train", name, "an integer >= 0", getattr(self, name))
        _check(self.resolution % 8 == 0, "train", "resolution", "a multiple of 8", self.resolution)
        _check(self.learning_rate > 0, "train", "learning_rate", "a number > 0", self.learning_rate)
        _check(self.max_grad_norm >= 0, "train", "max_grad_norm", "a number >= 0", self.max_grad_norm)
        for name in ("instance_prompt", "validation_prompt"):
            _check("{}" in getattr(self, name), "train", name, "a prompt with a {} slot", getattr(self, name))


@dataclass(frozen=True)
class GenerateConfig(Section):
    """Sampling (DESIGN §4.6)."""

    SECTION = "generate"
    num_inference_steps: int = 50
    """DDIM steps."""
    guidance_scale: float = 12.5
    """Classifier-free guidance weight."""
    eta: float = 0.0
    """DDIM eta."""
    num_images_per_prompt: int = 1
    """Images per prompt."""
    batch_size: int = 1
    """Images per UNet call. At 1 every image is bitwise reproducible alone; larger batches are faster on a GPU
    but batched kernels may round differently, so an image regenerated alone can differ in the last bits."""
    seed: int = 0
    """Base seed; each image's generator is derived from (seed, prompt index, sample index)."""
    resolution: int | None = None
    """Image side; default = the training resolution of the concept."""
    compile: bool = False
    """Run the UNet through ``torch.compile`` (falls back to eager, with a warning, where compiling fails)."""
    precision: MixedPrecision = MixedPrecision.AUTO
    """Weights' dtype on CUDA: ``auto`` = bf16 (fp16 where bf16 is unsupported); always fp32 on CPU."""

    def validate(self) -> None:
        for name in ("num_inference_steps", "num_images_per_prompt", "batch_size"):
            _check(getattr(self, name) > 0, "generate", name, "an integer > 0", getattr(self, name))
        _check(self.guidance_scale >= 1.0, "generate", "guidance_scale", "a number >= 1", self.guidance_scale)
        _check(0.0 <= self.eta <= 1.0, "generate", "eta", "a number in [0, 1]", self.eta)
        if self.resolution is not None:
            _check(
                self.resolution % 8 == 0 and self.resolution > 0,
                "generate",
                "resolution",
                "a positive multiple of 8",
                self.resolution,
            )


def _check_range(section: str, name: str, value: tuple, lowest: float, highest: float) -> None:
    ok = (
        len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and lowest <= value[0] <= value[1] <= highest
    )
    _check(ok, section, name, f"[low, high] with {lowest:g} <= low <= high <= {highest:g}", list(value))


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Reference views of the instance photos (DESIGN §4.5; official Custom Diffusion zoom rule)."""

    SECTION = "augment"
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


@dataclass(frozen=True)
class PriorConfig(Section):
    """Class images for prior preservation (DESIGN §4.4; official §1.1)."""

    SECTION = "prior"
    class_prompt: str = "{}"
    """Prompt of the generated class images; ``{}`` is replaced by the class noun (official: the noun)."""
    num_inference_steps: int = 50
    """DDIM steps per class image."""
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
    """Evaluation models (DESIGN §5): CLIP ViT-B/32 and DINO ViT-S/16 from local directories."""

    SECTION = "evaluate"
    clip_model: str | None = None
    """Local transformers directory of CLIP ViT-B/32 (null = seeded random weights, uncalibrated)."""
    dino_model: str | None = None
    """Local transformers directory of DINO ViT-S/16 (null = seeded random weights, uncalibrated)."""
    batch_size: int = 16
    """Images per forward pass."""
    seed: int = 0
    """Seed of the random weights used where a model directory is null."""

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
    """Subject masks (DESIGN §2, §4.2): the backend, its thresholds and its local model files."""

    SECTION = "masks"
    backend: MaskBackend = MaskBackend.U2NETP
    """``u2netp`` (offline default, shipped in a wheel), ``grounded-sam`` (text-prompted) or ``files``."""
    threshold: float = 0.5
    """u2netp: foreground where the min-max-normalised saliency is >= this value."""
    max_foreground_warn: float = 0.95
    """A mask covering more than this fraction of its photo is reported as a warning."""
    files_dir: str | None = None
    """``files`` backend: folder of the user's masks, ``<photo stem>.png`` (or ``.jpg``) per photo."""
    grounding_dino_config: str | None = None
    """``grounded-sam``: local GroundingDINO config file (e.g. ``GroundingDINO_SwinT_OGC.py``)."""
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
    """Where runs are tracked and how flows fan out (DESIGN §3); read by ``tasks/`` and ``flows/`` only."""

    SECTION = "orchestration"
    tracking_uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI (default: a SQLite store in the project directory)."""
    experiment: str = "eqdiff"
    """MLflow experiment name."""
    dask_address: str | None = None
    """Address of an existing Dask scheduler (``tcp://host:8786``); null = start a local cluster."""
    n_workers: int = 2
    """Local cluster workers; where GPUs exist, one worker per GPU (at most this many)."""
    cron: str = "0 3 * * *"
    """Cron schedule of the served benchmark deployment."""

    def validate(self) -> None:
        _check(bool(self.tracking_uri.strip()), "orchestration", "tracking_uri", "an MLflow URI", self.tracking_uri)
        _check(bool(self.experiment.strip()), "orchestration", "experiment", "a non-empty name", self.experiment)
        _check(self.n_workers > 0, "orchestration", "n_workers", "an integer > 0", self.n_workers)
        _check(len(self.cron.split()) == 5, "orchestration", "cron", "a 5-field cron expression", self.cron)
        if self.dask_address is not None:
            _check(
                "://" in self.dask_address,
                "orchestration",
                "dask_address",
                "tcp://host:port or null",
                self.dask_address,
            )


METHOD_SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig,
    "concept": ConceptConfig,
    "fdte": FdteConfig,
    "mgdp": MgdpConfig,
    "rra": RraConfig,
    "losses": LossConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
}


@dataclass(frozen=True)
class MethodConfig:
    """The sections that define a training run and its concept; ``resolved()`` applies the variant."""

    model: ModelConfig = field(default_factory=ModelConfig)
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    fdte: FdteConfig = field(default_factory=FdteConfig)
    mgdp: MgdpConfig = field(default_factory=MgdpConfig)
    rra: RraConfig = field(default_factory=RraConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> MethodConfig:
        """Build from a params mapping; sections that are not method sections are ignored here."""
        sections = {}
        for name, section_cls in METHOD_SECTIONS.items():
            value = params.get(name)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping of keys, got {value!r}")
            sections[name] = section_cls.from_mapping(value)
        return cls(**sections)

    def resolved(self) -> MethodConfig:
        """This config with ``train.variant``'s overrides applied (what actually runs)."""
        return apply_overrides(self, VARIANTS[self.train.variant])

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section_to_dict(getattr(self, name)) for name in METHOD_SECTIONS}


def section_to_dict(section: Section) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out


def apply_overrides(config: MethodConfig, overrides: dict[str, Any]) -> MethodConfig:
    """Return ``config`` with dotted ``section.key`` overrides applied and re-validated."""
    sections = config.to_dict()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections or key not in sections[section]:
            raise ConfigError(f"{dotted}: unknown parameter")
        sections[section][key] = value
    return MethodConfig.from_dict(sections)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` (value in YAML syntax), as in ``dvc exp run -S``."""
    dotted, sep, raw = text.partition("=")
    if not sep or "." not in dotted:
        raise ConfigError(f"{text}: expected an override of the form section.key=value")
    return dotted.strip(), yaml.safe_load(raw)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a mapping; a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data
