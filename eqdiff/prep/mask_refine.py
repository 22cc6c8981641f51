"""Subject-mask refinement across a subject's photos, on top of U²-Netp saliency (docs/method.md, "Masks").

A saliency model marks whatever stands out, one photo at a time; a subject is what its photos share. Given each
photo's soft saliency (ideally ``u2netp.multi_scale_saliency``, flip and zoom test-time augmentation), every photo
goes through the same steps with the same constants, whatever the subject:

1. **Edge-aware refinement at photo resolution**: U²-Netp sees 320x320; its saliency, resized to the photo, is
   smoothed by a guided filter (He et al., *Guided Image Filtering*, TPAMI 2013) with the photo's grey levels
   as guide, so the outline snaps to the photo's own edges, then thresholded.
2. **Agreement with the subject**: a colour model of the subject is learnt from the *other* photos' masks
   (leave-one-photo-out) and a background model from every photo's background; their log-likelihood ratio,
   averaged over a neighbourhood inside the mask, says how much each region looks like the subject elsewhere.
3. **Foreign regions removed**: mask regions in a chromaticity the subject never shows in its other photos, and
   no more like the subject than like the backgrounds (a glass beside a can, a cup beside a teapot), are taken
   out, even when they touch the subject.
4. **Components scored**: the component with the most agreeing area is the subject; another is kept only when
   it is sizeable and agrees with the subject (a subject split by an occluder).
5. **Holes filled** when small or when they look like the subject (not the background seen through a handle).
6. **Missed parts grown back**: weakly salient regions that touch the mask and strongly agree with the subject.

With one photo there is nothing to compare with: steps 2, 3 and 6 are skipped and step 4 keeps the largest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

COLOUR_LEVELS = 16
"""Levels per RGB channel of the colour histograms (16^3 bins, smoothed by one bin)."""
WORK_SIDE = 256
"""Long side at which the colour agreement is computed (it is a smooth, regional quantity)."""
GUIDED_RADIUS = 1 / 128
"""Guided-filter window radius as a fraction of the photo's long side (4 px at 512)."""
GUIDED_EPS = 1e-3
"""Guided-filter regulariser on grey levels in [0, 1]: edges with a contrast below ~0.03 do not pull the mask."""
AGREEMENT_SIGMA = 0.06
"""Neighbourhood (Gaussian sigma, fraction of the long side) over which colour evidence is averaged."""
LLR_CLIP = 5.0
"""Per-pixel log-likelihood ratios are clipped to +-this, so one rare colour cannot decide a region."""
FOREIGN_BELOW = 1.0
"""Mask regions whose averaged log-likelihood ratio is below this are not clearly subject-like (below 0: more
like the backgrounds; near 0: colours seen in neither) ..."""
CHROMA_LEVELS = 32
"""Levels per axis of the chromaticity histograms (r / (r+g+b), g / (r+g+b)): brightness-free, so a part of
the subject in shadow keeps the chromaticity it shows in the light."""
DARK = 40
"""Pixels whose brightest channel is below this have no reliable chromaticity: they count as shown."""
SUBJECT_DENSITY = 0.4 / CHROMA_LEVELS**2
"""... and when, moreover, most of their pixels have a chromaticity of density below this (0.4 x uniform) in the
other photos' masks, one the subject never shows elsewhere, they are foreign and removed. Both are needed: a
white clock face looks like white bed sheets, but the clock shows that white in its other photos too."""
GROW_ABOVE = 2.0
"""Weakly salient unmasked regions touching the mask whose mean log-likelihood ratio is above this are grown."""
GROW_SALIENCY = 0.2
"""The saliency a region must at least have to be grown back."""
PART_OF_MAIN = 0.05
"""Another component is kept when its area is at least this fraction of the main one's (and it agrees)."""
SMALL_HOLE = 0.002
"""Holes smaller than this fraction of the photo are filled whatever they look like."""


@dataclass(frozen=True)
class RefinedMask:
    """One photo's refined mask, (H, W) bool, and what each step changed (fractions of the photo)."""

    mask: np.ndarray
    details: dict[str, float]


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s grey-guided filter: ``source`` (H, W) float smoothed along ``guide``'s (H, W) edges in [0, 1]."""
    size = 2 * radius + 1
    box = lambda x: ndimage.uniform_filter(x, size, mode="reflect")  # noqa: E731
    mean_i, mean_p = box(guide), box(source)
    a = (box(guide * source) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def edge_aware(photo: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Step 1: (H, W, 3) uint8 photo and (H, W) saliency in [0, 1] -> (H, W) float32 saliency on its edges."""
    guide = photo.astype(np.float32).mean(axis=2) / 255.0
    radius = max(1, round(max(photo.shape[:2]) * GUIDED_RADIUS))
    return guided_filter(guide, saliency.astype(np.float32), radius, GUIDED_EPS).clip(0.0, 1.0)


def _resize(array: np.ndarray, size: tuple[int, int], resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """(H, W) float array resized to ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, resample), dtype=np.float32)


def _work_size(shape: tuple[int, ...]) -> tuple[int, int]:
    height, width = shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def colour_bins(photo: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int index of its colour bin in [0, COLOUR_LEVELS**3)."""
    q = photo.astype(np.int64) * COLOUR_LEVELS // 256
    return (q[..., 0] * COLOUR_LEVELS + q[..., 1]) * COLOUR_LEVELS + q[..., 2]


def chroma_bins(photo: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int chromaticity bin in [0, CHROMA_LEVELS**2], the last one for dark pixels."""
    rgb = photo.astype(np.float32)
    total = rgb.sum(axis=2) + 1e-6
    r = np.minimum((rgb[..., 0] / total * CHROMA_LEVELS).astype(np.int64), CHROMA_LEVELS - 1)
    g = np.minimum((rgb[..., 1] / total * CHROMA_LEVELS).astype(np.int64), CHROMA_LEVELS - 1)
    return np.where(rgb.max(axis=2) < DARK, CHROMA_LEVELS**2, r * CHROMA_LEVELS + g)


def chroma_histogram(bins: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Normalised, one-bin-smoothed histogram (CHROMA_LEVELS**2 + 1,) of ``bins``; the dark bin is infinite."""
    counts = np.bincount(bins.ravel(), weights=weights.ravel().astype(np.float64), minlength=CHROMA_LEVELS**2 + 1)
    light = ndimage.gaussian_filter(counts[:-1].reshape(CHROMA_LEVELS, CHROMA_LEVELS), 1.0).ravel()
    return np.append(light / max(float(light.sum()), 1e-12), np.inf)


def colour_histogram(bins: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Normalised, one-bin-smoothed histogram (COLOUR_LEVELS**3,) of ``bins`` weighted by ``weights``."""
    counts = np.bincount(bins.ravel(), weights=weights.ravel().astype(np.float64), minlength=COLOUR_LEVELS**3)
    counts = ndimage.gaussian_filter(counts.reshape((COLOUR_LEVELS,) * 3), 1.0).ravel()
    return counts / max(float(counts.sum()), 1e-12)


def _smoothed(values: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: the Gaussian-weighted mean of ``values`` over the pixels where ``weights`` is 1."""
    total = ndimage.gaussian_filter(weights.astype(np.float32), sigma)
    return ndimage.gaussian_filter((values * weights).astype(np.float32), sigma) / np.maximum(total, 1e-6)


@dataclass(frozen=True)
class Agreement:
    """Colour agreement of one photo with its subject, each (H, W) at the photo's size.

    ``pixel`` (float32) is the per-pixel evidence log P(colour | subject in the other photos) - log P(colour |
    all backgrounds), clipped to +-LLR_CLIP; ``inside`` averages it over the mask's own pixels nearby (how
    subject-like a mask region is); ``unshown`` (bool) marks pixels whose chromaticity the subject never shows
    in its other photos (density < SUBJECT_DENSITY) and ``shown`` is the share of the mask's pixels nearby that
    are not ``unshown``.
    """

    pixel: np.ndarray
    inside: np.ndarray
    unshown: np.ndarray
    shown: np.ndarray

    def foreign(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) bool: the regions of ``mask`` not clearly subject-like, in chromaticities the subject never
        shows elsewhere, extended to the unshown pixels connected to them (so the cut follows the photo)."""
        core = mask & (self.inside < FOREIGN_BELOW) & (self.shown < 0.5)
        if not core.any():
            return core
        labels, _ = ndimage.label(mask & (core | self.unshown))
        touched = np.unique(labels[core])
        return np.isin(labels, touched[touched > 0])


def agreement_maps(photos: list[np.ndarray], masks: list[np.ndarray]) -> list[Agreement]:
    """Step 2: the ``Agreement`` of each photo, given every photo's (H, W) bool initial mask."""
    sizes = [_work_size(photo.shape) for photo in photos]
    small = [np.asarray(Image.fromarray(p).resize(s, Image.Resampling.BOX)) for p, s in zip(photos, sizes, strict=True)]
    small_masks = [_resize(m.astype(np.float32), s) >= 0.5 for m, s in zip(masks, sizes, strict=True)]
    bins = [colour_bins(p) for p in small]
    subject = [colour_histogram(b, m) for b, m in zip(bins, small_masks, strict=True)]
    chroma = [chroma_bins(p) for p in small]
    subject_chroma = [chroma_histogram(c, m) for c, m in zip(chroma, small_masks, strict=True)]
    backgrounds = [
        colour_histogram(b, ~ndimage.binary_dilation(m, iterations=2)) for b, m in zip(bins, small_masks, strict=True)
    ]
    background = np.mean(backgrounds, axis=0)
    maps = []
    for k, (photo, photo_bins, mask) in enumerate(zip(photos, bins, small_masks, strict=True)):
        others = np.mean([h for j, h in enumerate(subject) if j != k], axis=0)
        llr = np.log(others[photo_bins] + 1e-6) - np.log(background[photo_bins] + 1e-6)
        llr = llr.clip(-LLR_CLIP, LLR_CLIP).astype(np.float32)
        others_chroma = np.mean([h for j, h in enumerate(subject_chroma) if j != k], axis=0)
        unshown = (others_chroma[chroma[k]] < SUBJECT_DENSITY).astype(np.float32)
        sigma = AGREEMENT_SIGMA * max(mask.shape)
        size = (photo.shape[1], photo.shape[0])
        maps.append(
            Agreement(
                pixel=_resize(llr, size, Image.Resampling.NEAREST),
                inside=_resize(_smoothed(llr, mask, sigma), size),
                unshown=_resize(unshown, size, Image.Resampling.NEAREST) >= 0.5,
                shown=_resize(1.0 - _smoothed(unshown, mask, sigma), size),
            )
        )
    return maps


def select_components(mask: np.ndarray, agreement: np.ndarray) -> np.ndarray:
    """Step 4: the main component (largest area x sigmoid(mean agreement)) and the sizeable agreeing others."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    index = np.arange(1, count + 1)
    areas = ndimage.sum(np.ones_like(agreement), labels, index)
    scores = ndimage.mean(agreement, labels, index)
    main = int(np.argmax(areas / (1.0 + np.exp(-scores))))
    keep = (areas >= PART_OF_MAIN * areas[main]) & (scores >= 0.0)
    keep[main] = True
    return np.isin(labels, index[keep])


def fill_holes(mask: np.ndarray, evidence: np.ndarray, salient: np.ndarray) -> np.ndarray:
    """Step 5: fill each hole that is small, mostly ``salient`` (step 3 never punches a hole into the subject)
    or whose pixels' mean ``evidence`` (per-pixel log-likelihood ratio) says subject (>= 0)."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, count = ndimage.label(holes)
    if count == 0:
        return mask
    index = np.arange(1, count + 1)
    areas = ndimage.sum(holes, labels, index)
    scores = ndimage.mean(evidence, labels, index)
    salient_share = ndimage.mean(salient, labels, index)
    fill = (areas < SMALL_HOLE * mask.size) | (scores >= 0.0) | (salient_share >= 0.5)
    return mask | np.isin(labels, index[fill])


def grow_parts(mask: np.ndarray, saliency: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """Step 6: add each weakly salient region touching the mask whose pixels' mean ``evidence`` is strongly
    subject-like (>= GROW_ABOVE)."""
    candidates = (saliency >= GROW_SALIENCY) & ~mask
    labels, count = ndimage.label(candidates)
    if count == 0:
        return mask
    index = np.arange(1, count + 1)
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(labels[ndimage.binary_dilation(mask) & candidates])] = True
    strong = ndimage.mean(evidence, labels, index) >= GROW_ABOVE
    return mask | np.isin(labels, index[touching[1:] & strong])


def refine_subject(photos: list[np.ndarray], saliencies: list[np.ndarray], threshold: float) -> list[RefinedMask]:
    """Refined masks of one subject's photos, in order.

    ``photos``: (H, W, 3) uint8 each; ``saliencies``: (H, W) float in [0, 1] at the same sizes; ``threshold``:
    the saliency level of the initial masks. Each result's ``details`` holds the fractions of the photo that
    steps 3-6 removed, dropped, filled and grew (``removed_foreign``, ``dropped_components``, ``filled_holes``,
    ``grown``).
    """
    soft = [edge_aware(p, s) for p, s in zip(photos, saliencies, strict=True)]
    initial = [s >= threshold for s in soft]
    if len(photos) > 1:
        maps = agreement_maps(photos, initial)
    else:
        zeros = np.zeros(initial[0].shape, np.float32)
        maps = [Agreement(zeros, zeros, zeros > 0, zeros + 1.0)]
    results = []
    for mask, saliency, agreement in zip(initial, soft, maps, strict=True):
        trimmed = mask & ~agreement.foreign(mask)
        kept = select_components(trimmed, agreement.inside)
        filled = fill_holes(kept, agreement.pixel, mask)
        grown = grow_parts(filled, saliency, agreement.pixel) if len(photos) > 1 else filled
        if not grown.any():
            grown = mask  # nothing agreed: keep the saliency's own answer (the self-checks will speak)
        pixels = float(mask.size)
        details = {
            "removed_foreign": (mask & ~trimmed).sum() / pixels,
            "dropped_components": (trimmed & ~kept).sum() / pixels,
            "filled_holes": (filled & ~kept).sum() / pixels,
            "grown": (grown & ~filled).sum() / pixels,
        }
        results.append(RefinedMask(grown, {k: round(float(v), 6) for k, v in details.items()}))
    return results
