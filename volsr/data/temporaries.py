"""Temporary files and folders being written, by any thread, so that an interrupted run removes them.

Each writer removes its own temporary on an error; a signal, though, unwinds only the main thread,
while a cohort writes its outputs in a background thread. The CLI calls :func:`discard_temporaries` on the
way out of an interrupted run. :func:`temporary_name` names them within the file system's name limit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["register", "release", "in_flight", "discard_temporaries", "temporary_name", "name_limit"]

#: bytes a file name may have where the file system does not say (POSIX NAME_MAX on Linux and macOS)
DEFAULT_NAME_MAX = 255

_lock = threading.Lock()
_paths: set[Path] = set()


def register(path: Path) -> None:
    """``path`` is being written: :func:`discard_temporaries` removes it until :func:`release`."""
    with _lock:
        _paths.add(path)


def release(path: Path) -> None:
    """``path`` is finished (renamed) or removed by its writer."""
    with _lock:
        _paths.discard(path)


@contextlib.contextmanager
def in_flight(path: Path) -> Iterator[Path]:
    """:func:`register` ``path`` while the block writes it (the block removes it on failure)."""
    register(path)
    try:
        yield path
    finally:
        release(path)


def discard_temporaries() -> list[Path]:
    """Remove every registered temporary (file or folder); returns what was removed."""
    with _lock:
        paths = list(_paths)
        _paths.clear()
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return paths


def name_limit(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, the file system of ``folder`` (or of its nearest existing
    parent) allows: ``NAME_MAX``, 255 on the usual file systems."""
    here = Path(os.path.abspath(folder))
    for existing in (here, *here.parents):
        try:
            return int(os.pathconf(existing, "PC_NAME_MAX"))
        except OSError:  # not there (yet), or a name too long itself: ask its parent
            continue
        except (ValueError, AttributeError):  # no such query on this system
            break
    return DEFAULT_NAME_MAX


def temporary_name(out: Path, kind: str = "tmp", suffix: str = "") -> Path:
    """A fresh hidden name beside ``out`` to write it under first: ``.<name>.<8 hex>.<kind><suffix>``,
    the ``<name>`` part shortened (whole UTF-8 characters) so that the name stays within the file
    system's limit (:func:`name_limit`) for every output name that fits it itself.

    Example:
        >>> temporary_name(Path("out/scan_sr.nii.gz"), suffix=".nii.gz").name  # doctest: +SKIP
        '.scan_sr.nii.gz.1a2b3c4d.tmp.nii.gz'
    """
    tail = f".{secrets.token_hex(4)}.{kind}{suffix}"
    room = name_limit(out.parent) - len(os.fsencode("." + tail))
    name = out.name
    while len(os.fsencode(name)) > room and name:
        name = name[:-1]
    return out.with_name(f".{name}{tail}")
