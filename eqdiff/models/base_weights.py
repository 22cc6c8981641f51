"""Reading Stable Diffusion v1.x weights from the two layouts users hold: a diffusers directory or a single file.

* A **diffusers directory** (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``): each network is read with its
  library's ``from_pretrained``, which prefers ``*.safetensors`` over ``*.bin`` pickles beside them; a folder
  holding only fp16 ``variant`` files is read through that variant. Other folders of the SD v1.4/v1.5 layouts
  (``safety_checker/``, ``feature_extractor/``) are never read: this project has no safety checker.
* A **single file** in the original LDM layout (``v1-5-pruned-emaonly.safetensors``, ``sd-v1-4.ckpt``, community
  fine-tunes): its keys and shapes are checked against the layout of a known architecture (SD v1.x, or the
  ``tiny`` preset's) before anything is built; the UNet and VAE are then converted by diffusers'
  ``from_single_file`` with that architecture's config, which the project ships
  (``eqdiff.models.architectures``), so nothing is fetched; the CLIP text tower is the file's
  ``cond_stage_model.transformer.*`` loaded strictly. ``.ckpt`` files are read with ``torch.load(weights_only=True)``
  only: one that needs pickle is refused with one line.

Every network comes back in ``LOAD_DTYPE`` (fp32), whatever dtype the files store.

diffusers and transformers are imported by the functions that build a network, not by this module: checking a
path (``eqdiff check-models``, the first stage of every pipeline) reads headers and configs only, and importing
them costs about 8 s of a 2-core machine's time per process.
"""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors
import safetensors.torch
import torch

from eqdiff.errors import EqDiffError, ModelError
from eqdiff.models import single_file_keys
from eqdiff.models.architectures import COMPONENTS, RANDOM_PRESETS, SD_V1_SCHEDULER, RandomPreset, build_clip_tokenizer
from eqdiff.models.precision import LOAD_DTYPE

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
ARCHITECTURES: dict[str, RandomPreset] = {"SD v1.x": RANDOM_PRESETS["sd-v1-random"], "tiny": RANDOM_PRESETS["tiny"]}
"""The architectures a single file may hold, by name: their configs are what the file is converted with."""

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    Loaded = tuple[CLIPTokenizer, CLIPTextModel, UNet2DConditionModel, AutoencoderKL, DDPMScheduler]

# Keys that identify other model families' single files (diffusers' single_file_utils uses the same markers).
_OTHER_FAMILIES = {
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": "a Stable Diffusion 2.x checkpoint",
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": "an SDXL checkpoint",
    "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": "an SD3 checkpoint",
}


def is_single_file(path: Path) -> bool:
    return path.suffix.lower() in SINGLE_FILE_SUFFIXES


# ----------------------------------------------------------------------------------------------------------
# Reading a single file.


def read_tensor_file(path: Path, what: str = "model.path") -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, or of a ``.ckpt`` (its ``state_dict`` when nested), read without
    unpickling arbitrary objects. ``.ckpt`` tensors are memory-mapped (zip format), so reading is cheap."""
    try:
        if path.suffix.lower() == ".safetensors":
            return safetensors.torch.load_file(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        # torch names the refused object ("Unsupported global: GLOBAL argparse.Namespace was not an allowed ...")
        found = re.search(r"GLOBAL (\S+)", str(exc))
        refused = f"it holds an object of type {found.group(1)}" if found else "it holds objects other than tensors"
        raise ModelError(
            f"{what}: {path} needs pickle to load ({refused}; weights-only loading never unpickles code); "
            "convert it to .safetensors"
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError, safetensors.SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what}: {path} is not a readable {path.suffix} weights file ({first[:160]})") from None
    # Lightning's {"state_dict": ..., "global_step": ...}; GroundingDINO's {"model": ...}
    while isinstance(checkpoint, dict) and (nested := _nested_state(checkpoint)) is not None:
        checkpoint = nested
    tensors = (
        {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)} if isinstance(checkpoint, dict) else {}
    )
    if not tensors:
        raise ModelError(f"{what}: {path} holds no state dict of tensors")
    return tensors


def _nested_state(checkpoint: dict) -> dict | None:
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return None


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"  # torch's zip format (mmap-able); the legacy format is not


def tensor_shapes(path: Path, what: str = "model.path") -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``key -> (shape, dtype)`` of a weights file: the safetensors header only, or a memory-mapped ``.ckpt``."""
    if path.suffix.lower() == ".safetensors":
        try:
            with safetensors.safe_open(path, framework="pt") as fh:
                return {key: (tuple(fh.get_slice(key).get_shape()), _dtype(fh.get_slice(key))) for key in fh.keys()}  # noqa: SIM118
        except (OSError, safetensors.SafetensorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{what}: {path} is not a readable .safetensors file ({first[:160]})") from None
    return {key: (tuple(value.shape), value.dtype) for key, value in read_tensor_file(path, what).items()}


def dtype_summary(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> str:
    """The floating-point dtypes ``tensor_shapes`` found, most common first (``float16``, ``float32+float16``)."""
    counts = Counter(str(dtype).removeprefix("torch.") for _, dtype in shapes.values() if dtype.is_floating_point)
    return "+".join(name for name, _ in counts.most_common()) or "-"


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _dtype(tensor_slice) -> torch.dtype:
    return _SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), torch.uint8)  # exotic (FP8) types: bytes


def original_layout(preset: RandomPreset) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` of a single file holding ``preset``'s architecture (networks built on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**preset.unet)
        vae = AutoencoderKL(**preset.vae)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    state = {
        **single_file_keys.unet_to_original(unet.state_dict(), unet.config),
        **single_file_keys.vae_to_original(vae.state_dict(), vae.config),
        **single_file_keys.text_encoder_to_original(
            text_encoder.state_dict(), text_encoder.config.max_position_embeddings
        ),
    }
    # position_ids is a buffer that some files carry and others (re-saved by newer tools) do not: not required
    return {key: tuple(value.shape) for key, value in state.items() if not key.endswith("position_ids")}


_LAYOUTS: dict[str, dict[str, tuple[int, ...]]] = {}


def layout_of(name: str) -> dict[str, tuple[int, ...]]:
    if name not in _LAYOUTS:
        _LAYOUTS[name] = original_layout(ARCHITECTURES[name])
    return _LAYOUTS[name]


def detect_architecture(shapes: Mapping[str, tuple[int, ...]], path: Path, what: str = "model.path") -> str:
    """The name in ``ARCHITECTURES`` whose every key and shape the file holds (extra keys, such as EMA copies or
    schedule buffers, are allowed); otherwise a ``ModelError`` saying what the file is or what does not fit."""
    for key, family in _OTHER_FAMILIES.items():
        if key in shapes:
            raise ModelError(f"{what}: {path} is {family}; expected Stable Diffusion v1.x")
    closest = None
    for name in ARCHITECTURES:
        layout = layout_of(name)
        missing = [key for key in layout if key not in shapes]
        wrong = [key for key in layout if key in shapes and tuple(shapes[key]) != layout[key]]
        if not missing and not wrong:
            return name
        if closest is None or len(missing) + len(wrong) < closest[0]:
            closest = (len(missing) + len(wrong), name, missing, wrong)
    _, name, missing, wrong = closest
    if wrong:
        key = wrong[0]
        detail = f"{key} is {tuple(shapes[key])}, {name} has {layout_of(name)[key]}"
    else:
        detail = f"{len(missing)} of its keys missing, e.g. {missing[0]}"
    raise ModelError(f"{what}: {path} is not a Stable Diffusion v1.x single-file checkpoint ({detail})")


# ----------------------------------------------------------------------------------------------------------
# Loading.


def _write_config(directory: Path, module_class: type, config: Mapping) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"_class_name": module_class.__name__, **config}), "utf-8")


def load_single_file(path: Path) -> Loaded:
    """The five components of an SD v1.x single-file checkpoint, all networks in ``LOAD_DTYPE``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    state = read_tensor_file(path)
    name = detect_architecture({key: tuple(value.shape) for key, value in state.items()}, path)
    preset = ARCHITECTURES[name]
    with tempfile.TemporaryDirectory(prefix="eqdiff-single-file-") as tmp:
        configs = Path(tmp)
        _write_config(configs / "unet", UNet2DConditionModel, preset.unet)
        _write_config(configs / "vae", AutoencoderKL, preset.vae)
        tokenizer = build_clip_tokenizer(configs / "tokenizer")
        options = {"config": str(configs), "local_files_only": True}
        unet = UNet2DConditionModel.from_single_file(state, subfolder="unet", **options)
        vae = AutoencoderKL.from_single_file(state, subfolder="vae", **options)
    text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
    expected = text_encoder.state_dict().keys()
    text_state = {
        key: state[single_file_keys.TEXT_PREFIX + key.removeprefix("text_model.")].to(LOAD_DTYPE) for key in expected
    }
    text_encoder.load_state_dict(text_state, strict=True)
    scheduler = DDPMScheduler.from_config(SD_V1_SCHEDULER)
    return tokenizer, text_encoder.to(LOAD_DTYPE), unet.to(LOAD_DTYPE), vae.to(LOAD_DTYPE), scheduler


def weights_variant(folder: Path) -> str | None:
    """``"fp16"`` when a component folder holds only diffusers' fp16 variant files (``*.fp16.safetensors``,
    ``*.fp16.bin``); None when it has full-precision files (preferred: every network is loaded in fp32)."""
    names = [p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")] if folder.is_dir() else []
    if any(".fp16." not in name for name in names):
        return None
    return "fp16" if names else None


def load_directory(source: str, allow_download: bool) -> Loaded:
    """The five components of a diffusers directory (or, when downloads are allowed, a hub id)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(source).is_dir()
    if local:
        missing = [c for c in COMPONENTS if not (Path(source) / c).is_dir()]
        if missing:
            raise ModelError(f"{source}: not a Stable Diffusion v1.x directory (missing {', '.join(missing)}/)")
    kwargs = {"local_files_only": not allow_download}

    def weights(component: str) -> dict:  # one load dtype for every network, whatever its files store
        return {"variant": weights_variant(Path(source) / component) if local else None, **kwargs}

    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(
        source, subfolder="text_encoder", dtype=LOAD_DTYPE, **weights("text_encoder")
    )
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=LOAD_DTYPE, **weights("unet"))
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=LOAD_DTYPE, **weights("vae"))
    scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
    return tokenizer, text_encoder, unet, vae, scheduler


def read_components(source: str, allow_download: bool) -> Loaded:
    """Tokenizer, text encoder, UNet, VAE and noise scheduler from a directory, a single file or a hub id."""
    try:
        if is_single_file(Path(source)) and Path(source).is_file():
            return load_single_file(Path(source))
        return load_directory(source, allow_download)
    except EqDiffError:
        raise
    except (OSError, ValueError, json.JSONDecodeError, safetensors.SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: could not load the model ({first})") from None
