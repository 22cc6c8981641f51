"""Retries only where a retry can help (docs/robustness.md, "Retries"), through a real flow run: a resumable stage
that meets a read-only output fails once with the CLI's one line, while an output another live process holds
and a lost connection stay retried."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from support.flow_params import write_params

from eqdiff.errors import EqDiffError
from eqdiff.io.artifacts import OutputBusyError
from eqdiff.prep.sample import make_sample_subject
from tasks.stages import StageOSError, one_line_os_errors, retry_unless_user_error


def read_only(folder: Path) -> None:
    """Make ``folder`` read-only as a user meets it: a read-only mount when running as root (root ignores file
    modes), else the folder's mode."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root without the right to mount a read-only file system: {mounted.stderr!r}")


def release(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
    else:
        folder.chmod(0o755)


# slow: it starts a Prefect API server (the per-worker harness, 30-50 s on 2 cores), which no other fast test needs.
@pytest.mark.slow
def test_a_read_only_output_fails_the_flow_once_with_the_one_line(tmp_path: Path, prefect_api, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.customize import customize

    subject = make_sample_subject(tmp_path / "subjects" / "toy", 2)
    params_file = write_params(tmp_path, [{"name": "toy", "dir": str(subject), "class_noun": "toy"}], ["F"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    read_only(tmp_path / "runs" / "prior")  # the prior stage's parent: prior is resumable, so it has retries
    try:
        state = customize(str(params_file), return_state=True)
    finally:
        release(tmp_path / "runs" / "prior")
    assert state.is_failed()
    [line] = state.message.strip().splitlines()
    assert "runs/prior" in line and ("read-only file system" in line or "permission denied" in line), line
    with get_client(sync_client=True) as client:
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        prior = [run for run in client.read_task_runs(flow_run_filter=flow_run) if run.name.startswith("prior")]
    assert len(prior) == 1 and prior[0].state.is_failed()
    assert prior[0].run_count == 1  # no retry: a read-only folder stays read-only
    assert not (tmp_path / "runs" / "toy").exists()  # nothing ran after it


class _State:
    """What ``retry_condition_fn`` is given: a state whose ``result()`` raises the task's exception."""

    def __init__(self, error: BaseException):
        self.error = error

    def result(self):
        raise self.error


def test_only_what_can_succeed_later_is_retried(tmp_path: Path):
    def fails(error: OSError):
        return one_line_os_errors(lambda: (_ for _ in ()).throw(error))

    with pytest.raises(StageOSError) as raised:
        fails(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out")))()
    assert str(raised.value) == f"{tmp_path / 'out'}: on a read-only file system; choose a writable location"
    assert isinstance(raised.value, EqDiffError)
    with pytest.raises(ConnectionResetError):  # a lost worker or server: passed on, to be retried
        fails(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))()
    retried = {
        "read-only output": StageOSError("x: on a read-only file system"),
        "bad photo": EqDiffError("x.jpg: not a readable image"),
        "output another live run holds": OutputBusyError("x: another run is writing this output directory"),
        "lost connection": ConnectionResetError(errno.ECONNRESET, "reset"),
        "a bug": RuntimeError("unexpected"),
    }
    assert {name: retry_unless_user_error(None, None, _State(e)) for name, e in retried.items()} == {
        "read-only output": False,
        "bad photo": False,
        "output another live run holds": True,
        "lost connection": True,
        "a bug": True,
    }
