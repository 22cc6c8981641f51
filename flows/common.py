"""What every flow shares: the plan (params + ``-S`` overrides, the pipeline's top-level keys and where the
runs live: the store, ``tasks.store``) and the one per-subject DAG of stages (``subject_stages``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eqdiff.config import OrchestrationConfig, apply_cli_overrides, load_params
from eqdiff.io.run_layout import RunLayout
from tasks.spec import (
    DEMO_SUBJECT,
    DEMO_SUBJECT_DIR,
    SubjectSpec,
    read_prompt_sets,
    read_subject_classes,
    read_subjects,
    read_variants,
)
from tasks.stages import (
    augment_task,
    bands_task,
    evaluate_task,
    generate_task,
    masks_task,
    stage_task,
    train_task,
)
from tasks.store import stage_inputs, store_root


@dataclass(frozen=True)
class Plan:
    """The params of one flow run and what they ask for; every path absolute (a task may run elsewhere)."""

    params: dict[str, Any]
    subjects: list[SubjectSpec]
    classes: list[str]
    """The class nouns the subjects use, each once."""
    variants: list[str]
    prompt_sets: dict[str, Path]
    layout: RunLayout
    reports: Path
    """The report folder."""
    store: Path
    """The store root: ``runs`` and ``reports`` resolve against it."""

    def draw_demo_subject(self) -> None:
        """Draw the embedded demo's subject (``eqdiff sample``) when a subject is it and it is missing."""
        for subject in self.subjects:
            if subject.dir == DEMO_SUBJECT_DIR.absolute() and not subject.dir.exists():
                stage_task("sample")(subject.dir, **DEMO_SUBJECT)

    def staged(self) -> Plan:
        """This plan with its subject folders and prompt files copied into the store (``tasks.store``) when
        ``orchestration.store`` is set, so tasks on other machines read them there; else itself."""
        config = OrchestrationConfig.from_mapping(self.params.get("orchestration"))
        if not config.store:
            return self
        subjects, prompt_sets = stage_inputs(self.subjects, self.prompt_sets, self.store)
        return dataclasses.replace(self, subjects=subjects, prompt_sets=prompt_sets)


def read_plan(
    params_file: str | Path, overrides: list[str] | None, runs_dir: str | Path, reports_dir: str | Path = "reports"
) -> Plan:
    """``params_file`` with ``section.key=value`` overrides applied, as ``eqdiff -S`` and ``dvc exp run -S``.

    Subject folders and prompt files resolve against the current directory, ``runs_dir`` and ``reports_dir``
    against the store root (``orchestration.store``, default the current directory)."""
    params = apply_cli_overrides(load_params(params_file), list(overrides or []))
    root = store_root(OrchestrationConfig.from_mapping(params.get("orchestration")))
    subjects = [dataclasses.replace(s, dir=s.dir.absolute()) for s in read_subjects(params)]
    return Plan(
        params,
        subjects,
        list(read_subject_classes(subjects).values()),
        read_variants(params),
        {name: path.absolute() for name, path in read_prompt_sets(params).items()},
        RunLayout.under(root, runs_dir),
        (root / reports_dir).absolute(),
        root,
    )


Call = Callable[..., Any]
"""How a flow runs a task: ``run_now`` (in this process, in order) or ``submit`` (to the flow's task runner)."""


def run_now(task, *args: Any) -> Any:
    return task(*args)


def submit(task, *args: Any) -> Any:
    return task.submit(*args)


def subject_stages(plan: Plan, subject: SubjectSpec, prior: Any, call: Call = run_now) -> list[Any]:
    """The stages of one subject, every variant: masks -> augment, bands -> train -> generate -> evaluate, each
    task run through ``call`` (``prior`` is that class's prior task result or future). Returns the evaluations
    (metrics files, or futures of them). The one place the flows wire the stages together, as dvc.yaml does."""
    layout, params = plan.layout, plan.params
    masks = call(masks_task, subject, layout, params)
    augment = call(augment_task, subject, masks, layout, params)
    bands = call(bands_task, subject, masks, layout, params)
    evaluations = []
    for variant in plan.variants:
        concept = call(train_task, subject, variant, masks, augment, bands, prior, layout, params)
        samples = call(generate_task, concept, subject, variant, layout, plan.prompt_sets, params)
        evaluations.append(call(evaluate_task, samples, subject, variant, layout, params))
    return evaluations
