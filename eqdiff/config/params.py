"""``Params``: the frozen params a stage is handed — ``params.yaml`` with ``-S`` overrides applied.

A stage never reads a raw dict: it asks for the typed sections it needs (``params.section(MasksConfig)``,
``params.method()``), each built and validated by its ``Section`` dataclass, so an unknown key or a bad value
fails with one line naming the field. The CLI, the Prefect tasks and the DVC stages (through the CLI) build one
``Params`` per run; a variant of the ablation is applied with ``params.with_variant("A")`` (what
``-S train.variant=A`` does), never by editing a mapping in place.

``Params`` pickles (a Dask worker receives it) and compares by value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eqdiff.config.base import ConfigError, Section, load_params, parse_override
from eqdiff.config.method import MethodConfig

S = TypeVar("S", bound=Section)


def apply_cli_overrides(params: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``params`` with ``section.key=value`` overrides applied, as ``dvc exp run -S`` does (unknown keys fail
    later, loudly, when their section is read)."""
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    for text in overrides:
        dotted, value = parse_override(text)
        section, _, key = dotted.partition(".")
        target = params.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{dotted}: section {section!r} is not a mapping")
        target[key] = value
    return params


@dataclass(frozen=True)
class Params:
    """One run's params. ``Params.of`` accepts a ``Params`` or a raw mapping (as ``yaml.safe_load`` gives)."""

    _raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, params: Params | Mapping[str, Any] | None) -> Params:
        if isinstance(params, Params):
            return params
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"params: expected a mapping of sections, got {params!r}")
        return cls(copy.deepcopy(dict(params or {})))

    @classmethod
    def load(cls, path: Path | None, overrides: list[str] = ()) -> Params:
        """``path`` (``None``: no file, every section at its defaults) with ``-S`` overrides applied."""
        raw = load_params(path) if path is not None else {}
        return cls(apply_cli_overrides(raw, list(overrides)))

    def section(self, section_cls: type[S]) -> S:
        """The typed, validated section ``section_cls.SECTION`` (defaults where the params omit it)."""
        return section_cls.from_mapping(self._raw.get(section_cls.SECTION))

    def method(self) -> MethodConfig:
        """The method sections with the variant's overrides applied: what trains and samples."""
        return MethodConfig.from_dict(self._raw).resolved()

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the top-level value ``key`` (``subjects``, ``classes``, ...): mutating it changes nothing."""
        return copy.deepcopy(self._raw.get(key, default))

    def __contains__(self, key: str) -> bool:
        return key in self._raw

    def with_variant(self, variant: str) -> Params:
        """These params with ``train.variant`` set (validated when the method is read)."""
        return self.with_overrides({"train.variant": variant})

    def with_overrides(self, overrides: Mapping[str, Any]) -> Params:
        """These params with dotted ``section.key`` values replaced."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            target = raw.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{dotted}: section {section!r} is not a mapping")
            target[key] = value
        return Params(raw)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the raw mapping (what is logged and written back)."""
        return copy.deepcopy(self._raw)
