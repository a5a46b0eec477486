"""Errors that blame the user's input rather than volsr (kept import-free so the CLI starts fast)."""

from __future__ import annotations

import os

__all__ = ["VolsrInputError", "VolsrInputWarning", "write_error", "one_line"]


class VolsrInputError(ValueError):
    """A file (or folder) the user gave cannot be used: missing, unreadable, 2-D, ambiguous, ...

    The message is one line, ``"{path}: {problem}"``; the CLI prints it as
    ``volsr: error: {path}: {problem}`` and exits with status 2.

    Args:
        path: the offending file or folder, as the user gave it.
        problem: what is wrong and, where possible, how to fix it.

    Example:
        >>> raise VolsrInputError("scan.nii.gz", "is 2-D (shape 256x256); volsr needs a 3-D volume")
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(str(problem).split())  # always a single line
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):
        # picklable across worker processes despite the two-argument constructor
        return (type(self), (self.path, self.problem))


class VolsrInputWarning(UserWarning):
    """Input volsr can use but not as well as it would like (e.g. slices with gaps); the CLI prints
    it as one line, ``volsr: warning: {message}``."""


def write_error(path: str | os.PathLike, exc: OSError) -> VolsrInputError:
    """The one-line error for an output that could not be written (read-only folder, disk full, ...):
    it names the output the user asked for, never the temporary file volsr wrote first."""
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return VolsrInputError(path, f"cannot be written: {cause}")


def one_line(exc: BaseException) -> str:
    """``exc`` as one line for the user: a missing file as ``path: reason``, anything else with its
    white space folded (a traceback's worth of text never reaches the terminal)."""
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())
