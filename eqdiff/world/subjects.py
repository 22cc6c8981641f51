"""Held-out world subjects as photo folders (docs/world.md, "Held-out subjects"): ``NN.png`` photos of one
identity and ``masks/NN.png``, the world's exact masks.

By default the photos are plain photos on cluttered backgrounds. ``style`` renders every photo in one world style
and ``scene`` puts every photo in one scene: the *styled subject sets* whose shared style or background a concept
may learn along with the subject (docs/world.md, "Styled subject sets"). The poses are those of the plain set
with the same seed (the random stream does not depend on the style or scene), so a styled set and its plain
control differ in the style or scene alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eqdiff.errors import DataError
from eqdiff.prep.sample import png_bytes, write_sample_files
from eqdiff.world.render import render
from eqdiff.world.vocabulary import HELD_OUT, SCENES, STYLES, Identity, Spec, random_spec

SUBJECT_SIDE = 64
PHOTO_STYLE = "photo"
PHOTO_SCENE = "clutter"
"""The plain subject photos: photo style in a cluttered room."""


def held_out_subject(name: str) -> Identity:
    """The held-out identity named by its shape (the class noun: ``ball``, ``box``, ...)."""
    for identity in HELD_OUT:
        if identity.shape == name:
            return identity
    raise DataError(
        f"--world: {name!r} is not a held-out world subject (one of: {', '.join(i.shape for i in HELD_OUT)})"
    )


def check_photo_condition(style: str | None, scene: str | None) -> tuple[str, str]:
    """``(style, scene)`` of the photos, defaults filled in; an unknown name is a one-line ``DataError``."""
    style, scene = style or PHOTO_STYLE, scene or PHOTO_SCENE
    if style not in STYLES:
        raise DataError(f"--photo-style: {style!r} is not a world style (one of: {', '.join(STYLES)})")
    if scene not in SCENES:
        raise DataError(f"--photo-scene: {scene!r} is not a world scene (one of: {', '.join(SCENES)})")
    return style, scene


def subject_specs(
    name: str, num_photos: int, seed: int = 0, style: str | None = None, scene: str | None = None
) -> list[Spec]:
    """The specs of the subject set ``make_world_subject`` draws (the same identity, style and scene; seeded poses)."""
    identity = held_out_subject(name)
    style, scene = check_photo_condition(style, scene)
    rng = np.random.default_rng([seed, HELD_OUT.index(identity)])
    return [random_spec(rng, identity=identity, scene=scene, style=style) for _ in range(num_photos)]


def make_world_subject(
    directory: str | Path,
    name: str,
    num_photos: int = 5,
    seed: int = 0,
    style: str | None = None,
    scene: str | None = None,
) -> Path:
    """Write ``num_photos`` photos of the held-out subject ``name`` and their masks into ``directory``, in
    ``style`` (default: photo) and ``scene`` (default: a cluttered room)."""
    directory = Path(directory)
    files: dict[Path, bytes] = {}
    for index, spec in enumerate(subject_specs(name, num_photos, seed, style, scene)):
        image, mask = render(spec, SUBJECT_SIDE)
        files[directory / f"{index:02d}.png"] = png_bytes(image)
        files[directory / "masks" / f"{index:02d}.png"] = png_bytes(mask)
    return write_sample_files(directory, files)
