"""Temporary files and folders being written, by any thread, so that an interrupted run removes them.

Each writer removes its own temporary on an error; a signal, though, unwinds only the main thread,
while a cohort writes its outputs in a background thread. The CLI calls :func:`discard_temporaries` on the
way out of an interrupted run.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["register", "release", "in_flight", "discard_temporaries"]

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
