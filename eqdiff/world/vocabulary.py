"""The procedural world's vocabulary, its scene specs and their captions (docs/world.md).

An *identity* is what a customized subject must keep: shape (the class noun), body colour, colour pattern with its
second colour, and surface texture. A *scene* is the background and a *style* a global rendering of the whole
image; styles come in two kinds, by where their energy lives in the spectrum (docs/world.md, "Styles"):

- high-frequency styles (``pencil sketch``: strokes and hatching; ``mosaic``: tiles and grout lines) keep the
  image's low frequencies and replace its fine detail;
- low-frequency styles (``watercolor painting``: wash, blur and paper; ``vintage photo``: warm palette, faded
  contrast, vignette) keep the edges and change the palette and lighting.

Every word but ``checkered`` (two BPE pieces, ``chec`` + ``kered``) is a whole-word entry of the real CLIP
vocabulary, and captions follow the paper's prompt forms
("a {} on the beach", "a watercolor painting of a {}").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("ball", "box", "star", "heart", "pyramid", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 210, 30),
    "green": (40, 150, 55),
    "blue": (35, 75, 205),
    "purple": (125, 45, 170),
    "pink": (240, 125, 185),
}
PATTERNS = ("plain", "striped", "spotted", "checkered")
TEXTURES = ("smooth", "fuzzy", "shiny")
SCENES = ("studio", "beach", "snow", "jungle", "table", "city", "clutter")
STYLES = ("photo", "pencil", "mosaic", "watercolor", "vintage")
HIGH_FREQUENCY_STYLES = ("pencil", "mosaic")
LOW_FREQUENCY_STYLES = ("watercolor", "vintage")

SCENE_PHRASES = {
    "studio": "",
    "beach": " on the beach",
    "snow": " in the snow",
    "jungle": " in the jungle",
    "table": " on a wooden table",
    "city": " in the city",
    "clutter": "",  # the subject photos' cluttered rooms: "a photo of a ..." as DreamBooth's photos are captioned
}
STYLE_FORMS = {
    "photo": "a photo of a {}",
    "pencil": "a pencil sketch of a {}",
    "mosaic": "a mosaic of a {}",
    "watercolor": "a watercolor painting of a {}",
    "vintage": "a vintage photo of a {}",
}
PATTERN_WORDS = {"plain": "", "striped": "striped", "spotted": "spotted", "checkered": "checkered"}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "second": tuple(COLOURS),
    "texture": TEXTURES,
    "scene": SCENES,
    "style": STYLES,
}
"""Every attribute of a world image and its values: an identity's five, then the scene and the style."""


@dataclass(frozen=True)
class Identity:
    """What a subject is: shape, body colour, pattern (in ``second`` colour) and texture."""

    shape: str
    colour: str
    pattern: str
    second: str
    texture: str

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("pattern", self.pattern, PATTERNS),
            ("second", self.second, COLOURS),
            ("texture", self.texture, TEXTURES),
        ):
            if value not in allowed:
                raise ValueError(f"world identity {field}: {value!r} is not one of {', '.join(allowed)}")
        if self.second == self.colour:
            raise ValueError(f"world identity: second colour {self.second!r} equals the body colour")

    @property
    def slug(self) -> str:
        return "-".join((self.texture, self.colour, self.pattern, self.second, self.shape))


@dataclass(frozen=True)
class Spec:
    """One world image: an identity in a scene and a style, and where the object sits."""

    identity: Identity
    scene: str
    style: str
    centre: tuple[float, float]
    """Object centre as fractions of the image side (x, y)."""
    size: float
    """Object side as a fraction of the image side."""
    angle: float
    """Rotation in degrees."""
    seed: int
    """Seed of everything else (texture noise, scene layout, style strokes)."""


# Held-out subjects: never drawn for the base model's training set (docs/world.md, "Held-out subjects"), so a
# customized model has to learn them from their photos. Each has a pattern and a second colour that a caption of
# the class noun alone ("a ball") cannot give.
HELD_OUT = (
    Identity("ball", "yellow", "spotted", "purple", "shiny"),
    Identity("box", "blue", "striped", "orange", "fuzzy"),
    Identity("star", "pink", "checkered", "green", "smooth"),
    Identity("heart", "green", "striped", "yellow", "shiny"),
    Identity("pyramid", "purple", "spotted", "yellow", "fuzzy"),
    Identity("ring", "orange", "checkered", "blue", "smooth"),
)
_HELD_OUT_KEYS = {(i.shape, i.colour, i.pattern, i.second) for i in HELD_OUT}


def is_held_out(identity: Identity) -> bool:
    """True for an identity that the base model must not see (any texture of a held-out shape/colours/pattern)."""
    return (identity.shape, identity.colour, identity.pattern, identity.second) in _HELD_OUT_KEYS


def random_identity(rng: np.random.Generator, allow_held_out: bool = False) -> Identity:
    colours = list(COLOURS)
    while True:
        colour, second = rng.choice(len(colours), size=2, replace=False)
        identity = Identity(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=colours[colour],
            pattern=PATTERNS[rng.integers(len(PATTERNS))],
            second=colours[second],
            texture=TEXTURES[rng.integers(len(TEXTURES))],
        )
        if allow_held_out or not is_held_out(identity):
            return identity


def random_spec(
    rng: np.random.Generator, identity: Identity | None = None, scene: str | None = None, style: str | None = None
) -> Spec:
    """A random spec; fixed ``identity`` / ``scene`` / ``style`` when given."""
    if identity is None:
        identity = random_identity(rng)
    size = float(rng.uniform(0.42, 0.62))
    margin = size / 2 + 0.02
    return Spec(
        identity=identity,
        scene=scene or SCENES[rng.integers(len(SCENES))],
        style=style or STYLES[rng.integers(len(STYLES))],
        centre=(float(rng.uniform(margin, 1 - margin)), float(rng.uniform(max(margin, 0.45), 1 - margin))),
        size=size,
        angle=float(rng.uniform(-25, 25)),
        seed=int(rng.integers(2**31)),
    )


def object_phrase(
    identity: Identity, rng: np.random.Generator | None = None, keep: float = 1.0, second: float = 0.0
) -> str:
    """``"fuzzy blue striped box"``; with ``rng``, each attribute word is kept with probability ``keep``.

    ``second`` > 0 also names a patterned object's second colour between its colour and pattern words, when
    both are kept (``"fuzzy blue orange striped box"``), with probability ``second`` (always without ``rng``).
    At 0, the default and the shipped model's captions, no random number is drawn for it: a seed's captions are
    those of before."""

    def kept(word: str) -> str:
        return word if word and (rng is None or rng.random() < keep) else ""

    texture, colour, pattern = kept(identity.texture), kept(identity.colour), kept(PATTERN_WORDS[identity.pattern])
    # drawn last, and only when asked: the stream of the other words is kept
    named = colour and pattern and second > 0 and (rng is None or rng.random() < second)
    words = (texture, colour, identity.second if named else "", pattern, identity.shape)
    return " ".join(w for w in words if w)


def caption(spec: Spec, rng: np.random.Generator | None = None, keep: float = 1.0, second: float = 0.0) -> str:
    """The spec's caption in the paper's prompt forms; with ``rng``, attribute and scene words are dropped at
    random (probability ``1 - keep``) so the model also learns what a bare class noun or scene-less prompt means.
    Photo-style captions alternate between ``a photo of a ...`` and ``a ...``. ``second``: see
    ``object_phrase``."""
    subject = object_phrase(spec.identity, rng, keep, second)
    scene = SCENE_PHRASES[spec.scene]
    if scene and rng is not None and rng.random() >= keep:
        scene = ""
    form = STYLE_FORMS[spec.style]
    if spec.style == "photo" and rng is not None and rng.random() < 0.5:
        form = "a {}"
    return form.format(subject + scene)
