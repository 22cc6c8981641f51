"""Class nouns as the pipeline names them: any text in prompts, a slug in paths, stage names and commands.

A class noun is free text: DreamBooth's bear_plushie is a "stuffed animal". ``params.yaml`` lists each class
once under ``classes`` as ``slug: noun``; the slug (``class_slug(noun)``, required as the key) names the
class's prior folder ``runs/prior/<slug>`` and its DVC stage ``prior@<slug>``, and subjects refer to their
class by it. DVC's ``${...}`` interpolation pastes values into shell commands unquoted, so commands receive
the slug (``--class stuffed-animal``) and read the noun from params (``eqdiff.stages.arguments``): no noun is
ever parsed by a shell.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata


def class_slug(noun: str) -> str:
    """``"Stuffed Animal"`` -> ``"stuffed-animal"``: lower-case ASCII letters and digits joined by ``-``.

    Accents are dropped (``"café"`` -> ``"cafe"``); a noun without any ASCII letter or digit gets
    ``class-<8 hex digits of its SHA-256>``, stable across machines.
    """
    ascii_text = unicodedata.normalize("NFKD", noun).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "class-" + hashlib.sha256(noun.encode("utf-8")).hexdigest()[:8]
