"""One Prefect task per pipeline stage: each calls the stage's ``run`` of the registry ``eqdiff.stages.STAGES``.

That ``run`` is the one the ``eqdiff <stage>`` CLI — and so the DVC stage — calls, with the same params, so a
flow and ``dvc repro`` produce the same artefacts (docs/architecture.md). Tasks take and return paths; the
run folders come from the layout. Prefect caching is off (``cache_policy=NONE``): the stages skip work whose
inputs are unchanged, and DVC caches the DVC path.

Retries only where one can help: the registry's ``resumable`` stages (``prior``, ``train``, ``generate``)
resume from what they already wrote (a lost worker, a CUDA OOM beside another job, an output whose lock a live
process holds), and ``track`` may meet a locked SQLite store. What a retry cannot fix fails the task once, with
the one line the CLI would print (docs/robustness.md, "Retries"): a user error (``EqDiffError``: a corrupt photo,
a bad param) and an operating-system error about a path (a read-only output, a missing folder, a full disk:
``os_error_message``). Connection errors (a lost Dask worker or server) stay retried.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from eqdiff.config import Params
from eqdiff.errors import EqDiffError, os_error_message
from eqdiff.io.artifacts import OutputBusyError
from eqdiff.io.run_layout import RunLayout
from eqdiff.stages import STAGES
from tasks.logs import forward_eqdiff_logs
from tasks.spec import SubjectSpec
from tasks.tracking import log_pipeline

forward_eqdiff_logs()  # in every process that runs these tasks (the flow's, each Dask worker)


class StageOSError(EqDiffError):
    """An operating-system error of a stage, as the CLI's one line (``os_error_message``): not retried."""


def one_line_os_errors(function):
    """``function`` with its operating-system errors about paths raised as ``StageOSError`` (one line); connection
    errors (``ConnectionError``, ``TimeoutError``, a closed Dask comm) pass unchanged, to be retried."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__module__.startswith("distributed"):
                raise
            raise StageOSError(os_error_message(exc)) from None

    return wrapper


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry what may succeed later (an output another live process is writing,
    unexpected failures), never a user error or a path's operating-system error (both ``EqDiffError``)."""
    try:
        state.result()
    except OutputBusyError:
        return True
    except EqDiffError:
        return False
    except Exception:
        return True
    return False


STAGE = {"cache_policy": NONE, "persist_result": False}
RETRYING = {**STAGE, "retries": 2, "retry_delay_seconds": 10, "retry_condition_fn": retry_unless_user_error}


def options(stage: str) -> dict[str, Any]:
    """The task options of a registered stage: retried when it is resumable."""
    return RETRYING if STAGES[stage].resumable else STAGE


def run(stage: str):
    """The typed ``run`` of a registered stage (its module imported in the process that runs the task), its
    operating-system errors as one line (``one_line_os_errors``)."""
    return one_line_os_errors(STAGES[stage].load().run)


@task(name="check-models", **options("check-models"))
def check_models_task(params: dict[str, Any], layout: RunLayout) -> list[Any]:
    """``eqdiff check-models``: every model path checked in seconds (fails with one line per problem); the table
    goes to ``check-models.txt`` of the runs folder, as the DVC stage writes it."""
    return run("check-models")(params, layout.runs / "check-models.txt")


@functools.cache
def stage_task(stage: str):
    """The Prefect task of any registered stage, named after it, calling the stage's ``run`` with the arguments
    it is given (``stage_task("sample")(out, 4, 0)``), retried when the stage is resumable. A new stage needs no
    edit here; the tasks below add run names and the run-folder wiring for the stages the flows fan out."""

    def run_stage(*args: Any, **kwargs: Any) -> Any:
        return run(stage)(*args, **kwargs)

    run_stage.__name__ = run_stage.__qualname__ = f"{stage.replace('-', '_')}_stage"
    return task(name=stage, **options(stage))(run_stage)


@task(name="masks", task_run_name="masks-{subject.name}", **options("masks"))
def masks_task(subject: SubjectSpec, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff masks``: subject masks + overlay sheet."""
    return run("masks")(subject.dir, subject.class_noun, layout.masks(subject.name), params)


@task(name="augment", task_run_name="augment-{subject.name}", **options("augment"))
def augment_task(subject: SubjectSpec, masks: Path, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff augment``: seeded reference views (``masks`` = the masks task's output)."""
    return run("augment")(subject.dir, masks, layout.augment(subject.name), params)


@task(name="bands", task_run_name="bands-{subject.name}", **options("bands"))
def bands_task(subject: SubjectSpec, masks: Path, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff bands``: band images and their VAE posteriors."""
    return run("bands")(subject.dir, masks, layout.bands(subject.name), params)


@task(name="prior", task_run_name="prior-{class_noun}", **options("prior"))
def prior_task(class_noun: str, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff prior``: class images (resumable)."""
    return run("prior")(class_noun, layout.prior(class_noun), params)


@task(name="train", task_run_name="train-{subject.name}-{variant}", **options("train"))
def train_task(
    subject: SubjectSpec,
    variant: str,
    masks: Path,
    augment: Path,
    bands: Path,
    prior: Path,
    layout: RunLayout,
    params: dict[str, Any],
) -> Path:
    """``eqdiff train -S train.variant=<variant>``: the concept (resumes from its checkpoints)."""
    return run("train")(
        subject.dir,
        subject.class_noun,
        layout.concept(subject.name, variant),
        Params.of(params).with_variant(variant),
        masks=masks,
        augment=augment,
        bands=bands,
        prior=prior,
        work_dir=layout.concept_work(subject.name, variant),
        losses=layout.losses(subject.name, variant),
    )


@task(name="generate", task_run_name="generate-{subject.name}-{variant}", **options("generate"))
def generate_task(
    concept: Path,
    subject: SubjectSpec,
    variant: str,
    layout: RunLayout,
    prompt_sets: dict[str, Path],
    params: dict[str, Any],
) -> Path:
    """``eqdiff generate``: samples of ``concept`` (the train task's output; keeps finished images)."""
    return run("generate")(concept, layout.samples(subject.name, variant), params, prompt_sets)


@task(name="evaluate", task_run_name="evaluate-{subject.name}-{variant}", **options("evaluate"))
def evaluate_task(samples: Path, subject: SubjectSpec, variant: str, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff evaluate``: ``metrics.json`` of ``samples`` (the generate task's output)."""
    return run("evaluate")(samples, subject.dir, layout.metrics(subject.name, variant), params)


@task(name="report", **options("report"))
def report_task(layout: RunLayout, out: Path, metrics: list[Path]) -> Path:
    """``eqdiff report`` of the runs whose ``<subject>/<variant>/metrics.json`` are ``metrics`` (this flow's
    evaluations), not of every folder under ``layout.runs``."""
    return run("report")(layout.runs, out, [(path.parent.parent.name, path.parent.name) for path in metrics])


@task(name="track", **RETRYING)
def track_task(params: dict[str, Any], layout: RunLayout, report: Path | None, source: str) -> dict[str, Any]:
    """MLflow: a parent run and a nested run per (subject, variant), as the DVC ``track`` stage logs them."""
    return log_pipeline(params, layout.runs, report, run_name=f"pipeline-{source}", source=source)
