"""The preset registry: ``model.preset`` name -> the entry that knows its base model (docs/architecture.md, Layers).

A preset is an entry, not a branch: ``load_components``, ``check-models`` and output safety ask the entry of
``model.preset`` for what they need, through the ``Preset`` interface. The built-in entries are the seeded random
presets (``tiny``, ``sd-v1-random``; configs in ``eqdiff.models.architectures``), built once in the cache, and
``sd-v1`` (real weights at ``model.path``). Plug-ins add theirs through ``eqdiff.plugins``, the one registration
point (the ``world`` preset): the first lookup calls ``eqdiff.plugins.load_plugins()``. A plug-in's entry is any
object with the ``Preset`` attributes and methods (it cannot import this module, which imports the plug-ins).

The ``tiny`` preset has SD v1.x's *architecture* (4 UNet levels, 2 transformer layers per down level and 3 per up
level: 16 self- and 16 cross-attention layers, 10 of them in mid+up) at small widths, seeded random weights,
and the real 49,408-token CLIP vocabulary rebuilt from the BPE file inside the ``open-clip-torch`` wheel. Its
images are noise: it exists so that every code path runs for real, offline, on a CPU.

Importing this module builds and loads nothing (no torch, no diffusers): a random preset's networks are built on
first use, a plug-in's entry imports its code when called.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import ClassVar, Protocol

from eqdiff.config import ModelConfig
from eqdiff.errors import ModelError
from eqdiff.models import derived_cache
from eqdiff.models.architectures import RANDOM_PRESETS, SD_V1_SCHEDULER, build_clip_tokenizer
from eqdiff.plugins import load_plugins


class Preset(Protocol):
    """What the pipeline asks of a ``model.preset`` (``cache`` is the model cache folder, ``cache_root``)."""

    name: str
    """The ``model.preset`` value."""
    uses_path: bool
    """Whether ``model.path`` names the model (a random preset ignores it)."""
    requires_path: bool
    """Whether the name alone is no model (``sd-v1``): ``EqDiffPipeline.from_pretrained(name)`` refuses it."""

    def source(self, config: ModelConfig, cache: Path) -> str:
        """What ``load_components`` reads: a diffusers directory (built or completed once in ``cache``), a single
        ``.safetensors`` / ``.ckpt`` file, or a hub id when downloads are allowed."""
        ...

    def reads(self, config: ModelConfig, cache: Path) -> Path | None:
        """The local path loading this base model reads (output safety never lets a stage write there)."""
        ...

    def identity(self, config: ModelConfig, source: str) -> str:
        """``Components.base_model_id`` of the model loaded from ``source``."""
        ...

    def native_resolution(self, config: ModelConfig) -> int | None:
        """The image side the model was trained at; None: read from its UNet and VAE configs."""
        ...

    def describe(self, config: ModelConfig, path: Path) -> tuple[str, str, str] | None:
        """``check-models``: ``(format, architecture, stored dtype)`` of the model at ``path`` (``reads``), raising
        ``EqDiffError`` when it is not one; None where ``check-models``' SD v1.x checks of a diffusers directory
        or single checkpoint file apply."""
        ...

    # A preset whose source is a cache it derives (``eqdiff.models.derived_cache``) also has
    # ``rebuild(config, cache) -> str``: the source rebuilt, called once by ``load_components`` when a file of it
    # fails to load.


def default_cache_dir() -> Path:
    return Path(os.environ.get("EQDIFF_CACHE", Path.home() / ".cache" / "eqdiff"))


def cache_root(config: ModelConfig) -> Path:
    """The model cache folder: ``model.cache_dir``, else ``$EQDIFF_CACHE``, else ``~/.cache/eqdiff``."""
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


# ----------------------------------------------------------------------------------------------------------
# Built-in entries.


def build_random_preset(name: str, seed: int, directory: Path) -> None:
    """Build a seeded random preset and save it as a diffusers directory at ``directory``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    architecture = RANDOM_PRESETS[name]
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**architecture.unet)
        vae = AutoencoderKL(**architecture.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**architecture.text_encoder))
    finally:
        torch.random.set_rng_state(generator_state)
    unet.save_pretrained(directory / "unet")
    vae.save_pretrained(directory / "vae")
    text_encoder.save_pretrained(directory / "text_encoder")
    build_clip_tokenizer(directory / "tokenizer").save_pretrained(directory / "tokenizer")
    DDPMScheduler.from_config(SD_V1_SCHEDULER).save_pretrained(directory / "scheduler")
    (directory / "eqdiff_preset.json").write_text(
        json.dumps({"preset": name, "seed": seed, "native_resolution": architecture.native_resolution}),
        encoding="utf-8",
    )


def preset_directory(config: ModelConfig, rebuild: bool = False) -> Path:
    """A random preset's directory, built once (atomically), checked when reused and rebuilt when damaged
    (``eqdiff.models.derived_cache``); ``rebuild``: a file of it failed to load."""
    directory = cache_root(config) / f"{config.preset}-v1-seed{config.seed}"
    return derived_cache.ensure(
        directory,
        lambda folder: build_random_preset(config.preset, config.seed, folder),
        f"{config.preset} preset",
        rebuild,
    )


class SeededPreset:
    """A preset of seeded random weights (``tiny``, ``sd-v1-random``): a diffusers directory built once in the cache
    per seed; its images are noise (docs/architecture.md, Offline models and data)."""

    uses_path: ClassVar[bool] = False
    requires_path: ClassVar[bool] = False

    def __init__(self, name: str):
        self.name = name

    def source(self, config: ModelConfig, cache: Path) -> str:
        return str(preset_directory(config))

    def rebuild(self, config: ModelConfig, cache: Path) -> str:
        """The source again, rebuilt: a file of it failed to load (``load_components``)."""
        return str(preset_directory(config, rebuild=True))

    def reads(self, config: ModelConfig, cache: Path) -> Path:
        return cache / f"{self.name}-v1-seed{config.seed}"

    def identity(self, config: ModelConfig, source: str) -> str:
        return f"{self.name}:seed={config.seed}"

    def native_resolution(self, config: ModelConfig) -> int:
        return RANDOM_PRESETS[self.name].native_resolution

    def describe(self, config: ModelConfig, path: Path) -> tuple[str, str, str]:
        return "random preset (built on first use)", self.name, "float32"


class CheckpointPreset:
    """``sd-v1``: real SD v1.x weights at ``model.path`` (a diffusers directory, a single ``.safetensors`` /
    ``.ckpt`` file, or a hub id when ``model.allow_download``; docs/weights.md)."""

    name: ClassVar[str] = "sd-v1"
    uses_path: ClassVar[bool] = True
    requires_path: ClassVar[bool] = True

    def source(self, config: ModelConfig, cache: Path) -> str:
        path = Path(config.path).expanduser()
        if path.is_dir() or (path.is_file() and path.suffix.lower() in (".safetensors", ".ckpt")):
            return str(path)
        if path.is_file():
            raise ModelError(
                f"model.path: {path} is a {path.suffix or 'suffix-less'} file (expected a diffusers "
                "directory or a single .safetensors / .ckpt checkpoint)"
            )
        if config.allow_download:
            return config.path
        raise ModelError(
            f"model.path: {config.path} is not a local directory or checkpoint file "
            "(set model.allow_download: true to use a hub id)"
        )

    def reads(self, config: ModelConfig, cache: Path) -> Path | None:
        return Path(config.path).expanduser() if config.path else None

    def identity(self, config: ModelConfig, source: str) -> str:
        return str(config.path)

    def native_resolution(self, config: ModelConfig) -> None:
        return None

    def describe(self, config: ModelConfig, path: Path) -> None:
        return None


BUILT_IN: dict[str, Preset] = {
    **{name: SeededPreset(name) for name in RANDOM_PRESETS},
    CheckpointPreset.name: CheckpointPreset(),
}


# ----------------------------------------------------------------------------------------------------------
# Lookups.


@cache
def _registry() -> dict[str, Preset]:
    presets = dict(BUILT_IN)
    for entry in load_plugins().presets:
        assert entry.name not in presets, f"preset {entry.name!r} is registered twice"
        presets[entry.name] = entry
    return presets


def preset_names() -> tuple[str, ...]:
    """Every registered preset name: the built-in ones, then the plug-ins'."""
    return tuple(_registry())


def preset(name: str) -> Preset:
    """The entry of the preset ``name``."""
    presets = _registry()
    if name not in presets:
        raise ModelError(f"model.preset: {name!r} is not a registered preset (one of: {', '.join(presets)})")
    return presets[name]


def model_input(config: ModelConfig) -> Path | None:
    """The local path a ``ModelConfig`` reads (a random preset's cache folder, the shipped world model, or
    ``model.path``: a directory or a single checkpoint file); output safety keeps every stage's output out of it."""
    return preset(config.preset).reads(config, cache_root(config))
