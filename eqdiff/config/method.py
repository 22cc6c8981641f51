"""The method's params sections (docs/method.md) and ``MethodConfig``, which applies an ablation variant."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from eqdiff.config.base import MAX_SEED, NUM_TRAIN_TIMESTEPS, ConfigError, Section, _check, section_to_dict
from eqdiff.config.variants import VARIANTS


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


class ResizeMode(enum.StrEnum):
    CROP = "crop"
    SQUASH = "squash"


class ReferenceText(enum.StrEnum):
    INSTANCE = "instance"
    PROMPT = "prompt"


class ReferenceBackground(enum.StrEnum):
    PHOTO = "photo"
    GREY = "grey"


class MixedPrecision(enum.StrEnum):
    AUTO = "auto"
    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which base model to build or load (docs/architecture.md, Offline models and data)."""

    SECTION = "model"
    LIMITS = {"seed": (0, MAX_SEED, "a seed torch and NumPy accept")}
    preset: str = "tiny"
    """``tiny`` (seeded random weights, SD v1.x architecture, small widths), ``world`` (the base model trained on
    the procedural world, docs/world.md; ``path`` null = the shipped weights), ``sd-v1-random`` (random weights at
    full SD v1.x size, for benchmarks) or ``sd-v1`` (real weights at ``path``)."""
    path: str | None = None
    """For ``world``: another world model folder (``python -m eqdiff.world model --out``). For ``sd-v1``: a local
    diffusers directory, a single ``.safetensors`` / ``.ckpt`` checkpoint in the original
    layout, or a hub id when ``allow_download`` is true."""
    allow_download: bool = False
    """Allow ``path`` to be a hub id fetched over the network; off by default (nothing downloads)."""
    seed: int = 0
    """Seed of the tiny preset's random weights."""
    cache_dir: str | None = None
    """Where the tiny preset is saved once and loaded back from (default ``~/.cache/eqdiff``)."""

    def validate(self) -> None:
        presets = ("tiny", "world", "sd-v1-random", "sd-v1")
        _check(self.preset in presets, "model", "preset", " | ".join(presets), self.preset)
        if self.preset == "sd-v1":
            expected = "a diffusers directory or .safetensors/.ckpt file for preset sd-v1"
            _check(bool(self.path), "model", "path", expected, self.path)


@dataclass(frozen=True)
class ConceptConfig(Section):
    """The learned concept's token (docs/method.md, FDTE)."""

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
    """Frequency-aware decoupled textual embedding (docs/method.md, FDTE)."""

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
        # Nyquist at 512 px is 256 frequency indices (docs/method.md, FDTE; docs/robustness.md).
        for name in ("cutoff_low", "cutoff_high"):
            value = getattr(self, name)
            _check(0.0 < value <= 256.0, "fdte", name, "a cutoff in (0, 256] (Nyquist at 512 px)", value)


@dataclass(frozen=True)
class MgdpConfig(Section):
    """Mask-guided diffusion process (docs/method.md, MGDP)."""

    SECTION = "mgdp"
    LIMITS = {"dilate_radius": (0, 512, "the latent side at 4096 px; the dilation pads the mask by it")}
    mode: MgdpMode = MgdpMode.MGDP
    """``off`` (plain loss), ``masked_loss`` (MDL ablation) or ``mgdp`` (composition + masked loss)."""
    dilate_radius: int = 10
    """Chebyshev radius of the mask dilation in latent pixels of a 512 px image (64 latents; official: 5 × 5×5
    max-pool = 10), scaled with the latent side and rounded (``mgdp.scaled_radius``): 5 on a 32-latent grid."""

    def validate(self) -> None:
        _check(self.dilate_radius >= 0, "mgdp", "dilate_radius", "an integer >= 0", self.dilate_radius)


@dataclass(frozen=True)
class RraConfig(Section):
    """Residual reference attention (docs/method.md, RRA, Inference)."""

    SECTION = "rra"
    LIMITS = {"time_gap": (0, NUM_TRAIN_TIMESTEPS - 1, "timesteps of the SD v1.x scheduler")}
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
    """Loss weights (docs/method.md, MGDP, RRA)."""

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


@dataclass(frozen=True)
class TrainConfig(Section):
    """The training recipe (docs/method.md, Losses and optimisation)."""

    SECTION = "train"
    LIMITS = {
        "steps": (1, 10_000_000, "optimisation steps"),
        "resolution": (8, 2048, "activation memory grows with its square"),
        "batch_size": (1, 256, "activation memory grows with it"),
        "num_class_images": (1, 9999, "class images are named 0000.png to 9999.png"),
        "seed": (0, MAX_SEED, "a seed torch and NumPy accept"),
    }
    variant: str = "F"
    """Ablation preset applied on top of the sections: A-F or a leave-one-out variant (see ``VARIANTS``)."""
    steps: int = 600
    """Optimisation steps."""
    resolution: int = 512
    """Training image side in pixels (the tiny preset uses 64)."""
    resize: ResizeMode = ResizeMode.CROP
    """Targets to ``resolution``: ``crop`` (bicubic short side + centre crop) or ``squash`` (official bilinear)."""
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
    """``auto`` = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU; ``bf16``/``fp16`` on any device."""
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
        _check(self.variant in VARIANTS, "train", "variant", f"one of {' | '.join(VARIANTS)}", self.variant)
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
    """Sampling (docs/method.md, Inference)."""

    SECTION = "generate"
    LIMITS = {
        "num_inference_steps": (1, NUM_TRAIN_TIMESTEPS, "the scheduler's num_train_timesteps"),
        "guidance_scale": (1, 100, "larger values saturate the images and far larger overflow to NaN"),
        "num_images_per_prompt": (1, 1000, "each image's seed is derived from its index below 1009"),
        "batch_size": (1, 256, "activation memory grows with it"),
        "resolution": (8, 2048, "activation memory grows with its square"),
        "seed": (0, MAX_SEED, "a seed torch and NumPy accept"),
    }
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
    (the samples of one prompt share their reference rows: at 8, 2 reference rows instead of 16) but batched
    kernels may round differently, so an image regenerated alone can differ in the last bits."""
    seed: int = 0
    """Base seed; each image's generator is derived from (seed, prompt index, sample index)."""
    resolution: int | None = None
    """Image side; default = the training resolution of the concept."""
    compile: bool = False
    """Run the UNet through ``torch.compile`` (falls back to eager, with a warning, where compiling fails)."""
    precision: MixedPrecision = MixedPrecision.AUTO
    """Weights' dtype on CUDA: ``auto`` = bf16 (fp16 where bf16 is unsupported); always fp32 on CPU."""
    reference_text: ReferenceText = ReferenceText.INSTANCE
    """Reference rows' text: ``instance`` = the instance prompt without the placeholder (as in training) or
    ``prompt`` = each generation prompt without the placeholder."""
    reference_background: ReferenceBackground = ReferenceBackground.PHOTO
    """The concept's reference image at inference: ``photo`` = as photographed (official), ``grey`` = its
    subject mask kept and the rest mid-grey, so the photo's background and clutter cannot reach the image
    through RRA (docs/method.md, Inference; needs a concept trained with masks)."""

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


def apply_overrides(config: MethodConfig, overrides: dict[str, Any]) -> MethodConfig:
    """Return ``config`` with dotted ``section.key`` overrides applied and re-validated."""
    sections = config.to_dict()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in sections or key not in sections[section]:
            raise ConfigError(f"{dotted}: unknown parameter")
        sections[section][key] = value
    return MethodConfig.from_dict(sections)
