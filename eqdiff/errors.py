"""The project's user-facing error type (docs/robustness.md).

Anything raised as ``EqDiffError`` is a problem with the user's input (a file, a field, a directory): the CLI
prints its one-line message and exits with status 2, with no traceback. Operating-system errors (permission
denied, no space left, a file where a folder is expected) are the environment, not a bug: ``os_error_message``
gives the CLI their one line. Everything else is a bug and keeps its traceback.
"""

import errno


class EqDiffError(Exception):
    """A user-input error whose message names the file or field and what was expected."""


class DataError(EqDiffError, ValueError):
    """An image, mask, subject folder or prompt is invalid."""


class ModelError(EqDiffError, ValueError):
    """A model directory or checkpoint file is missing, incomplete or incompatible; the message names the path."""


class MaskModelError(ModelError):
    """A mask model file is missing, corrupt, foreign or does not match its config; the message names it."""


class TrainingError(EqDiffError, RuntimeError):
    """Training cannot go on (a NaN/inf loss, an incompatible checkpoint)."""


_ADVICE = {
    errno.EACCES: "permission denied; fix its permissions or choose another path",
    errno.EPERM: "operation not permitted (an immutable or protected file); choose another path",
    errno.EROFS: "on a read-only file system; choose a writable location",
    errno.ENOSPC: "no space left on the device; free some space or choose a location on another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose a location on another disk",
    errno.EFBIG: "file too large for this file system; choose a location on another disk",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EEXIST: "already exists; remove it or choose another path",
    errno.ENOTEMPTY: "folder is not empty; remove it or choose another path",
    errno.ENOENT: "not found",
    errno.ENAMETOOLONG: "name too long; choose a shorter path",
    errno.ELOOP: "too many levels of symbolic links",
    errno.ENXIO: "not a regular file (a socket or FIFO with no reader?)",
    errno.EXDEV: "cannot be moved across file systems; keep the output on one disk",
}


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error: the path(s), what went wrong and what to do."""
    where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    advice = _ADVICE.get(exc.errno, exc.strerror or str(exc) or type(exc).__name__)
    if exc.errno is not None and exc.errno not in _ADVICE and exc.strerror:
        advice = f"{exc.strerror} (errno {errno.errorcode.get(exc.errno, exc.errno)})"
    return f"{where}: {advice}" if where is not None else f"{advice} (operating-system error)"
