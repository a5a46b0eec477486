"""Errors that blame the user's input rather than volsr (kept import-free so the CLI starts fast).

An error that tells the user which setting to change names it through an :class:`Option`, so each
caller reads it in its own words: Python's ``overwrite=True`` from ``str(error)``, the command line's
``--overwrite`` from :func:`one_line` with ``cli=True`` (what the ``volsr`` command prints).

Example:
    >>> error = VolsrInputError("out.nii.gz", "exists; pass {overwrite} to replace it", overwrite=OVERWRITE)
    >>> str(error)                  # 'out.nii.gz: exists; pass overwrite=True to replace it'
    >>> one_line(error, cli=True)   # 'out.nii.gz: exists; pass --overwrite to replace it'
"""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple

__all__ = [
    "Option",
    "OVERWRITE",
    "VolsrInputError",
    "VolsrOptionError",
    "VolsrInputWarning",
    "write_error",
    "one_line",
]


class Option(NamedTuple):
    """A setting as each caller writes it: ``python`` in a call (``overwrite=True``), ``cli`` on the
    command line (``--overwrite``)."""

    python: str
    cli: str


#: replacing an existing output
OVERWRITE = Option("overwrite=True", "--overwrite")
_FIELD = re.compile(r"\{(\w+)\}")


def _fill(template: str, options: dict[str, Option], cli: bool) -> str:
    """``template`` with each ``{name}`` of ``options`` spelled for the command line or for Python; any
    other brace (a value quoted in the message) is left as it is."""

    def spelled(match: re.Match) -> str:
        option = options.get(match.group(1))
        return match.group(0) if option is None else option.cli if cli else option.python

    return _FIELD.sub(spelled, template) if options else template


class _NamesOptions:
    """An error whose message may name settings: a template with ``{name}`` fields for ``options``."""

    template: str
    options: dict[str, Option]

    def _name_options(self, message: str, options: dict[str, Option]) -> str:
        """Keep ``message`` (folded to one line) and ``options``; return the message in Python's words."""
        self.template = " ".join(str(message).split())
        self.options = options
        return _fill(self.template, options, cli=False)

    def words(self, cli: bool = False) -> str:
        """The message, its settings spelled for the command line (``cli``) or for Python."""
        return _fill(self.template, self.options, cli)


class VolsrInputError(_NamesOptions, ValueError):
    """A file (or folder) the user gave cannot be used: missing, unreadable, 2-D, ambiguous, ...

    The message is one line, ``"{path}: {problem}"``; the CLI prints it as
    ``volsr: error: {path}: {problem}`` and exits with status 2. A setting the problem names is a
    ``{name}`` field with its :class:`Option` as the keyword ``name``.

    Args:
        path: the offending file or folder, as the user gave it.
        problem: what is wrong and, where possible, how to fix it.
        options: the settings the problem names, by field.

    Example:
        >>> raise VolsrInputError("scan.nii.gz", "is 2-D (shape 256x256); volsr needs a 3-D volume")
        >>> volume = Option("volume=", "--volume")
        >>> raise VolsrInputError("bold.nii.gz", "is 4-D; pick one with {volume}", volume=volume)
    """

    def __init__(self, path: str | os.PathLike, problem: str, **options: Option) -> None:
        self.path = str(path)
        self.problem = self._name_options(problem, options)  # always a single line
        super().__init__(f"{self.path}: {self.problem}")

    def words(self, cli: bool = False) -> str:
        return f"{self.path}: {super().words(cli)}"

    def __reduce__(self):
        # picklable across worker processes despite the keyword-only options
        return (functools.partial(type(self), **self.options), (self.path, self.template))


class VolsrOptionError(_NamesOptions, ValueError):
    """An option value that cannot be used, with no file to blame (a window size of 0, an unknown
    device): one line naming the setting as the caller wrote it (:class:`Option` fields, as for
    :class:`VolsrInputError`).

    Example:
        >>> raise VolsrOptionError("{roi} takes 3 window sizes, got (1, 2)", roi=Option("roi", "--roi"))
    """

    def __init__(self, message: str, **options: Option) -> None:
        super().__init__(self._name_options(message, options))

    def __reduce__(self):
        return (functools.partial(type(self), **self.options), (self.template,))


class VolsrInputWarning(_NamesOptions, UserWarning):
    """Input volsr can use but not as well as it would like (e.g. slices with gaps); the CLI prints
    it as one line, ``volsr: warning: {message}``; settings it names are :class:`Option` fields."""

    def __init__(self, message: str = "", **options: Option) -> None:
        super().__init__(self._name_options(message, options))


def write_error(path: str | os.PathLike, exc: OSError) -> VolsrInputError:
    """The one-line error for an output that could not be written (read-only folder, disk full, ...):
    it names the output the user asked for, never the temporary file volsr wrote first."""
    cause = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return VolsrInputError(path, f"cannot be written: {cause}")


def one_line(exc: BaseException, cli: bool = False) -> str:
    """``exc`` as one line for the user: a missing file as ``path: reason``, anything else with its
    white space folded (a traceback's worth of text never reaches the terminal); settings it names
    spelled for the command line with ``cli``, else for Python."""
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, _NamesOptions):
        return exc.words(cli)
    return " ".join(str(exc).split())
