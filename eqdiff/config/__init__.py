"""Typed, frozen configuration: one dataclass per ``params.yaml`` section (docs/architecture.md, Layers).

Every section is built with ``Section(**mapping)``, so an unknown key fails loudly; cross-field checks live in
``__post_init__``; derived values are properties and are never written back, so what is logged is what ran.
``ConfigError`` carries a one-line message naming the field (``fdte.p_l``) and what was expected.
"""

from eqdiff.config.base import (
    ConfigError,
    Section,
    load_params,
    parse_override,
    section_to_dict,
    yaml_value,
)
from eqdiff.config.method import (
    METHOD_SECTIONS,
    BandColour,
    BandOutput,
    ConceptConfig,
    FdteConfig,
    FilterShape,
    GenerateConfig,
    LossConfig,
    MethodConfig,
    MgdpConfig,
    MgdpMode,
    MixedPrecision,
    ModelConfig,
    ReferenceBackground,
    ReferenceNoise,
    ReferenceText,
    ResizeMode,
    RraConfig,
    TrainConfig,
    apply_overrides,
)
from eqdiff.config.params import Params, apply_cli_overrides
from eqdiff.config.stages import (
    AugmentConfig,
    ClassScheduler,
    EvaluateConfig,
    MaskBackend,
    MasksConfig,
    OrchestrationConfig,
    PriorConfig,
)
from eqdiff.config.variants import VARIANTS

__all__ = [
    "METHOD_SECTIONS",
    "VARIANTS",
    "AugmentConfig",
    "BandColour",
    "BandOutput",
    "ClassScheduler",
    "ConceptConfig",
    "ConfigError",
    "EvaluateConfig",
    "FdteConfig",
    "FilterShape",
    "GenerateConfig",
    "LossConfig",
    "MaskBackend",
    "MasksConfig",
    "MethodConfig",
    "MgdpConfig",
    "MgdpMode",
    "MixedPrecision",
    "ModelConfig",
    "OrchestrationConfig",
    "Params",
    "PriorConfig",
    "RraConfig",
    "ReferenceNoise",
    "ReferenceBackground",
    "ReferenceText",
    "ResizeMode",
    "Section",
    "TrainConfig",
    "apply_cli_overrides",
    "apply_overrides",
    "load_params",
    "parse_override",
    "yaml_value",
    "section_to_dict",
]
