"""Which device and dtype run where: the placement and precision policy of loading, training and inference.

* Loading (``LOAD_DTYPE``): every component is loaded in fp32 whatever dtype its files store. Many SD v1.5 copies
  store fp16 weights; left alone, transformers keeps the text encoder's stored fp16 while diffusers upcasts the
  UNet, and the first matmul between them fails. The policies below then cast from one known dtype.
* Training autocasts (``autocast_dtype``): ``auto`` = bf16 on CUDA (fp16, with a loss scaler, where bf16 is
  unsupported) and fp32 elsewhere; an explicit ``bf16``/``fp16`` is honoured on any device — CPU autocast supports
  both, which is how the mixed-precision step is tested without a GPU. The frozen UNet is then stored in that dtype
  (``store_frozen_in``), as diffusers' training scripts do with ``weight_dtype``; trainable weights stay fp32.
* Inference stores the whole model in one dtype (``inference_dtype``): bf16 on CUDA under ``auto``, fp32 on CPU.
* Devices (``resolve_device``): ``auto`` = CUDA where available, else CPU; any other name must be a device torch
  can use on this machine, or the command stops with one line naming its flag.
"""

from __future__ import annotations

import torch
from torch import nn

from eqdiff.config import MixedPrecision
from eqdiff.errors import DataError

LOAD_DTYPE = torch.float32
"""The dtype every base component is loaded in (its files may store fp16 or bf16)."""


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto`` or a device name torch can use here (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...).

    A name torch does not know (``gpu``), or a device this machine lacks (``cuda`` without a GPU, ``cuda:7`` on a
    machine with fewer, ``mps`` off Apple silicon), is a ``DataError`` naming ``flag``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DataError(f"{flag} {name}: not a device name (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DataError(f"{flag} {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= count:
            raise DataError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DataError(f"{flag} {name}: MPS (Apple silicon) is not available on this machine")
        return device
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != device.type:
        raise DataError(f"{flag} {name}: no {device.type} device on this machine (expected auto, cpu or cuda)")
    return device


def autocast_dtype(choice: MixedPrecision, device: torch.device) -> torch.dtype | None:
    """The training autocast dtype, None for fp32."""
    if choice == MixedPrecision.NO:
        return None
    if choice != MixedPrecision.AUTO:
        return torch.float16 if choice == MixedPrecision.FP16 else torch.bfloat16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def store_frozen_in(module: nn.Module, dtype: torch.dtype) -> None:
    """Store the parameters that do not require grad in ``dtype``: half the memory of fp32 weights, and no cast
    of every frozen weight at each use (autocast caches casts only for weights that require grad)."""
    for param in module.parameters():
        if not param.requires_grad:
            param.data = param.data.to(dtype)


def inference_dtype(choice: MixedPrecision, device: torch.device) -> torch.dtype | None:
    """bf16 (or fp16 where unsupported) on CUDA unless ``no``; fp32 (None) on CPU."""
    if device.type != "cuda" or choice == MixedPrecision.NO:
        return None
    if choice == MixedPrecision.FP16 or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
