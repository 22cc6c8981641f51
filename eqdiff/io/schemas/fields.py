"""What every artefact schema shares: the error it raises, typed field access that names the file and the
field, and ``read`` (docs/architecture.md, "Artefacts and their schemas")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from eqdiff.io.artifacts import ArtifactError, read_json

NUMBER = (int, float)
"""A JSON number (``bool`` is refused wherever a number is expected)."""
_KIND_NAMES = {str: "str", int: "int", float: "float", bool: "bool", dict: "mapping", list: "list", NUMBER: "number"}


class SchemaError(ArtifactError):
    """An artefact's JSON does not hold what its schema says; the message names the file and the field."""


def is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance`` where ``True`` is not an ``int`` (JSON booleans are never numbers or counts)."""
    if isinstance(value, bool):
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)


def label(name: str, at: str = "") -> str:
    """How a field is named in a message: ``field 'subject'`` at the top level, ``images[0].file`` below it."""
    return f"{at}.{name}" if at else f"field {name!r}"


def required(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: Any, at: str = "") -> Any:
    """``data[name]`` when it is of ``kind``, else a ``SchemaError`` naming ``where`` and the field."""
    value = data.get(name)
    if not is_kind(value, kind):
        got = f" (got {value!r})" if value is None or isinstance(value, str | int | float) else ""
        raise SchemaError(f"{where}: {label(name, at)} missing or not a {_KIND_NAMES.get(kind, kind)}{got}")
    return value


def optional(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: Any, at: str = "") -> Any:
    """``data[name]`` of ``kind``, or None when the key is absent."""
    return None if name not in data else required(data, name, kind, where, at)


def mapping(data: Any, where: Any, what: str = "") -> dict[str, Any]:
    """``data`` when it is a JSON object, else a ``SchemaError`` (``what``: the field, empty for the file)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: {what} is not a JSON object" if what else f"{where}: not a JSON object")
    return data


def strings(data: Mapping[str, Any], name: str, where: Any, at: str = "") -> tuple[str, ...]:
    """``data[name]`` when it is a list of strings, as a tuple."""
    values = required(data, name, list, where, at)
    if not all(isinstance(v, str) for v in values):
        raise SchemaError(f"{where}: {label(name, at)} is not a list of strings")
    return tuple(values)


def without_none(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less its optional fields that are unset (None): they are not written."""
    return {k: v for k, v in values.items() if v is not None}


class Artefact:
    """Base of the schema classes: ``FILE`` names the artefact, ``read`` reads and validates one."""

    FILE: ClassVar[str]

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> Self:
        raise NotImplementedError

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """Read and validate ``path``; a missing file, invalid JSON or a bad field is one ``ArtifactError`` line."""
        return cls.from_json(read_json(path), Path(path))
