"""The project's user-facing error type (DESIGN §6).

Anything raised as ``EqDiffError`` is a problem with the user's input (a file, a field, a directory): the CLI
prints its one-line message and exits with status 2, with no traceback. Everything else is a bug and keeps its
traceback.
"""


class EqDiffError(Exception):
    """A user-input error whose message names the file or field and what was expected."""


class DataError(EqDiffError, ValueError):
    """An image, mask, subject folder or prompt is invalid."""


class TrainingError(EqDiffError, RuntimeError):
    """Training cannot go on (a NaN/inf loss, an incompatible checkpoint)."""
