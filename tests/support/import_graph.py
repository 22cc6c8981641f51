"""The repository's own import graph, read from the source (``ast``), not by importing anything.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a stage that imports
lazily still runs that code), except those under ``if TYPE_CHECKING:`` (never executed). Importing
``a.b.c`` executes ``a/__init__.py`` and ``a/b/__init__.py`` too, so they belong to its closure.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("eqdiff", "tasks", "flows")


def module_file(module: str) -> Path | None:
    """The repository file of ``module`` (``eqdiff.stages`` -> ``eqdiff/stages/__init__.py``), or None."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    names: list[str] = []
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)  # ``from eqdiff import prior``
    return names


@cache
def imports_of(module: str) -> frozenset[str]:
    """The repository modules ``module`` imports directly (with the packages those imports execute)."""
    path = module_file(module)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for name in _imported_names(tree, module, path.name == "__init__.py"):
        if name.split(".")[0] in PACKAGES and module_file(name) is not None:
            found.add(name)
    return frozenset(found - {module})


def parents(module: str) -> list[str]:
    """The packages whose ``__init__`` importing ``module`` executes: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def closure(roots: list[str]) -> set[str]:
    """Every repository module that importing ``roots`` executes."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo.extend(imports_of(module))
        todo.extend(parents(module))
    return seen


def closure_files(roots: list[str]) -> set[str]:
    """``closure(roots)`` as repository-relative paths (``eqdiff/stages/train.py``)."""
    return {str(module_file(m).relative_to(REPO)) for m in closure(roots)}


def all_modules(package: str) -> list[str]:
    """Every module of ``package`` (its ``.py`` files, ``__init__`` as the package itself)."""
    modules = []
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module in ``package``'s import graph (Tarjan)."""
    nodes = all_modules(package)
    graph = {m: sorted(i for i in imports_of(m) if i.split(".")[0] == package and i in nodes) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph[node]:
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def dvc_command_roots(argv: list[str]) -> list[str]:
    """The modules a dvc.yaml command starts: ``eqdiff NAME`` runs the CLI and ``eqdiff.stages.NAME``."""
    if argv[0] == "eqdiff":
        return ["eqdiff.cli", f"eqdiff.stages.{argv[1].replace('-', '_')}"]
    if argv[:2] == ["python", "-m"]:
        return [argv[2]]
    raise ValueError(f"dvc.yaml: a command neither `eqdiff STAGE` nor `python -m MODULE`: {argv}")


def dvc_argv(cmd: str) -> list[str]:
    """A dvc.yaml ``cmd`` as argv, every ``${...}`` replaced by a plain word."""
    import shlex

    while "${" in cmd:
        start = cmd.index("${")
        cmd = cmd[:start] + "X" + cmd[cmd.index("}", start) + 1 :]
    return shlex.split(cmd)


def write_dvc_code_deps(path: Path) -> bool:
    """Rewrite the ``.py`` entries of every stage's ``deps`` in ``path`` as its import closure, sorted, after the
    stage's other deps (comments and everything else kept). Returns whether the file changed."""
    import yaml

    stages = yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out: list[str] = []
    stage = None
    in_deps = False
    indent = ""
    pending: list[str] = []

    def flush() -> None:
        nonlocal pending
        out.extend(pending)
        pending = []

    for line in lines:
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":") and stripped[:-1] in stages:
            stage = stripped[:-1]
        if in_deps:
            if stripped.startswith("- ") and line.startswith(indent + "- "):
                if not stripped.endswith(".py"):
                    out.append(line)
                continue
            if stripped.startswith("#") and line.startswith(indent):
                out.append(line)
                continue
            body = stages[stage].get("do", stages[stage])
            code = sorted(closure_files(dvc_command_roots(dvc_argv(body["cmd"]))))
            out.extend(f"{indent}- {name}\n" for name in code)
            in_deps = False
        if stripped == "deps:" and stage is not None:
            in_deps = True
            indent = line[: len(line) - len(line.lstrip())] + "  "
        out.append(line)
    flush()
    text = "".join(out)
    changed = text != path.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    return changed


WORLD_EXPERIMENT = REPO / "experiments" / "world" / "dvc.yaml"
WORLD_SAMPLE_STAGE = """  sample:
    # Each held-out world subject: photos of one style on cluttered backgrounds and the world's exact masks,
    # drawn from its class noun (docs/world.md, "Held-out subjects").
    foreach: ${subjects}
    do:
      cmd: eqdiff sample --out ${item.dir} --world ${item.class} --num-photos 5 --seed 0
      deps:
{deps}      outs:
        - ${item.dir}

"""


def world_experiment_dvc(root_text: str) -> str:
    """experiments/world/dvc.yaml from the root dvc.yaml: the same stages run from experiments/world/ (code paths
    prefixed with ``../../``), the demo's one ``sample`` stage replaced by one per held-out world subject."""
    import re

    header = (
        "# GENERATED from ../../dvc.yaml by `python tests/support/import_graph.py` (test_world checks it is\n"
        "# current): edit the root dvc.yaml, not this file. The world experiment (docs/world.md): run\n"
        "# `dvc repro` in this folder.\n"
    )
    start = root_text.index("  sample:\n")
    end = root_text.index("\n  masks:\n", start) + 1
    deps = "".join(f"        - {name}\n" for name in sorted(closure_files(dvc_command_roots(["eqdiff", "sample"]))))
    text = root_text[:start] + WORLD_SAMPLE_STAGE.replace("{deps}", deps) + root_text[end:]
    text = re.sub(r"^(\s*- )((?:eqdiff|tasks|flows)/)", r"\1../../\2", text, flags=re.MULTILINE)
    return header + text


def write_world_experiment() -> bool:
    text = world_experiment_dvc((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    changed = not WORLD_EXPERIMENT.is_file() or WORLD_EXPERIMENT.read_text(encoding="utf-8") != text
    WORLD_EXPERIMENT.parent.mkdir(parents=True, exist_ok=True)
    WORLD_EXPERIMENT.write_text(text, encoding="utf-8")
    return changed


# python tests/support/import_graph.py: regenerate dvc.yaml's code deps, then the world's copy
if __name__ == "__main__":
    print("dvc.yaml changed" if write_dvc_code_deps(REPO / "dvc.yaml") else "dvc.yaml already up to date")
    print(f"{WORLD_EXPERIMENT.relative_to(REPO)} {'changed' if write_world_experiment() else 'already up to date'}")
