"""A samples folder's ``index.json``: ``eqdiff generate`` writes it, ``evaluate`` and ``report`` read it.

``index.json`` holds the subject, class noun, placeholder, variant, whether the weights were real
(``calibrated``) and, per image, its file, prompt, prompt set, prompt and sample indices and seed; its schema
is ``eqdiff.io.schemas.samples.SampleIndex`` (docs/architecture.md, "Artefacts and their schemas"). A prompt set
may have any name that is a valid folder name.
"""

from __future__ import annotations

from pathlib import Path

from eqdiff.errors import DataError
from eqdiff.io.artifacts import ArtifactError
from eqdiff.io.schemas.samples import SampleIndex


def read_sample_index(samples_dir: str | Path) -> SampleIndex:
    """Read and validate ``samples_dir/index.json``; a missing key or bad value names the file and field."""
    try:
        return SampleIndex.read(Path(samples_dir) / SampleIndex.FILE)
    except ArtifactError as exc:
        raise DataError(str(exc)) from None
