"""Where outputs may go: what ``-o`` names, names the file system can hold, and never an input file.

Every rule here is checked before any work, for every output of a run at once (the image, its
uncertainty map, its JSON sidecar, a DICOM series folder, a cohort's manifest):

* ``-o`` ending in ``.nii.gz`` / ``.nii`` (any case) names a NIfTI file; an existing folder, or a new
  name with no file ending, names a folder; any other file ending (``out.png``) is refused, never
  made a folder; an existing file that volsr cannot write (not NIfTI) is refused with that reason;
* a name longer than the file system allows (``NAME_MAX`` bytes, a path past ``PATH_MAX``) is refused;
* no output is, or holds, a file the run reads: the scan, its sidecar (``scan.json`` beside
  ``scan.nii.gz``), any file of an input DICOM folder. ``--overwrite`` does not change this.

Example:
    >>> output_kind(Path("OUT.NII.GZ"))
    'file'
    >>> check_outputs([Path("in/scan.json")], input_files([Path("in/scan.nii.gz")], sidecar_path))
    Traceback (most recent call last):
    VolsrInputError: in/scan.json: would replace the input's sidecar (the sidecar of in/scan.nii.gz); ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from volsr.data.temporaries import name_limit
from volsr.errors import OVERWRITE, Option, VolsrInputError

#: writing DICOM series, as each caller asks for it
_DICOM = Option("dicom=True", "--dicom")

__all__ = [
    "NIFTI_ENDINGS",
    "nifti_ending",
    "output_kind",
    "check_name_length",
    "input_files",
    "check_outputs",
]

NIFTI_ENDINGS = (".nii.gz", ".nii")
#: a file-type ending: a dot, a letter, up to 5 letters or digits (``.png``, ``.mgz``, ``.h5``)
_FILE_ENDING = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
#: the longest path where the system does not say (Linux PATH_MAX, terminating zero included)
_DEFAULT_PATH_MAX = 4096


def nifti_ending(path: str | os.PathLike) -> str | None:
    """``".nii.gz"`` or ``".nii"`` when ``path`` ends so, in any case (``OUT.NII.GZ``); else ``None``."""
    name = Path(path).name.lower()
    return next((e for e in NIFTI_ENDINGS if name.endswith(e) and len(name) > len(e)), None)


def output_kind(path: str | os.PathLike, dicom: bool = False) -> str:
    """What ``-o PATH`` names: ``"file"`` (a NIfTI file to write) or ``"folder"`` (a folder to write
    into or, with ``dicom``, a DICOM series folder).

    Raises:
        VolsrInputError: an existing file volsr cannot write (not NIfTI, or any file with ``dicom``);
            a new name with a file ending that is not NIfTI (``out.png``); a NIfTI name with ``dicom``.
    """
    check_name_length(path)  # before any look at the disk, which would fail on such a name
    p = Path(path)
    if p.is_dir():
        return "folder"
    ending = nifti_ending(p)
    if p.exists() and (dicom or ending is None):
        what = "a DICOM series is written to a folder" if dicom else "volsr writes NIfTI (.nii.gz, .nii)"
        raise VolsrInputError(path, f"is an existing file that is not an output volsr can write ({what})")
    if ending is not None:
        if dicom:
            raise VolsrInputError(
                path,
                "{dicom} writes a series folder; name it without an image ending (.nii.gz)",
                dicom=_DICOM,
            )
        return "file"
    if _FILE_ENDING.search(p.name):
        raise VolsrInputError(
            path,
            f"unknown output type {p.suffix!r}: volsr writes NIfTI (name the output .nii.gz or .nii), "
            "DICOM series folders ({dicom}), or into a folder (create it first if its name has a dot)",
            dicom=_DICOM,
        )
    return "folder"


def check_name_length(path: str | os.PathLike) -> None:
    """Refuse, in one line, an output whose path, or a name in it, the file system cannot hold."""
    p = Path(os.path.abspath(path))
    try:
        path_max = int(os.pathconf("/", "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        path_max = _DEFAULT_PATH_MAX
    if (size := len(os.fsencode(str(p)))) >= path_max:
        raise VolsrInputError(path, f"the path is {size} bytes; the system allows {path_max - 1}")
    limit = name_limit(p.parent)
    for name in p.parts[1:]:
        if (size := len(os.fsencode(name))) > limit:
            raise VolsrInputError(path, f"a name in it is {size} bytes; the file system allows {limit}")


def input_files(sources: Iterable[str | os.PathLike], sidecar_of: Callable[[Path], Path]) -> dict[Path, Path]:
    """Every file a run reads, resolved, with the input it belongs to: each scan file and its JSON
    sidecar ``sidecar_of(scan)`` (:func:`volsr.data.io.sidecar_path`; written or not: a sidecar volsr
    wrote there would be read as the scan's), and each DICOM folder with every file in it."""
    found: dict[Path, Path] = {}
    for source in sources:
        src = Path(source)
        found[src.resolve()] = src
        if src.is_dir():
            for entry in src.rglob("*"):
                if entry.is_file():
                    found[entry.resolve()] = src
        elif src.suffix.lower() != ".json":  # a list file has no sidecar
            found[sidecar_of(src).resolve()] = src
    return found


def check_outputs(
    outputs: Sequence[str | os.PathLike], inputs: Mapping[Path, Path], folders: bool = False
) -> None:
    """Refuse outputs that would write over an input file (:func:`input_files`), or whose names the
    file system cannot hold. ``folders``: the outputs are folders (DICOM series), which must not hold
    an input file either (``--overwrite`` replaces a folder whole).

    Raises:
        VolsrInputError: naming the output and the input it would replace.
    """
    links = {key: path for path in inputs if (key := _inode(path)) is not None}
    holders: dict[Path, Path] = {}
    if folders:
        holders = {folder: path for path in inputs for folder in path.parents}
    for output in outputs:
        check_name_length(output)
        out = Path(output).resolve()
        path = out if out in inputs else links.get(_inode(out)) or holders.get(out)
        if path is None:
            continue
        source = inputs[path]
        if out in path.parents:
            what = f"holds the input {source}"
        elif path == Path(source).resolve():
            what = "is the input image"
        elif path.suffix.lower() == ".json" and not Path(source).is_dir():
            what = f"would replace the input's sidecar (the sidecar of {source})"
        else:
            what = f"is a file of the input {source}"
        raise VolsrInputError(
            output,
            f"{what}; refusing to write over it (also with {{overwrite}}), choose another output",
            overwrite=OVERWRITE,
        )


def _inode(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file: two names of one file (a hard link) share it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
