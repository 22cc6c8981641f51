"""The folders of ``eqdiff/`` are its layers (docs/architecture.md, Layers): the rules that keep them so."""

from __future__ import annotations

import ast
import importlib

import pytest
from support.import_graph import REPO, all_modules, imports_of

import eqdiff

PACKAGE = REPO / "eqdiff"
REGISTRATION_POINT = "eqdiff.plugins"
# What each layer must never import (docs/architecture.md, Layers).
FORBIDDEN = {
    "eqdiff.method": ("eqdiff.training", "eqdiff.pipelines", "eqdiff.evaluation", "eqdiff.io", "eqdiff.prep"),
    "eqdiff.pipelines": ("eqdiff.training",),
    "eqdiff.config": ("eqdiff.method", "eqdiff.models", "eqdiff.prep", "eqdiff.io", "eqdiff.evaluation"),
}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_top_level_holds_at_most_five_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 5, modules
    assert {"__init__.py", "cli.py", "errors.py"} <= set(modules)


def test_every_subpackage_says_what_it_owns():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if "weights" in init.parts:
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring.split()) >= 5, f"{init.relative_to(REPO)} has no docstring"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    offending = {
        (module, imported)
        for module in all_modules("eqdiff")
        if _inside(module, layer)
        for imported in imports_of(module)
        if any(_inside(imported, forbidden) for forbidden in FORBIDDEN[layer])
    }
    assert not offending, sorted(offending)


def test_only_the_registration_point_imports_the_world():
    offending = sorted(
        (module, imported)
        for module in all_modules("eqdiff")
        if not _inside(module, "eqdiff.world") and module != REGISTRATION_POINT
        for imported in imports_of(module)
        if _inside(imported, "eqdiff.world")
    )
    assert not offending, offending


@pytest.mark.parametrize("name", eqdiff.__all__)
def test_every_public_name_imports(name):
    value = getattr(importlib.import_module("eqdiff"), name)
    assert value is not None
    if name == "evaluate":  # the function, whatever was imported before (no module of that name shadows it)
        assert callable(value) and value.__module__ == "eqdiff.evaluation.evaluate"


# Stages that build no network import neither diffusers nor transformers (about 9 s of a 2-core machine per
# process), and those that read no tensors not even torch (3 s): every pipeline runs each stage as a process.
LIGHT_STAGES = {"check-models": ("diffusers", "transformers"), "sample": ("torch",), "masks": ("torch",),
                "augment": ("torch",), "report": ("torch",), "track": ("torch",)}  # fmt: skip


@pytest.mark.parametrize("stage", sorted(LIGHT_STAGES))
def test_stages_that_build_no_network_start_without_the_model_libraries(stage):
    import subprocess
    import sys

    load = "import tasks.tracking" if stage == "track" else f"build_stage_parser({stage!r})"
    code = (
        f"import sys; from eqdiff.cli import build_stage_parser; {load}\n"
        f"print(sorted(m for m in {LIGHT_STAGES[stage]!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"eqdiff {stage} imports {result.stdout.strip()}"
