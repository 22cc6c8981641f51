"""Arguments and params keys several stage doors share: the class of a subject (docs/architecture.md, Stages).

``params.yaml`` lists each class once under ``classes`` as ``slug: noun`` (``eqdiff.prep.classes``); a command gets
``--class SLUG`` and reads the noun from params, or ``--class-noun TEXT`` directly.
"""

from __future__ import annotations

import argparse
from typing import Any

from eqdiff.config import ConfigError
from eqdiff.prep.classes import class_slug


def read_classes(params: dict[str, Any]) -> dict[str, str]:
    """``classes``: a non-empty mapping of slug -> class noun, each key the ``class_slug`` of its noun."""
    raw = params.get("classes")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"classes: expected a mapping of slug -> class noun, e.g. {{stuffed-animal: stuffed animal}}, got {raw!r}"
        )
    for key, noun in raw.items():
        if not isinstance(noun, str) or not noun.strip():
            raise ConfigError(f"classes.{key}: expected a class noun (text), got {noun!r}")
        if key != class_slug(noun):
            raise ConfigError(
                f"classes.{key}: expected the key {class_slug(noun)!r} for class noun {noun!r} "
                "(the slug names its prior folder and stage)"
            )
    return dict(raw)


def class_noun(params: dict[str, Any], slug: str) -> str:
    """The class noun of ``slug`` in ``params``' ``classes``."""
    classes = read_classes(params)
    if slug not in classes:
        raise ConfigError(f"--class {slug}: not a key of params classes {sorted(classes)}")
    return classes[slug]


def add_class_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """``--class SLUG`` (the noun read from params ``classes``) or ``--class-noun TEXT``, exactly one."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--class", dest="class_slug", metavar="SLUG", help="key of params `classes` (DVC passes this)")
    group.add_argument("--class-noun", help=f"the subject's class noun, e.g. 'dog' or 'stuffed animal' ({purpose})")


def class_noun_argument(args: argparse.Namespace, params: dict[str, Any]) -> str:
    """The class noun that ``add_class_arguments``' options name."""
    return args.class_noun if args.class_slug is None else class_noun(params, args.class_slug)
