"""What a Prefect user reads in the run logs (read back through Prefect's API): eqdiff's own INFO/WARNING
lines under the task run that emitted them, and a user error once, as one line, without a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

from eqdiff.io.run_layout import RunLayout
from tasks.spec import SubjectSpec


def run_logs(flow_run_id) -> list:
    """Every log record of the flow run and its task runs, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # records are sent in batches by a background worker
    with get_client(sync_client=True) as client:
        logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        return client.read_logs(log_filter=logs, sort=LogSort.TIMESTAMP_ASC)


def masks_flow():
    from prefect import flow

    from tasks.stages import masks_task

    @flow(name="masks-only")
    def masks_only(subject: SubjectSpec, layout: RunLayout, params: dict) -> Path:
        return masks_task(subject, layout, params)

    return masks_only


def test_eqdiff_warnings_and_info_reach_the_task_run_log(subject_dir: Path, tmp_path: Path, prefect_api):
    subject = SubjectSpec("toy", subject_dir, "toy", "toy")
    params = {"masks": {"backend": "files", "files_dir": str(subject_dir / "masks"), "max_foreground_warn": 0.01}}
    state = masks_flow()(subject, RunLayout(tmp_path / "runs"), params, return_state=True)
    assert state.is_completed()

    logs = run_logs(state.state_details.flow_run_id)
    warnings = [log for log in logs if log.level == logging.WARNING and "mask covers" in log.message]
    assert len(warnings) == 3 and all(log.task_run_id is not None for log in warnings)  # one per photo
    assert any(log.level == logging.INFO and "3 masks, 3 warning(s)" in log.message for log in logs)


def test_a_user_error_is_reported_once_in_one_line(subject_dir: Path, tmp_path: Path, prefect_api):
    photo = sorted(subject_dir.glob("*.png"))[0]
    photo.write_bytes(photo.read_bytes()[:200])  # a truncated download
    subject = SubjectSpec("toy", subject_dir, "toy", "toy")
    state = masks_flow()(subject, RunLayout(tmp_path / "runs"), {}, return_state=True)
    assert state.is_failed() and photo.name in state.message

    logs = run_logs(state.state_details.flow_run_id)
    errors = [log for log in logs if log.level >= logging.ERROR]
    # The failing task's final state, "Finished in state Failed('... DataError: <photo>: corrupt ...')".
    assert len(errors) == 1 and photo.name in errors[0].message, [log.message for log in errors]
    assert errors[0].task_run_id is not None and "DataError" in errors[0].message
    assert "\n" not in errors[0].message.strip()
    assert not [log.message for log in logs if "Traceback" in log.message]
