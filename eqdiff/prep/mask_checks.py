"""Self-checks of a subject's masks (docs/method.md, "Masks"): what a person would spot on the overlay sheet.

A mask is suspect when it has several sizeable components (a second object, or the subject in pieces), when its
area is far from the subject's median over its photos (a part missed, or the surroundings taken), or when it
runs a long way along the photo's border (the background taken, or a subject cut by the frame). Each finding is
one line naming the photo; the masks stage writes them to ``masks.json`` and the log, marks the photo's tile on
the overlay sheet, and the report lists them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SIZEABLE_OF_LARGEST = 0.1
"""A component is sizeable when its area is at least this fraction of the largest component's ..."""
SIZEABLE_OF_PHOTO = 0.005
"""... and at least this fraction of the photo."""
AREA_FACTOR = 3.0
"""An area more than this factor above or below the subject's median area is far from it."""
BORDER_RUN = 0.5
"""A mask touching one side of the photo along more than this fraction of the side, without a gap, runs along it."""


def sizeable_components(mask: np.ndarray) -> int:
    """The number of sizeable 8-connected components of an (H, W) bool mask."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return 0
    areas = ndimage.sum(mask, labels, np.arange(1, count + 1))
    return int(((areas >= SIZEABLE_OF_LARGEST * areas.max()) & (areas >= SIZEABLE_OF_PHOTO * mask.size)).sum())


def longest_run(values: np.ndarray) -> int:
    """The length of the longest run of True in a 1-D bool array."""
    padded = np.concatenate([[False], values.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def border_run(mask: np.ndarray) -> float:
    """The longest unbroken run of mask pixels along one side of the photo, as a fraction of that side."""
    sides = (mask[0], mask[-1], mask[:, 0], mask[:, -1])
    return max(longest_run(side) / side.size for side in sides)


def check_masks(names: list[str], masks: list[np.ndarray]) -> dict[str, list[str]]:
    """Findings per photo name (an empty list when none), in the order of ``names``; ``masks`` (H, W) bool."""
    areas = np.array([float(m.mean()) for m in masks])
    median = float(np.median(areas))
    findings: dict[str, list[str]] = {}
    for name, mask, area in zip(names, masks, areas, strict=True):
        found = []
        components = sizeable_components(mask)
        if components > 1:
            found.append(f"{name}: mask has {components} sizeable separate parts (a second object?)")
        if len(masks) > 1 and median > 0 and not median / AREA_FACTOR <= area <= median * AREA_FACTOR:
            found.append(
                f"{name}: mask covers {area:.1%} of the photo, far from the subject's median {median:.1%} "
                "(a part missed or the surroundings taken?)"
            )
        run = border_run(mask)
        if run > BORDER_RUN:
            found.append(f"{name}: mask runs along the photo's border for {run:.0%} of a side (background taken?)")
        findings[name] = found
    return findings
