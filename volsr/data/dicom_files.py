"""Which files of a folder are DICOM images, and of which series: headers read with pydicom.

A folder is read as it lies: its own files, or, beside a DICOMDIR (the CD layout, series in
subfolders), every file below it. A DICOMDIR is an index, never an image; objects without pixels
(structured reports, presentation states, key-object selections) are set aside with their SOP class
named, for the caller to note. Headers are read without pixel data; nothing pydicom says reaches the
terminal (:func:`quiet`): a file that cannot be read is the caller's one-line refusal.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from volsr.errors import VolsrInputError

__all__ = [
    "DicomFile",
    "FolderContents",
    "quiet",
    "quiet_sitk",
    "read_header",
    "scan_folder",
    "tag_text",
    "unreadable",
]

#: Media Storage Directory Storage: the SOP class of a DICOMDIR
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class DicomFile:
    """One DICOM image file and its header (pixel data not read)."""

    path: Path
    header: object  # pydicom.Dataset


@dataclass
class FolderContents:
    """The image files of a folder by SeriesInstanceUID, and the DICOM objects without pixels."""

    series: dict[str, list[DicomFile]] = field(default_factory=dict)
    non_image: list[tuple[Path, str]] = field(default_factory=list)  # (file, what it is)
    dicomdir: Path | None = None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """pydicom's warnings and log records held back: volsr states what matters in one line."""
    logger = logging.getLogger("pydicom")
    propagate, disabled = logger.propagate, logger.disabled
    logger.propagate, logger.disabled = False, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.propagate, logger.disabled = propagate, disabled


def _looks_like_dicom(path: Path) -> bool:
    """A ``.dcm`` name or the ``DICM`` preamble: a file the user meant as DICOM."""
    if path.suffix.lower() == ".dcm":
        return True
    with contextlib.suppress(OSError), open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"
    return False


def unreadable(path: Path, exc: BaseException) -> VolsrInputError:
    """The refusal of a DICOM file that cannot be read, with the reader's reason in a few words."""
    detail = " ".join(str(exc).split())[:120] or type(exc).__name__
    return VolsrInputError(
        path,
        f"cannot be read as DICOM (truncated or corrupt: {detail}); remove or replace it to read the series",
    )


def read_header(path: Path):
    """The header of ``path`` without its pixel data, or ``None`` for a file that is not DICOM.

    A file without the preamble (old GE and ACR-NEMA style) counts as DICOM when it parses and
    states a SOP class and a series.

    Raises:
        VolsrInputError: a file that looks like DICOM (a ``.dcm`` name or the preamble) but cannot be read.
    """
    from pydicom import dcmread

    meant = _looks_like_dicom(path)
    try:
        with quiet():
            header = dcmread(path, stop_before_pixels=True, force=not meant)
    except Exception as exc:
        if not meant:
            return None
        raise unreadable(path, exc) from None
    if not meant and ("SOPClassUID" not in header or "SeriesInstanceUID" not in header):
        return None
    return header


def _is_dicomdir(path: Path, header) -> bool:
    meta = getattr(header, "file_meta", None)
    media = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return media == DICOMDIR_CLASS or "DirectoryRecordSequence" in header or path.name.upper() == "DICOMDIR"


def _what(header) -> str:
    """The SOP class of an object, in words (``"Basic Text SR Storage"``)."""
    uid = header.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "unknown SOP class")


def _candidates(folder: Path) -> tuple[list[Path], Path | None]:
    """The files to read, and the folder's DICOMDIR (then every file below the folder is read)."""
    own = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    dicomdir = next((p for p in own if p.name.upper() == "DICOMDIR"), None)
    if dicomdir is None:
        return own, None
    below = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return below, dicomdir


def scan_folder(folder: Path) -> FolderContents:
    """The DICOM image files in ``folder`` by SeriesInstanceUID (module doc for the layouts).

    Raises:
        VolsrInputError: a file that looks like DICOM but cannot be read (:func:`read_header`).
    """
    files, dicomdir = _candidates(folder)
    contents = FolderContents(dicomdir=dicomdir)
    for path in files:
        with quiet():
            header = read_header(path)
        if header is None:
            continue
        if _is_dicomdir(path, header):
            continue
        if "Rows" not in header or "Columns" not in header:  # no Image Pixel module
            if "Image Storage" in _what(header):  # an image whose header stops short
                raise unreadable(path, EOFError("the header ends before the image's Rows and Columns"))
            contents.non_image.append((path, _what(header)))
            continue
        uid = str(header.get("SeriesInstanceUID", "")).strip()
        contents.series.setdefault(uid, []).append(DicomFile(path, header))
    return contents


def tag_text(header, key: str) -> str | None:
    """The value of tag ``key`` (``"gggg|eeee"``) as text, as the file stores it (multiple values
    joined by ``\\``), stripped; ``None`` when absent or empty."""
    from pydicom.tag import Tag

    tag = Tag(int(key[:4], 16), int(key[5:], 16))
    if tag not in header:
        return None
    elem = header.get_item(tag)
    raw = getattr(elem, "value", None)
    if isinstance(raw, bytes):  # not yet converted: the stored text itself
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    else:
        value = header[tag].value
        if value is None:
            return None
        several = isinstance(value, Sequence) and not isinstance(value, str | bytes)
        text = "\\".join(str(v) for v in value) if several else str(value)
    text = text.strip(" \x00")
    return text or None


def quiet_sitk():
    """SimpleITK, imported on first use (it is slow to import and only the readers need it), with
    ITK's own warnings silenced: volsr checks what they warn about and reports it in one line."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk
