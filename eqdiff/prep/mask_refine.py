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
   out, even when they touch the subject, but never one joined to the subject's body through a wide neck of
   confident saliency: colour alone does not cut a body in two (a striped toy whose stripes, in dim light, look
   like nothing it shows elsewhere).
4. **Components scored**: the component with the most agreeing area is the subject; another is kept only when
   it is sizeable and agrees with the subject (a subject split by an occluder).
5. **Holes filled** when small or when they look like the subject (not the background seen through a handle).
6. **Missed parts grown back**: weakly salient regions that touch the mask and strongly agree with the subject.
7. **Checked against plain U²-Netp**: whatever the refinement left out of the plain mask (``u2netp_saliency >=
   threshold``, as with ``masks.refine: false``) must be a separate part, apart from the subject's body or joined
   to it by a narrow contact only (a second object). When the refined mask keeps less than KEEP_SHARE of the plain
   mask's area, those separate parts aside, the photo falls back to the plain mask: the refinement can only help.

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
REVISION = 2
"""The refinement's revision: part of the masks stage's key (``eqdiff.prep.masks.masks_key``), so a change that
alters refined masks redoes an earlier ``--out`` instead of calling it up to date (2: the sparing rule and step 7)."""
CONFIDENT = 0.8
"""Saliency at or above which U²-Netp holds a pixel with high confidence."""
NECK = 0.06
"""Two parts of a mask are one body when their confident pixels join through a neck wider than twice this times
the square root of the mask's area (a disc of that radius passes from one to the other). On DreamBooth
(docs/method.md, "Masks") a second object joins its subject by 0.042 at most (the glass touching can/05), a part of
the subject by 0.07 and more (a dog's back, chest or tail, a lens of the sunglasses)."""
HELD = 0.7
"""Step 7 joins a part the refinement left out to the body through pixels of at least this saliency: below
CONFIDENT, so the check catches the cuts step 3 allows (a body U²-Netp holds, but not with confidence)."""
KEEP_SHARE = 0.95
"""Step 7: a refined mask keeping less than this share of the plain mask's area, the separate parts it left out
aside, is not trusted; its photo falls back to the plain mask. On DreamBooth (docs/method.md, "Masks") the
refinements that lost a visible part of the subject kept 0.76-0.94 of it (a dog's back or tail, a clock's bell,
a lens's edge); 0.95 catches all of them, at the price of one good refinement (a bowl's cloth, 0.91)."""


@dataclass(frozen=True)
class RefinedMask:
    """One photo's refined mask, (H, W) bool, what each step changed (fractions of the photo) and step 7's
    verdict (``kept_of_plain``, ``fallback``)."""

    mask: np.ndarray
    details: dict[str, float | bool]
    proposal: np.ndarray
    """Steps 1-6's mask, before step 7's check: ``mask`` itself unless the photo fell back to the plain mask."""


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


def joined_to(mask: np.ndarray, confident: np.ndarray, body: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) bool: the core of ``mask`` joined to ``body``'s through necks wider than 2 x ``radius``.

    The core is ``mask & confident`` eroded by a disc of ``radius`` (its pixels farther than ``radius`` from its
    outside); what is returned are its connected components that hold core pixels of ``body`` itself. A region
    of the mask meeting them belongs to the body; one that does not lies apart from it or touches it through a
    narrow contact only (a second object). All (H, W) bool but ``radius``, in pixels.
    """
    core = ndimage.distance_transform_edt(mask & confident) > radius
    body_core = core & (ndimage.distance_transform_edt(body & confident) > radius)
    labels, _ = ndimage.label(core)
    joined = np.unique(labels[body_core])
    return np.isin(labels, joined[joined > 0])


def _meeting(regions: np.ndarray, joined: np.ndarray) -> np.ndarray:
    """The connected components of the (H, W) bool ``regions`` that meet ``joined``."""
    labels, _ = ndimage.label(regions)
    met = np.unique(labels[regions & joined])
    return np.isin(labels, met[met > 0])


def remove_foreign(mask: np.ndarray, agreement: Agreement, saliency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: (trimmed mask, spared foreign regions). The ``agreement.foreign`` regions are cut unless joined to
    the subject's body (the components step 4 would keep of the rest) through confident (>= CONFIDENT) saliency."""
    foreign = agreement.foreign(mask)
    if not foreign.any():
        return mask, foreign
    body = select_components(mask & ~foreign, agreement.inside)
    radius = NECK * np.sqrt(mask.sum())
    spared = _meeting(foreign, joined_to(mask, saliency >= CONFIDENT, body, radius))
    return mask & ~(foreign & ~spared), spared


def kept_of_plain(refined: np.ndarray, plain: np.ndarray, plain_saliency: np.ndarray) -> float:
    """Step 7: the share of the (H, W) bool ``plain`` mask's area that ``refined`` keeps, not counting the parts
    it left out that are separate from the body it kept (``joined_to`` through pixels HELD in
    ``plain_saliency``)."""
    area = int(plain.sum())
    if area == 0:
        return 1.0
    lost = plain & ~refined
    joined = joined_to(plain, plain_saliency >= HELD, plain & refined, NECK * np.sqrt(area))
    return 1.0 - float(_meeting(lost, joined).sum()) / area


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


def refine_subject(
    photos: list[np.ndarray],
    saliencies: list[np.ndarray],
    threshold: float,
    plain_saliencies: list[np.ndarray] | None = None,
) -> list[RefinedMask]:
    """Refined masks of one subject's photos, in order.

    ``photos``: (H, W, 3) uint8 each; ``saliencies``: (H, W) float in [0, 1] at the same sizes (ideally
    ``multi_scale_saliency``); ``threshold``: the saliency level of the masks; ``plain_saliencies``: the plain
    ``u2netp_saliency`` of each photo, the mask step 7 checks against and falls back to (default:
    ``saliencies``). Each result's ``details`` holds the fractions of the photo that steps 3-6 removed, spared,
    dropped, filled and grew (``removed_foreign``, ``spared_foreign``, ``dropped_components``, ``filled_holes``,
    ``grown``), then step 7's ``kept_of_plain`` and ``fallback`` (true: the mask is the plain one).
    """
    plain_saliencies = saliencies if plain_saliencies is None else plain_saliencies
    soft = [edge_aware(p, s) for p, s in zip(photos, saliencies, strict=True)]
    initial = [s >= threshold for s in soft]
    if len(photos) > 1:
        maps = agreement_maps(photos, initial)
    else:
        zeros = np.zeros(initial[0].shape, np.float32)
        maps = [Agreement(zeros, zeros, zeros > 0, zeros + 1.0)]
    results = []
    for mask, saliency, agreement, plain_saliency in zip(initial, soft, maps, plain_saliencies, strict=True):
        trimmed, spared = remove_foreign(mask, agreement, saliency)
        kept = select_components(trimmed, agreement.inside)
        filled = fill_holes(kept, agreement.pixel, mask)
        grown = grow_parts(filled, saliency, agreement.pixel) if len(photos) > 1 else filled
        if not grown.any():
            grown = mask  # nothing agreed: keep the saliency's own answer (the self-checks will speak)
        pixels = float(mask.size)
        details = {
            "removed_foreign": (mask & ~trimmed).sum() / pixels,
            "spared_foreign": spared.sum() / pixels,
            "dropped_components": (trimmed & ~kept).sum() / pixels,
            "filled_holes": (filled & ~kept).sum() / pixels,
            "grown": (grown & ~filled).sum() / pixels,
            "kept_of_plain": kept_of_plain(grown, plain_saliency >= threshold, plain_saliency),
        }
        fallback = details["kept_of_plain"] < KEEP_SHARE
        final = plain_saliency >= threshold if fallback else grown
        rounded = {k: round(float(v), 6) for k, v in details.items()}
        results.append(RefinedMask(final, rounded | {"fallback": fallback}, grown))
    return results
