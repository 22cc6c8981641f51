"""The ``world`` preset: the base model trained on the procedural world (docs/world.md, "Base model").

``python -m eqdiff.world model`` writes ``unet/``, ``vae/`` and ``text_encoder/`` (fp16 safetensors) and
``world_model.json``; the shipped copy is ``eqdiff/world/weights/model``, and ``model.path`` may name another one
(say, a longer training on a GPU). On first use the folder is completed into a full diffusers directory in the
cache (the real CLIP tokenizer rebuilt from open-clip-torch's BPE file, SD v1.x's scheduler), named by the
weights' digest, and from then on ``load_components`` reads it like any SD v1.x directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from eqdiff.errors import ModelError
from eqdiff.models import derived_cache
from eqdiff.models.architectures import SD_V1_SCHEDULER, build_clip_tokenizer

if TYPE_CHECKING:  # imported where a network is built: check-models reads this module's digests only
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

SHIPPED_MODEL = Path(__file__).parent / "weights" / "model"
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder")
RECORD_FILE = "world_model.json"
MAX_SHARD_SIZE = "1900KB"
"""Weight files are written in diffusers' shards of at most this size, so that no tracked file passes 2 MB."""
TOKEN_TABLE = "token_embedding"
"""The token table's module name (transformers 5 saves it as ``embeddings.token_embedding.weight``)."""
TEXT_ENCODER_FILE = "model.safetensors"


def compact_token_table(text_encoder: Path, keep: list[int]) -> None:
    """Store only the rows ``keep`` of the saved text encoder's token table (``.rows`` and ``.ids``): no world
    caption uses the other 49,000 tokens, whose rows are never trained. ``expand_token_table`` undoes it."""
    path = text_encoder / TEXT_ENCODER_FILE
    tensors = load_file(path)
    prefix = _table_prefix(tensors, "weight")
    table = tensors.pop(f"{prefix}.weight")
    ids = torch.tensor(keep, dtype=torch.int64)
    tensors[f"{prefix}.rows"] = table[ids].contiguous()
    tensors[f"{prefix}.ids"] = ids
    save_file(tensors, path, metadata={"format": "pt"})


def expand_token_table(text_encoder: Path) -> None:
    """Rebuild the full ``(vocab_size, width)`` token table of a compact text encoder, zero outside its rows. A
    text encoder that already has its whole table (a world model saved before tables were compacted, or one
    saved by hand with ``save_pretrained``) is left as it is."""
    path = text_encoder / TEXT_ENCODER_FILE
    if not path.is_file():
        return  # sharded or unusual layouts are full tables; load_components reads them as they are
    tensors = load_file(path)
    if not any(k.endswith(f"{TOKEN_TABLE}.rows") for k in tensors):
        return
    prefix = _table_prefix(tensors, "rows")
    rows, ids = tensors.pop(f"{prefix}.rows"), tensors.pop(f"{prefix}.ids")
    vocab_size = json.loads((text_encoder / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    table = torch.zeros(vocab_size, rows.shape[1], dtype=rows.dtype)
    table[ids] = rows
    tensors[f"{prefix}.weight"] = table
    save_file(tensors, path, metadata={"format": "pt"})


def _table_prefix(tensors: dict[str, torch.Tensor], suffix: str) -> str:
    names = [k.removesuffix(f".{suffix}") for k in tensors if k.endswith(f"{TOKEN_TABLE}.{suffix}")]
    if len(names) != 1:
        raise ModelError(f"world text encoder: expected one {TOKEN_TABLE}.{suffix} tensor, found {len(names)}")
    return names[0]


def world_source(path: str | None, field: str = "model.path") -> Path:
    """The world model folder a ``model.path`` (null = the shipped one; ``field`` names the setting in errors)
    names, checked to be one."""
    source = Path(path).expanduser() if path else SHIPPED_MODEL
    missing = [name for name in WEIGHT_FOLDERS if not (source / name / "config.json").is_file()]
    if missing:
        what = field if path else "the shipped world model"
        raise ModelError(
            f"{what}: {source} is not a world model folder (missing {', '.join(f'{m}/config.json' for m in missing)}; "
            "train one with `python -m eqdiff.world model --out FOLDER`)"
        )
    return source


def world_files(source: Path) -> list[Path]:
    return sorted(p for name in WEIGHT_FOLDERS for p in (source / name).iterdir() if p.is_file())


def world_digest(source: Path) -> str:
    """sha256 (first 16 hex digits) over the world model's config and weight files, in a fixed order."""
    digest = hashlib.sha256()
    for path in world_files(source):
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def world_directory(path: str | None, cache_root: Path, rebuild: bool = False) -> tuple[Path, str]:
    """``(diffusers directory, digest)`` of the world model at ``path``, completed once (atomically) in
    ``cache_root``, checked when reused and rebuilt when damaged (``eqdiff.models.derived_cache``); ``rebuild``: a
    file of it failed to load."""
    source = world_source(path)
    digest = world_digest(source)

    def complete(staging: Path) -> None:
        from diffusers import DDPMScheduler

        for name in WEIGHT_FOLDERS:
            shutil.copytree(source / name, staging / name)
        if world_digest(staging) != digest:  # the copy is verified against the source's digest
            raise ModelError(f"{source}: its files changed while they were copied into the cache; run again")
        expand_token_table(staging / "text_encoder")
        build_clip_tokenizer(staging / "tokenizer").save_pretrained(staging / "tokenizer")
        DDPMScheduler.from_config(SD_V1_SCHEDULER).save_pretrained(staging / "scheduler")
        record = source / RECORD_FILE
        (staging / RECORD_FILE).write_bytes(record.read_bytes() if record.is_file() else b"{}\n")

    directory = cache_root / f"world-{digest}"
    return derived_cache.ensure(directory, complete, "world preset", rebuild), digest


def load_world_model(source: Path) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, set[int], dict]:
    """The networks of a saved world model in fp32, the token ids its text encoder kept, and its record (with
    its digest) for the continuation's ``resumed_from``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(source / "unet", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(source / "vae", torch_dtype=torch.float32).eval()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "text_encoder"
        shutil.copytree(source / "text_encoder", copy)
        tensors = load_file(copy / TEXT_ENCODER_FILE)
        kept = {int(i) for name, ids in tensors.items() if name.endswith(f"{TOKEN_TABLE}.ids") for i in ids}
        expand_token_table(copy)
        text_encoder = CLIPTextModel.from_pretrained(copy, torch_dtype=torch.float32)
    record_path = source / RECORD_FILE
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    record["digest"] = world_digest(source)
    return unet, vae, text_encoder.eval().requires_grad_(False), kept, record


def _drop_source_path(config: Path) -> None:
    """Remove the ``_name_or_path`` diffusers writes for a network loaded from a folder (a resumed part's): the
    saved model would otherwise name a folder of the machine it was trained on, and differ from a fresh one."""
    values = json.loads(config.read_text(encoding="utf-8"))
    if values.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_world_model(
    out: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    kept_tokens: set[int],
    config: dict,
    styles: list[str],
    wall_seconds: float,
    extra: dict | None = None,
) -> None:
    """Write the networks in fp16 and ``world_model.json`` (the training ``config``, the world's ``styles``, the
    digest of the files, the wall time); the text encoder's token table keeps the rows ``kept_tokens`` only. The
    folder format's writer, beside its reader ``load_world_model``."""
    keep = sorted(kept_tokens)
    for name, module in (("unet", unet), ("vae", vae)):
        module.to(torch.float16).save_pretrained(out / name, max_shard_size=MAX_SHARD_SIZE)
        _drop_source_path(out / name / "config.json")
    text_encoder.to(torch.float16).save_pretrained(out / "text_encoder")  # one file, compacted below
    compact_token_table(out / "text_encoder", keep)
    record = {
        "config": config,
        "styles": styles,
        "kept_token_ids": len(keep),
        "digest": world_digest(out),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(wall_seconds),
        **(extra or {}),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
