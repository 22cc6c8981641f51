"""Which process owns an MLflow run, so that no run of a dead tracking process stays RUNNING.

Every run the tracking code creates is tagged with its host and pid (``owner_tags``). A tracking process stopped
by SIGTERM raises ``Terminated`` in its main thread (``raise_terminated``) and ends its open runs as KILLED; one
killed outright (SIGKILL, power loss) cannot, so the next tracking run on the same host ends the RUNNING runs
whose process is gone (``close_stale_runs``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

logger = logging.getLogger(__name__)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (whose default action exits at once), so runs end as KILLED."""


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


def owner_tags() -> dict[str, str]:
    """Which process created a run: a later run on this host closes it when that process is gone."""
    return {"eqdiff.host": socket.gethostname(), "eqdiff.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def close_stale_runs(client, experiment_id: str) -> list[str]:
    """End as KILLED every RUNNING run that a tracking process on this host started and that process is gone
    (SIGKILL, power loss: nothing could end it then). Returns their ids."""
    host, stale = socket.gethostname(), []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid = tags.get("eqdiff.pid", "")
        if tags.get("eqdiff.host") == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            stale.append(run.info.run_id)
    if stale:
        logger.warning("MLflow: %d run(s) of a killed tracking process ended as KILLED", len(stale))
    return stale
