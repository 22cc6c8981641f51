"""The architecture as tests: one stage registry that dvc.yaml, the CLI and the Prefect tasks agree with;
dvc.yaml's code deps are exactly each stage's import closure (an edit anywhere on a stage's code path
re-runs it under ``dvc repro``, and nothing else does); no import cycles; core never imports the doors."""

from __future__ import annotations

import pytest
import yaml
from support.import_graph import (
    REPO,
    all_modules,
    closure_files,
    cycles,
    dvc_argv,
    dvc_command_roots,
    imports_of,
    module_file,
)

from eqdiff.cli import build_stage_parser
from eqdiff.stages import STAGES

PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
TOOLS = ("prefect", "mlflow", "dvc")


def body(stage: dict) -> dict:
    return stage.get("do", stage)


def command(stage: dict) -> list[str]:
    return dvc_argv(body(stage)["cmd"])


def test_every_registered_stage_is_a_dvc_stage_whose_command_its_parser_accepts():
    for name, stage in STAGES.items():
        assert name in PIPELINE, f"stage {name!r} is registered but not in dvc.yaml"
        argv = command(PIPELINE[name])
        assert argv[:2] == ["eqdiff", name], f"dvc.yaml stage {name} runs {argv[:2]}, not `eqdiff {name}`"
        build_stage_parser(name).parse_args(argv[2:])  # SystemExit on an unknown or missing argument
        module = stage.load()
        for attr in ("run", "add_arguments", "main"):
            assert callable(getattr(module, attr, None)), f"{stage.module_name} lacks {attr}()"
    assert set(PIPELINE) - set(STAGES) == {"track"}, "dvc.yaml has a stage the registry does not know"


def test_every_registered_stage_has_a_prefect_task_with_its_retry_policy():
    pytest.importorskip("prefect")
    from prefect import Task

    import tasks.stages

    found = {t.name: t for t in vars(tasks.stages).values() if isinstance(t, Task)}
    for name, stage in STAGES.items():
        for task in (found.get(name), tasks.stages.stage_task(name)):  # the wired task, if any, and the generic one
            if task is not None:
                assert task.name == name and (task.retries > 0) == stage.resumable, name
                assert task.cache_policy is not None and not task.persist_result, name


@pytest.mark.slow
def test_the_generic_stage_task_runs_a_stage_in_a_real_flow(tmp_path, prefect_api):
    from prefect import flow

    from tasks.stages import stage_task

    @flow
    def draw(out):
        return stage_task("sample")(out, 2, 3)

    out = draw(tmp_path / "toy")
    assert sorted(p.name for p in out.glob("*.png")) == ["00.png", "01.png"] and (out / "masks" / "00.png").is_file()


@pytest.mark.parametrize("name", list(PIPELINE))
def test_dvc_code_deps_are_the_stage_import_closure(name: str):
    stage = body(PIPELINE[name])
    listed = {d for d in stage.get("deps", []) if isinstance(d, str) and d.endswith(".py")}
    needed = closure_files(dvc_command_roots(command(PIPELINE[name])))
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing and not extra, (
        f"dvc.yaml stage {name}: deps should list exactly its import closure; add {missing}, remove {extra} "
        "(`python tests/support/import_graph.py` rewrites them)"
    )


def test_no_import_cycles():
    for package in ("eqdiff", "tasks", "flows"):
        assert cycles(package) == [], f"import cycles in {package}/"


def test_core_never_imports_the_stage_layer_or_the_orchestration_tools():
    layer = ("eqdiff.stages", "eqdiff.cli", "eqdiff.world.__main__")  # the doors
    for module in all_modules("eqdiff"):
        if module.startswith(layer):
            continue
        doors = sorted(i for i in imports_of(module) if i.startswith(layer))
        assert not doors, f"core module {module} imports the stage layer {doors}"
    for module in all_modules("eqdiff"):
        source = module_file(module).read_text(encoding="utf-8")
        for tool in TOOLS:
            assert f"import {tool}" not in source and f"from {tool}" not in source, f"{module} imports {tool}"
    shared = {"eqdiff.stages", "eqdiff.stages.arguments"}  # the registry and the shared arguments
    for module in all_modules("eqdiff"):
        if module.startswith("eqdiff.stages."):
            other = sorted(i for i in imports_of(module) if i.startswith("eqdiff.stages.") and i not in shared)
            assert not other, f"stage {module} imports another stage's door {other}: share through the core"
    for module in all_modules("flows") + all_modules("tasks"):
        assert "eqdiff.cli" not in imports_of(module), f"{module} imports the CLI (use eqdiff.config)"


@pytest.mark.slow
def test_the_public_surface_loads_lazily_and_every_name_resolves():
    import subprocess
    import sys

    code = (
        "import sys, eqdiff; assert 'torch' not in sys.modules, 'import eqdiff imported torch'; "
        "missing = [n for n in eqdiff.__all__ if getattr(eqdiff, n, None) is None]; assert not missing, missing; "
        "assert eqdiff.EqDiffPipeline.__module__ == 'eqdiff.pipelines.eqdiff_pipeline'; "
        "assert set(eqdiff.__all__) - {'__version__'} == set(eqdiff._PUBLIC)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_stages_without_models_never_import_diffusers_or_transformers(tmp_path):
    """Importing diffusers and transformers takes about 4 s: the world demo's ``sample``, ``masks``, ``augment``
    and ``report`` stages and MLflow tracking need neither: the first three run through the real CLI without them."""
    import subprocess
    import sys

    subject = tmp_path / "subject"
    code = (
        "import sys\n"
        "from eqdiff.cli import main\n"
        "for argv in sys.argv[1:]:\n"
        "    assert main(argv.split()) == 0, argv\n"
        "import eqdiff.stages.report, tasks.tracking  # their work needs finished runs; their imports are the point\n"
        "loaded = sorted({'diffusers', 'transformers'} & set(sys.modules))\n"
        "assert not loaded, f'imported {loaded}'\n"
    )
    stages = [
        f"sample --out {subject} --world ball --num-photos 3",
        f"masks --subject-dir {subject} --class ball --out {tmp_path / 'masks'} -S masks.backend=files",
        f"augment --subject-dir {subject} --masks {tmp_path / 'masks'} --out {tmp_path / 'augment'}",
    ]
    result = subprocess.run([sys.executable, "-c", code, *stages], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_name_imported_from_the_repository_exists():
    """Imports inside functions run only when their path does: a name moved elsewhere fails here, not in a user's
    run (``from eqdiff.prep.masks import u2netp_path`` after U²-Netp moved to ``eqdiff.prep.u2netp``)."""
    import ast
    import importlib

    missing = []
    for package in ("eqdiff", "tasks", "flows"):
        for module in all_modules(package):
            for node in ast.walk(ast.parse(module_file(module).read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                if node.module.split(".")[0] not in ("eqdiff", "tasks", "flows"):
                    continue
                target = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(target, alias.name) and module_file(f"{node.module}.{alias.name}") is None:
                        missing.append(f"{module}: from {node.module} import {alias.name}")
    assert not missing, missing
