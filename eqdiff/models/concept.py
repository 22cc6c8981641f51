"""A learned concept on disk (docs/method.md, Inference; docs/robustness.md).

A concept directory holds exactly two files: ``concept.safetensors`` (the frequency embeddings, every trainable
processor weight keyed by its UNet parameter name, the default inference reference image and, for a concept
trained with masks, that image's subject mask) and
``concept.json`` (format, base-model identity and fingerprint, placeholder, class noun, prompts, the resolved
config; its schema is ``eqdiff.io.schemas.concept.ConceptManifest``). Loading checks the base model and then
*requires* every trainable tensor of the rebuilt processors to be present with its shape: unlike diffusers'
``load_attn_procs`` for Custom Diffusion weights (which parses the file and silently installs nothing;
docs/method.md, Loading concepts), nothing can be ignored quietly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from eqdiff.config import ConfigError, ModelConfig
from eqdiff.io.artifacts import ArtifactError, load_tensors, save_tensors, staged_directory, write_json
from eqdiff.io.schemas.concept import FORMAT, ConceptManifest
from eqdiff.method.fdte import FrequencyEmbeddings
from eqdiff.method.rra import install_processors, trainable_state_dict
from eqdiff.models.components import add_placeholder_token

WEIGHTS_FILE = "concept.safetensors"
MANIFEST_FILE = ConceptManifest.FILE
FREQUENCY_KEY = "frequency_embeddings"
REFERENCE_KEY = "reference_image"
REFERENCE_MASK_KEY = "reference_mask"


class ConceptError(ArtifactError):
    """A concept or training checkpoint is missing, corrupt, foreign, or made for another base model."""


@dataclass
class Concept:
    weights: dict[str, torch.Tensor]
    """``frequency_embeddings`` (2 or 1, d) and the processors' trainable tensors by UNet parameter name."""
    reference_image: torch.Tensor
    """(3, H, W) float in [-1, 1]."""
    manifest: ConceptManifest
    reference_mask: torch.Tensor | None = None
    """(1, H, W) in {0, 1}: the reference's subject mask (concepts trained with masks; earlier ones have none)."""

    @property
    def placeholder(self) -> str:
        return self.manifest.placeholder

    @property
    def rra(self) -> bool:
        return self.manifest.rra


def save_concept(
    directory: str | Path,
    weights: dict[str, torch.Tensor],
    reference_image: torch.Tensor,
    manifest: ConceptManifest,
    reference_mask: torch.Tensor | None = None,
) -> Path:
    """Write a concept directory atomically (staged whole, then swapped in)."""
    tensors = {k: v.detach().float() for k, v in weights.items()}
    tensors[REFERENCE_KEY] = reference_image.detach().float()
    if reference_mask is not None:
        tensors[REFERENCE_MASK_KEY] = reference_mask.detach().float()
    with staged_directory(directory) as staging:
        save_tensors(staging / WEIGHTS_FILE, tensors, metadata={"format": FORMAT})
        write_json(staging / MANIFEST_FILE, manifest.to_json())
    return Path(directory)


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """fp32, finite, and the two tensors every concept holds of their shape: (1 or 2, d) and (3, H, W)."""
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise ConceptError(f"{path}: tensor {name!r} is {tensor.dtype}, expected torch.float32")
        if not torch.isfinite(tensor).all():
            raise ConceptError(f"{path}: tensor {name!r} holds NaN or inf values (the concept is corrupt)")
    for key in (FREQUENCY_KEY, REFERENCE_KEY):
        if key not in tensors:
            raise ConceptError(f"{path}: missing tensor {key!r} (not an EqDiff concept)")
    frequency, reference = tensors[FREQUENCY_KEY].shape, tensors[REFERENCE_KEY].shape
    if len(frequency) != 2 or frequency[0] not in (1, 2):
        raise ConceptError(f"{path}: tensor {FREQUENCY_KEY!r} has shape {tuple(frequency)}, expected (1 or 2, d)")
    if len(reference) != 3 or reference[0] != 3:
        raise ConceptError(f"{path}: tensor {REFERENCE_KEY!r} has shape {tuple(reference)}, expected (3, H, W)")
    mask = tensors.get(REFERENCE_MASK_KEY)
    if mask is not None and tuple(mask.shape) != (1, *reference[1:]):
        expected = f"(1, {reference[1]}, {reference[2]}), the reference's size"
        raise ConceptError(f"{path}: tensor {REFERENCE_MASK_KEY!r} has shape {tuple(mask.shape)}, expected {expected}")


def load_concept(directory: str | Path) -> Concept:
    """Read and validate a concept directory: manifest fields and types, fp32 finite tensors of their shapes."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConceptError(f"{directory}: concept directory not found")
    try:  # every field inference reads, of its type; the recorded model and RRA sections valid as in params
        manifest = ConceptManifest.read(directory / MANIFEST_FILE)
    except ArtifactError as exc:
        raise ConceptError(str(exc)) from None
    tensors = load_tensors(directory / WEIGHTS_FILE)
    _check_tensors(directory / WEIGHTS_FILE, tensors)
    reference = tensors.pop(REFERENCE_KEY)
    return Concept(tensors, reference, manifest, tensors.pop(REFERENCE_MASK_KEY, None))


def has_reference_mask(directory: str | Path) -> bool:
    """Whether the concept at ``directory`` keeps its reference's mask, read from the file's header; a missing or
    damaged concept is ``load_concept``'s one-line error."""
    try:
        with safe_open(Path(directory) / WEIGHTS_FILE, framework="pt") as weights:
            return REFERENCE_MASK_KEY in weights.keys()  # noqa: SIM118 - the handle has no __contains__
    except (OSError, ValueError, SafetensorError):
        return load_concept(directory).reference_mask is not None


RUNTIME_MODEL_SETTINGS = ("cache_dir", "allow_download")
"""``model`` settings that say where the base model's files are kept or may come from, not what it is: the params
may change them for a concept (``eqdiff generate -S model.cache_dir=DIR``)."""


def concept_model(concept_dir: str | Path, trained: Mapping[str, Any], settings: Mapping[str, Any]) -> ModelConfig:
    """The model config to sample the concept at ``concept_dir`` with: the one it was ``trained`` with (its
    manifest's), with the params' own ``model`` ``settings`` (only the keys the params set) for the
    ``RUNTIME_MODEL_SETTINGS``. A setting that would change the base model and differs from the concept's own is
    a ``ConfigError`` naming the concept's value: a concept only samples its own base model."""
    own = ModelConfig.from_mapping(trained)
    known = {f.name for f in fields(ModelConfig)}
    changed = {}
    for key, value in settings.items():
        if key not in known:
            continue  # the params' own validation names unknown keys
        if key in RUNTIME_MODEL_SETTINGS:
            changed[key] = value
        elif value != getattr(own, key):
            raise ConfigError(
                f"model.{key}: {value!r}, but the concept at {concept_dir} was trained with model.{key} = "
                f"{getattr(own, key)!r}; a concept samples its own base model (leave model.{key} out or train a "
                "new concept)"
            )
    return replace(own, **changed) if changed else own


def check_concept_base_model(
    concept_dir: str | Path, manifest: ConceptManifest, fingerprint: str, base_id: str
) -> None:
    if manifest.base_model_fingerprint != fingerprint:
        raise ConceptError(
            f"{concept_dir}: trained on base model {manifest.base_model!r} "
            f"(fingerprint {manifest.base_model_fingerprint}), not on {base_id!r} (fingerprint {fingerprint})"
        )


def load_into(module_params: dict[str, torch.nn.Parameter], weights: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``weights`` into exactly the given parameters: a missing, extra or mis-shaped tensor is an error."""
    missing = sorted(set(module_params) - set(weights))
    extra = sorted(set(weights) - set(module_params))
    if missing or extra:
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise ConceptError(
            f"{where}: weights do not match the model ({detail}; {len(missing)} missing, {len(extra)} unexpected)"
        )
    with torch.no_grad():
        for name, param in module_params.items():
            if weights[name].shape != param.shape:
                raise ConceptError(
                    f"{where}: {name} has shape {tuple(weights[name].shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(weights[name])


def attach_concept_modules(
    components,
    placeholder: str,
    initializer_token: str,
    rra: bool,
    decoupled: bool,
    bank,
    dtype: torch.dtype = torch.float32,
) -> tuple[FrequencyEmbeddings, int]:
    """Add the placeholder token, install the processors (weights in ``dtype``: fp32 for training) and build
    the frequency embeddings (fp32). Returns (frequency embeddings on the UNet's device, placeholder token id).
    """
    placeholder_id, initializer_id = add_placeholder_token(components, placeholder, initializer_token)
    initial = components.text_encoder.get_input_embeddings().weight[initializer_id]
    install_processors(components.unet, bank, rra, dtype=dtype)
    embeddings = FrequencyEmbeddings(initial, decoupled=decoupled)  # on the text encoder's device
    return embeddings, placeholder_id


def trainable_parameters(unet, embeddings: FrequencyEmbeddings) -> dict[str, torch.nn.Parameter]:
    """Every trainable tensor of a concept, by the name it is saved under (docs/method.md, Losses and optimisation)."""
    return {FREQUENCY_KEY: embeddings.frequency_embeddings, **trainable_state_dict(unet)}


def apply_concept(concept: Concept, components, bank, where: str | Path) -> tuple[FrequencyEmbeddings, int]:
    """Attach a saved concept to base components (processor weights in the UNet's dtype); every tensor must load."""
    check_concept_base_model(where, concept.manifest, components.fingerprint, components.base_model_id)
    frequency = concept.weights[FREQUENCY_KEY]
    embeddings, placeholder_id = attach_concept_modules(
        components,
        concept.placeholder,
        concept.manifest.initializer_token,
        concept.rra,
        decoupled=frequency.shape[0] == 2,
        bank=bank,
        dtype=components.unet.dtype,
    )
    load_into(trainable_parameters(components.unet, embeddings), concept.weights, str(where))
    return embeddings, placeholder_id
