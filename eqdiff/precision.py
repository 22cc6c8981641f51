"""Which dtype runs where: the mixed-precision policy of training and inference (issue 6; DESIGN §4).

* Training autocasts (``autocast_dtype``): ``auto`` = bf16 on CUDA (fp16, with a loss scaler, where bf16 is
  unsupported) and fp32 elsewhere; an explicit ``bf16``/``fp16`` is honoured on any device — CPU autocast supports
  both, which is how the mixed-precision step is tested without a GPU. The frozen UNet is then stored in that dtype
  (``store_frozen_in``), as diffusers' training scripts do with ``weight_dtype``; trainable weights stay fp32.
* Inference stores the whole model in one dtype (``inference_dtype``): bf16 on CUDA under ``auto``, fp32 on CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from eqdiff.config import MixedPrecision


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
