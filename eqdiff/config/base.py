"""Configuration machinery: ``Section`` (type coercion, unknown keys are errors), ``ConfigError``, params I/O.

Sections are built with ``Section(**yaml)``: every field is type-checked against its annotation,
cross-field checks live in ``validate``, and ``ConfigError`` carries one line naming the field
(``fdte.p_l``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from eqdiff.errors import EqDiffError


class ConfigError(EqDiffError, ValueError):
    """A params file or section is invalid; the message names the field and what was expected."""


def _check(condition: bool, section: str, name: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{section}.{name}: expected {expected}, got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(section: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """Type-check one field value against its annotation (ints are accepted where floats are expected)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = " | ".join(m.value for m in hint)
            raise ConfigError(f"{section}.{f.name}: expected one of {choices}, got {value!r}") from None
    if hint is bool:
        _check(isinstance(value, bool), section, f.name, "true or false", value)
    elif hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), section, f.name, "an integer", value)
    elif hint is float:
        # Not math.isfinite: it raises OverflowError on an int beyond float range (10**400); this refuses it.
        ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= sys.float_info.max
        _check(ok, section, f.name, "a finite number", value)
        return float(value)
    elif hint is str:
        _check(isinstance(value, str), section, f.name, "a string", value)
    elif origin is tuple:
        _check(isinstance(value, list | tuple), section, f.name, "a list", value)
        return tuple(value)
    return value


SECTIONS: set[str] = set()
"""Every params section a ``Section`` dataclass reads (filled as the section classes are defined)."""

PIPELINE_KEYS = ("subjects", "classes", "variants", "prompts")
"""Top-level params keys that are not sections: the pipeline's lists, read by ``tasks/spec.py``."""


MAX_SEED = 2**32 - 1
"""Seeds are in [0, 2**32 - 1]: what every generator downstream (torch, NumPy) accepts as is."""

OFFICIAL_RESOLUTION = 512
"""The image side of the official recipe: pixel-scale params (FDTE cutoffs, zoom scales) are given at it."""

NUM_TRAIN_TIMESTEPS = 1000
"""The SD v1.x scheduler's ``num_train_timesteps``: DDIM cannot take more inference steps than this."""


class Section:
    """Mixin: type coercion of every field, the section's ``LIMITS``, then the section's own ``validate``."""

    SECTION = ""
    LIMITS: typing.ClassVar[dict[str, tuple[int | float, int | float, str]]] = {}
    """field -> (lowest, highest, why): bounds that downstream code needs (memory, scheduler, file names)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.SECTION:
            SECTIONS.add(cls.SECTION)

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(self.SECTION, f, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.validate()
        for name, (lowest, highest, why) in self.LIMITS.items():
            value = getattr(self, name)
            if value is not None and not lowest <= value <= highest:
                raise ConfigError(f"{self.SECTION}.{name}: expected {lowest} to {highest} ({why}), got {value!r}")

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError."""

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> typing.Self:
        if mapping is not None and not isinstance(mapping, dict):
            raise ConfigError(f"{cls.SECTION}: expected a mapping of keys, got {mapping!r}")
        mapping = dict(mapping or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known, key=str)  # YAML keys may be ints, bools or null
        if unknown:
            key = unknown[0] if isinstance(unknown[0], str) and unknown[0].isprintable() else repr(unknown[0])
            raise ConfigError(f"{cls.SECTION}.{key}: unknown key (known keys: {', '.join(sorted(known))})")
        return cls(**mapping)


def _check_range(section: str, name: str, value: tuple, lowest: float, highest: float) -> None:
    ok = (
        len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and lowest <= value[0] <= value[1] <= highest
    )
    _check(ok, section, name, f"[low, high] with {lowest:g} <= low <= high <= {highest:g}", list(value))


def section_to_dict(section: Section) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out


def check_section_name(name: Any, where: str) -> None:
    """A top-level params key must be a known section or pipeline list; a misspelt one is never ignored."""
    if name not in SECTIONS and name not in PIPELINE_KEYS:
        known = ", ".join(sorted(SECTIONS | set(PIPELINE_KEYS)))
        raise ConfigError(f"{where}: unknown params section {name!r} (known sections: {known})")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` (value in YAML syntax), as in ``dvc exp run -S``; the section must exist."""
    dotted, sep, raw = text.partition("=")
    section, _, key = dotted.strip().partition(".")
    if not sep or not section or not key:
        raise ConfigError(f"{text}: expected an override of the form section.key=value")
    check_section_name(section, dotted.strip())
    try:
        return dotted.strip(), yaml_value(raw)
    except ConfigError as exc:
        raise ConfigError(f"{dotted.strip()}: {exc}") from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader itself reports it
                break
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's floats: PyYAML (YAML 1.1) reads ``1e-4`` (an exponent without a dot) as the string "1e-4", so
# ``learning_rate: 1e-4`` in params.yaml or ``-S train.learning_rate=1e-4`` would be refused as "not a number".
# DVC (ruamel.yaml, YAML 1.2) reads it as 0.0001; so do we.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_value(raw: str) -> Any:
    """One value in YAML syntax, read as params files are (``1e-4`` is a number); ``ConfigError`` if invalid."""
    try:
        return yaml.load(raw, Loader=_StrictLoader)
    except yaml.YAMLError:
        raise ConfigError(f"the value {raw!r} is not valid YAML") from None


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a mapping; a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}:{exc.line}: duplicate key {exc.key!r} (each key may appear once)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for name in data:
        check_section_name(name, str(path))
    return data
