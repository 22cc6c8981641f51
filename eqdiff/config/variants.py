"""The ablation presets as data: each variant a set of dotted overrides on the full method (docs/method.md)."""

from __future__ import annotations

from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    # The paper's ablation (Table 2), as data: each variant is a set of overrides on the full method.
    "A": {
        "rra.enabled": False,
        "losses.reference_attention": 0.0,
        "losses.cross_attention": 0.0,
        "fdte.enabled": False,
        "mgdp.mode": "off",
    },
    "B": {"losses.reference_attention": 0.0, "losses.cross_attention": 0.0, "fdte.enabled": False, "mgdp.mode": "off"},
    "C": {"fdte.enabled": False, "mgdp.mode": "off"},
    "D": {"mgdp.mode": "off"},
    "E": {"mgdp.mode": "masked_loss"},
    "F": {},
    # Leave-one-out and masking alone (docs/method.md, "Ablation variants beside the ladder"): what each component
    # does when the others are there, and whether masking earns credit that the ladder's order would give to FDTE.
    "A_MGDP": {
        "rra.enabled": False,
        "losses.reference_attention": 0.0,
        "losses.cross_attention": 0.0,
        "fdte.enabled": False,
    },
    "F_noFDTE": {"fdte.enabled": False},
    "F_noRRA": {"rra.enabled": False, "losses.reference_attention": 0.0, "losses.cross_attention": 0.0},
}
"""Ablation presets (docs/method.md, "Other choices": the variant ladder and "Ablation variants beside the ladder").
The paper's ladder A-F: A = Custom Diffusion, B = +RRA, C = +L_ra (and the official L_ca), D = +FDTE, E = D + MDL,
F = D + MGDP (the full method). Beside it: A_MGDP = A + MGDP, F_noFDTE = F without FDTE, F_noRRA = F without RRA and
the two attention losses that read it."""
