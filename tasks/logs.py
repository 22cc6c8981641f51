"""How ``eqdiff``'s log lines and user errors appear in Prefect's run logs (UI, ``prefect flow-run logs``).

- ``eqdiff``'s INFO and WARNING lines (a mask covering the whole photo, "resumed from ...") go to the log of
  the flow or task run that emitted them, as Prefect's ``logging.extra_loggers`` setting does, without the
  user setting it. Outside a run nothing is sent (no "missing flow run" warnings from the ``eqdiff`` CLI).
- A user error (``EqDiffError``: its message already names the file or field) is reported once, as one line:
  the final state of the task that raised it; the records repeating it with its traceback (the task's, then
  each enclosing flow's) are dropped. Any other exception keeps Prefect's tracebacks.

``forward_eqdiff_logs()`` runs when ``tasks.stages`` is imported, so in every process that runs a task: the
flow's, a served deployment's flow-run subprocess, each Dask worker.
"""

from __future__ import annotations

import logging

from eqdiff.errors import EqDiffError

EQDIFF_LOGGER = "eqdiff"


def _in_a_run(record: logging.LogRecord) -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def _user_error(exc: BaseException | None) -> EqDiffError | None:
    """The ``EqDiffError`` that ``exc`` is or was raised from (Prefect may wrap a task's exception)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, EqDiffError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class UserErrorOnce(logging.Filter):
    """On Prefect's run loggers: drop the records that carry a user error with its traceback.

    Prefect logs a failing run's exception with its traceback ("Task run failed with exception", then
    "Encountered exception during execution" in each enclosing flow), and then the run's final state, whose
    message holds the error's. For an ``EqDiffError`` the final state of the task that raised it,
    ``Finished in state Failed('... DataError: <file>: <what was expected>')``, is then its one report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _user_error(record.exc_info[1]) is not None)


def forward_eqdiff_logs() -> None:
    """Attach Prefect's API log handler to the ``eqdiff`` logger (INFO and up; unless the user's
    ``PREFECT_LOGGING_EXTRA_LOGGERS`` already did) and ``UserErrorOnce`` to Prefect's run loggers; idempotent."""
    from prefect.logging.handlers import APILogHandler

    eqdiff_logger = logging.getLogger(EQDIFF_LOGGER)
    if eqdiff_logger.level == logging.NOTSET:  # an explicit user level wins
        eqdiff_logger.setLevel(logging.INFO)
    if not any(isinstance(h, APILogHandler) for h in eqdiff_logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_in_a_run)
        eqdiff_logger.addHandler(handler)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        run_logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorOnce) for f in run_logger.filters):
            run_logger.addFilter(UserErrorOnce())
