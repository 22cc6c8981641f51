"""One Prefect task per pipeline stage (DESIGN §3): each calls the stage's function in ``eqdiff/stages/``.

That function (``masks_stage``, ``train_concept``, …) is the one the ``eqdiff <stage>`` CLI — and so the DVC
stage — calls, with the same params mapping, so a flow and ``dvc repro`` produce the same artefacts. Tasks take
and return paths. Prefect caching is off (``cache_policy=NONE``): the stages skip work whose inputs are
unchanged, and DVC caches the DVC path.

Retries only where one can help: ``prior``, ``train`` and ``generate`` resume from what they already wrote (a
lost worker, a CUDA OOM beside another job), and ``track`` may meet a locked SQLite store. A user error
(``EqDiffError``: a corrupt photo, a bad param) is never retried: the run fails with the stage's one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from eqdiff.errors import EqDiffError
from eqdiff.layout import RunLayout
from eqdiff.report import build_report
from eqdiff.sample_subject import make_sample_subject
from eqdiff.stages.augment import augment_stage
from eqdiff.stages.bands import bands_stage
from eqdiff.stages.evaluate import evaluate_stage
from eqdiff.stages.generate import generate_samples
from eqdiff.stages.masks import masks_stage
from eqdiff.stages.prior import prior_stage
from eqdiff.stages.train import train_concept
from tasks.logs import forward_eqdiff_logs
from tasks.spec import SubjectSpec
from tasks.tracking import log_pipeline

forward_eqdiff_logs()  # in every process that runs these tasks (the flow's, each Dask worker)


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry unexpected failures, never an ``EqDiffError``."""
    try:
        state.result()
    except EqDiffError:
        return False
    except Exception:
        return True
    return False


STAGE = {"cache_policy": NONE, "persist_result": False}
RETRYING = {**STAGE, "retries": 2, "retry_delay_seconds": 10, "retry_condition_fn": retry_unless_user_error}


@task(name="sample", task_run_name="sample-{out.name}", **STAGE)
def sample_task(out: Path, num_photos: int = 4, seed: int = 0) -> Path:
    """The demo's synthetic subject (``eqdiff sample``)."""
    return make_sample_subject(out, num_photos=num_photos, seed=seed)


@task(name="masks", task_run_name="masks-{subject.name}", **STAGE)
def masks_task(subject: SubjectSpec, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff masks``: subject masks + overlay sheet."""
    return masks_stage(subject.dir, subject.class_noun, layout.masks(subject.name), params)


@task(name="augment", task_run_name="augment-{subject.name}", **STAGE)
def augment_task(subject: SubjectSpec, masks: Path, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff augment``: seeded reference views (``masks`` = the masks task's output)."""
    return augment_stage(subject.dir, masks, layout.augment(subject.name), params)


@task(name="bands", task_run_name="bands-{subject.name}", **STAGE)
def bands_task(subject: SubjectSpec, masks: Path, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff bands``: band images and their VAE posteriors."""
    return bands_stage(subject.dir, masks, layout.bands(subject.name), params)


@task(name="prior", task_run_name="prior-{class_noun}", **RETRYING)
def prior_task(class_noun: str, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff prior``: class images (resumable)."""
    return prior_stage(class_noun, layout.prior(class_noun), params)


@task(name="train", task_run_name="train-{subject.name}-{variant}", **RETRYING)
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
    variant_params = {**params, "train": {**(params.get("train") or {}), "variant": variant}}
    return train_concept(
        subject.dir,
        subject.class_noun,
        layout.concept(subject.name, variant),
        variant_params,
        masks=masks,
        augment=augment,
        bands=bands,
        prior=prior,
        work_dir=layout.concept_work(subject.name, variant),
        losses=layout.losses(subject.name, variant),
    )


@task(name="generate", task_run_name="generate-{subject.name}-{variant}", **RETRYING)
def generate_task(
    concept: Path,
    subject: SubjectSpec,
    variant: str,
    layout: RunLayout,
    prompt_sets: dict[str, Path],
    params: dict[str, Any],
) -> Path:
    """``eqdiff generate``: samples of ``concept`` (the train task's output; keeps finished images)."""
    return generate_samples(concept, layout.samples(subject.name, variant), params, prompt_sets)


@task(name="evaluate", task_run_name="evaluate-{subject.name}-{variant}", **STAGE)
def evaluate_task(samples: Path, subject: SubjectSpec, variant: str, layout: RunLayout, params: dict[str, Any]) -> Path:
    """``eqdiff evaluate``: ``metrics.json`` of ``samples`` (the generate task's output)."""
    return evaluate_stage(samples, subject.dir, layout.metrics(subject.name, variant), params)


@task(name="report", **STAGE)
def report_task(layout: RunLayout, out: Path, metrics: list[Path]) -> Path:
    """``eqdiff report`` of the runs whose ``<subject>/<variant>/metrics.json`` are ``metrics`` (this flow's
    evaluations), not of every folder under ``layout.runs``."""
    return build_report(layout.runs, out, [(path.parent.parent.name, path.parent.name) for path in metrics])


@task(name="track", **RETRYING)
def track_task(params: dict[str, Any], layout: RunLayout, report: Path | None, source: str) -> dict[str, Any]:
    """MLflow: a parent run and a nested run per (subject, variant), as the DVC ``track`` stage logs them."""
    return log_pipeline(params, layout.runs, report, run_name=f"pipeline-{source}", source=source)
