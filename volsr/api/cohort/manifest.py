"""The cohort manifest: one JSON line per scan and run, in the output folder.

``manifest.jsonl`` records every scan a run handled::

    {"input": "/data/c/sub-01.nii.gz", "series": null, "output": "/out/sub-01_sr.nii.gz",
     "status": "done", "seconds": 4.21, "error": null, "key": "9f2c...", "rank": 0,
     "finished": "2025-01-31T10:02:11.123456+00:00"}

``status`` is ``done`` (written), ``skipped`` (already done with the same bundle and options),
``exists`` (``--skip-existing``: an output was there) or ``failed`` (``error`` says why); ``key``
fingerprints the bundle's weights and the options (:func:`volsr.api.cohort.runner.run_key`).
Processes of one run write their own part (``manifest.rank<R>-of-<N>.jsonl`` under torchrun, merged
into ``manifest.jsonl`` by rank 0 at the end; ``manifest.shard<I>-of-<N>.jsonl`` for ``--shard``,
merged by ``volsr manifest DIR``). :func:`read_manifest` reads the merged file and every part.

Example:
    >>> latest_done(read_manifest("out"))["/out/a_sr.nii.gz"]["key"]
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "MANIFEST",
    "ManifestWriter",
    "part_name",
    "part_files",
    "read_manifest",
    "read_records",
    "latest_done",
    "merge_parts",
    "status_counts",
]

MANIFEST = "manifest.jsonl"
_PART_GLOB = "manifest.*-of-*.jsonl"


def part_name(kind: str, index: int, count: int) -> str:
    """The part file of process ``index`` of ``count``: ``kind`` is ``"rank"`` (torchrun) or ``"shard"``."""
    return f"manifest.{kind}{index}-of-{count}.jsonl"


def part_files(folder: str | os.PathLike) -> list[Path]:
    """The part files in ``folder`` (not yet merged), sorted by name."""
    return sorted(Path(folder).glob(_PART_GLOB))


class ManifestWriter:
    """Appends records to one manifest file, a line each, flushed at once (a crash loses nothing
    written before it); safe to call from several threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: Mapping) -> dict:
        line = {**record, "finished": datetime.now(timezone.utc).isoformat()}
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
        return line


def read_records(path: Path) -> list[dict]:
    """The records of one manifest file (a line cut short by a crash is left out)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: that scan is simply not recorded
        if isinstance(record, dict):
            records.append(record)
    return records


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """Every record in ``folder``'s manifest and its unmerged parts, oldest first."""
    files = [Path(folder) / MANIFEST, *part_files(folder)]
    records = [r for f in files if f.is_file() for r in read_records(f)]
    return sorted(records, key=lambda r: str(r.get("finished", "")))


def latest_done(records: Iterable[Mapping]) -> dict[str, Mapping]:
    """The last ``done`` record of each output path (records oldest first)."""
    return {str(r["output"]): r for r in records if r.get("status") == "done" and "output" in r}


def merge_parts(folder: str | os.PathLike, parts: Iterable[Path] | None = None) -> Path:
    """Append ``parts`` (default: every part file in ``folder``) to ``manifest.jsonl``, oldest record
    first, and remove them. Returns the manifest's path."""
    folder = Path(folder)
    parts = list(part_files(folder) if parts is None else parts)
    records = sorted((r for p in parts if p.is_file() for r in read_records(p)), key=lambda r: r["finished"])
    manifest = folder / MANIFEST
    with open(manifest, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, default=str) + "\n" for r in records)
    for p in parts:
        p.unlink(missing_ok=True)
    return manifest


def status_counts(records: Iterable[Mapping]) -> Counter:
    """How many records have each status."""
    return Counter(str(r.get("status")) for r in records)
