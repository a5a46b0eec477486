"""What a cohort is made of, and where each output goes.

``volsr infer`` takes scan files, DICOM series folders, folders of scans, list files (one path a
line, or a MONAI-style JSON datalist) and BIDS dataset roots. :func:`discover` turns them into
:class:`Scan` entries, each with the path its output keeps relative to the output folder;
:func:`plan_outputs` gives every scan (or, with ``--series all``, every series) its output path, named
by :mod:`volsr.api.outputs`.

Example:
    >>> scans = discover(["cohort/", "extra.nii.gz"])
    >>> jobs = plan_outputs(scans, Path("out"))     # out/<relative folder>/<stem>_sr.nii.gz
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from volsr.api.outputs import (
    BIDS_DERIVATIVES,
    bids_output_name,
    dicom_folder_for,
    output_path_for,
    series_outputs,
)
from volsr.data.io import VOLUME_SUFFIXES, scan_stem
from volsr.errors import Option, VolsrInputError, VolsrInputWarning, VolsrOptionError

__all__ = [
    "ALL_SERIES",
    "LIST_SUFFIXES",
    "Scan",
    "Job",
    "discover",
    "is_dicom_folder",
    "is_bids_root",
    "plan_outputs",
    "default_output_folder",
]

#: ``--series all``: every series of a DICOM folder, each to its own output
ALL_SERIES = "all"
#: the settings a cohort's refusals name, as Python and the command line spell them
SERIES_ALL = Option("series='all'", "--series all")
OUTPUT_FOLDER = Option("OutputOptions(path=DIR)", "-o DIR")
#: endings of list files: one path a line (``#`` starts a comment), or a MONAI-style JSON datalist
LIST_SUFFIXES = (".txt", ".lst", ".list", ".json")
_DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class Scan:
    """One input volume (a file or a DICOM series folder).

    Attributes:
        path: the file or folder to read.
        relative: where its output goes inside the output folder (its folder and name); ``None`` for a
            scan named on the command line, whose output goes at the top of the output folder.
        bids_root: the BIDS dataset it comes from (its outputs are BIDS derivatives), else ``None``.
    """

    path: Path
    relative: PurePath | None = None
    bids_root: Path | None = None


@dataclass(frozen=True)
class Job:
    """One output to make: read ``src`` (series ``series_uid`` of a DICOM folder), write ``dst``."""

    src: Path
    dst: Path
    series_uid: str | None = None


def is_dicom_folder(folder: Path, probe: int = 8) -> bool:
    """Whether ``folder`` directly holds DICOM files: a ``.dcm`` file, or one of its first ``probe``
    other files with the ``DICM`` marker at byte 128 (files from a PACS often have no ending)."""
    looked = 0
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        name = entry.name.lower()
        if name.endswith(".dcm"):
            return True
        if name.endswith(VOLUME_SUFFIXES + (".json", ".txt")) or looked >= probe:
            continue
        looked += 1
        try:
            with open(entry.path, "rb") as f:
                f.seek(_DICOM_MAGIC_OFFSET)
                if f.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def is_bids_root(folder: Path) -> bool:
    """A BIDS dataset: ``dataset_description.json`` beside ``sub-*`` folders."""
    return (folder / "dataset_description.json").is_file() and any(folder.glob("sub-*/"))


def _bids_scans(root: Path) -> list[Scan]:
    """``sub-*/[ses-*/]anat/*.nii[.gz]`` of a BIDS dataset."""
    found = [*root.glob("sub-*/anat/*.nii*"), *root.glob("sub-*/ses-*/anat/*.nii*")]
    files = sorted(p for p in found if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("."))
    return [Scan(p, p.relative_to(root), bids_root=root) for p in files]


def _folder_scans(root: Path) -> list[Scan]:
    """Every volume file and DICOM series folder under ``root``, hidden ones left out."""
    scans = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if here != root and is_dicom_folder(here):
            scans.append(Scan(here, here.relative_to(root)))
            dirs[:] = []  # a series folder is one scan
            continue
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(VOLUME_SUFFIXES):
                scans.append(Scan(here / name, (here / name).relative_to(root)))
    return scans


def _list_entries(list_file: Path) -> list[Path]:
    """The paths a list file names, relative ones taken from the list file's folder."""
    if list_file.suffix.lower() == ".json":
        from monai.data import load_decathlon_datalist

        try:
            keys = [k for k, v in json.loads(list_file.read_text()).items() if isinstance(v, list)]
            items = [
                item["image"]
                for key in keys
                for item in load_decathlon_datalist(list_file, is_segmentation=False, data_list_key=key)
                if isinstance(item, dict) and "image" in item
            ]
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise VolsrInputError(list_file, f"is not a JSON datalist of images: {exc}") from None
        paths = [Path(p) for p in dict.fromkeys(str(i) for i in items)]
    else:
        lines = (line.strip() for line in list_file.read_text().splitlines())
        paths = [list_file.parent / line for line in lines if line and not line.startswith("#")]
    if not paths:
        raise VolsrInputError(list_file, "lists no scans")
    return paths


def _relative_to_common_folder(paths: Sequence[Path]) -> list[PurePath]:
    """Each path relative to the deepest folder holding them all: the layout their outputs keep."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([p.parent for p in absolute]))
    return [p.relative_to(common) for p in absolute]


def discover(inputs: Sequence[str | os.PathLike]) -> list[Scan]:
    """The scans in ``inputs``, sorted by path: files and DICOM series folders as they are, folders
    of scans walked, list files read, BIDS roots' anatomical NIfTI files.

    A path that does not exist is kept as a scan, so that it fails on its own (named in the
    manifest) rather than stopping the cohort. A scan given more than once is kept once, with a note.

    Raises:
        VolsrInputError: a folder that holds no scans, a list file that lists none.
    """
    scans: list[Scan] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if is_dicom_folder(path):
                scans.append(Scan(path))
            elif is_bids_root(path):
                scans += _bids_scans(path) or _none_found(path, "sub-*/[ses-*/]anat/*.nii.gz files")
            else:
                scans += _folder_scans(path) or _none_found(path, "volume files or DICOM series folders")
        elif path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
            entries = _list_entries(path)
            layout = _relative_to_common_folder(entries)
            scans += [Scan(p, rel) for p, rel in zip(entries, layout, strict=True)]
        else:
            scans.append(Scan(path))
    return sorted(_once_each(scans), key=lambda s: str(s.path))


def _once_each(scans: Sequence[Scan]) -> list[Scan]:
    """``scans`` with each file or folder once (the first time it was given), and a note on stderr
    (:class:`~volsr.errors.VolsrInputWarning`) for each repeat: ``a.nii.gz ./a.nii.gz``, a list
    naming a scan twice, a folder and a file inside it."""
    kept: dict[Path, Scan] = {}
    for scan in scans:
        key = Path(os.path.abspath(scan.path)).resolve()
        if key in kept:
            warnings.warn(
                f"{scan.path}: given more than once (also as {kept[key].path}); processed once",
                VolsrInputWarning,
                stacklevel=3,
            )
            continue
        kept[key] = scan
    return list(kept.values())


def _none_found(folder: Path, what: str) -> list[Scan]:
    raise VolsrInputError(folder, f"holds no scans (no {what}); give scan files, folders or a list file")


def default_output_folder(scans: Sequence[Scan]) -> Path | None:
    """Where a cohort's outputs go without ``-o``: a BIDS dataset's ``derivatives/volsr`` when all
    scans come from one; else ``None`` (scans named on the command line go to the current folder)."""
    roots = {s.bids_root for s in scans}
    if len(roots) == 1 and (root := roots.pop()) is not None:
        return root / BIDS_DERIVATIVES
    return None


def plan_outputs(
    scans: Sequence[Scan],
    out_dir: Path | None,
    series: str | None = None,
    dicom: bool = False,
    expand_series: bool = True,
) -> list[Job]:
    """The output of each scan inside ``out_dir`` (default: the current folder): ``<stem>_sr.nii.gz``
    in the scan's relative folder, ``<entities>_desc-sr_<suffix>.nii.gz`` for a BIDS scan; with
    ``series="all"`` one output per series of each DICOM folder (:func:`volsr.api.outputs.series_outputs`);
    with ``dicom`` the series folder ``<stem>_sr``. Sorted by source, then output. With
    ``expand_series=False`` the folders' series are not listed (a check of the whole cohort that
    reads no headers: one job per scan).

    Raises:
        ValueError: ``--series all`` given a file; a folder or list of scans without ``out_dir``.
        VolsrInputError: two scans whose outputs would have the same name.
    """
    jobs: list[Job] = []
    owner: dict[Path, Path] = {}
    for scan in scans:
        if scan.relative is not None and scan.bids_root is None and out_dir is None:
            raise VolsrOptionError(
                f"{scan.path}: scans found in a folder or list need a folder: " + "{out}", out=OUTPUT_FOLDER
            )
        if scan.bids_root is not None:
            folder = (out_dir or scan.bids_root / BIDS_DERIVATIVES) / scan.relative.parent
            planned = [(None, folder / bids_output_name(scan.path.name))]
        else:
            folder = (out_dir or Path.cwd()) / (scan.relative.parent if scan.relative else "")
            if series == ALL_SERIES:
                if not scan.path.is_dir():
                    raise VolsrOptionError(
                        f"{scan.path}: " + "{all} reads DICOM folders, and this is a file", all=SERIES_ALL
                    )
                planned = series_outputs(scan.path, folder) if expand_series else [(None, folder)]
            else:
                uid = series if scan.relative is None else None  # a UID names a series of one given folder
                planned = [(uid, output_path_for(scan.path, folder))]
        name = folder / scan_stem(scan.path)  # outputs of two scans with this name would collide
        if owner.setdefault(name, scan.path) != scan.path:
            raise VolsrInputError(
                scan.path, f"has the same output name as {owner[name]} ({name}_sr); give them apart"
            )
        jobs += [Job(scan.path, dicom_folder_for(dst) if dicom else dst, uid) for uid, dst in planned]
    return sorted(jobs, key=lambda j: (str(j.src), str(j.dst)))
