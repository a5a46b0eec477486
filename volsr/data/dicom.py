"""Readers of NRRD / MetaImage files (SimpleITK) and DICOM series (pydicom), as arrays with RAS+ affines.

ITK's frame is LPS+; volsr's is RAS+, so every affine is ``diag(-1, -1, 1) @ [direction * spacing |
origin]``. A DICOM series is placed as dcm2niix places it: :mod:`volsr.data.dicom_files` finds its
files, :mod:`volsr.data.dicom_frames` reads each image's place from its header,
:mod:`volsr.data.dicom_geometry` sorts them into slices and volumes and makes the affine (sheared
under gantry tilt), and :mod:`volsr.data.dicom_pixels` decodes one volume when it is asked for. Used
by :func:`volsr.data.io.load_image`; each reader returns ``(array, affine or None, dtype name, extra
meta)``. A series also keeps its :data:`REFERENCE_TAGS` (``meta["dicom_tags"]``), which a derived
series written by :mod:`volsr.data.dicom_writer` copies, so it is read from the header once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volsr.data.acquisition import parse_thickness
from volsr.data.dicom_files import DicomFile, FolderContents, quiet, quiet_sitk, scan_folder, tag_text
from volsr.data.dicom_frames import Frame, frames_of
from volsr.data.dicom_geometry import series_grid
from volsr.data.dicom_pixels import SeriesVolumes, value_dtype
from volsr.errors import Option, VolsrInputError, VolsrInputWarning

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["REFERENCE_TAGS", "from_sitk", "read_itk", "read_dicom_folder", "list_series", "series_info"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: what a series derived from this one shares with it: patient, study and frame of reference, the
#: contrast its values carry (sequence, echo and repetition time, tube voltage), the display window,
#: and the SeriesNumber and SeriesDescription it derives its own from
REFERENCE_TAGS = (
    "0010|0010", "0010|0020", "0010|0030", "0010|0040", "0010|1010",  # patient name, ID, birth, sex, age
    "0020|000d", "0020|0010", "0008|0020", "0008|0030", "0008|0050",  # study UID, ID, date, time, accession
    "0008|0090", "0008|1030",  # referring physician, study description
    "0020|0052", "0018|5100", "0018|0015",  # frame of reference, patient position, body part
    "0008|0060", "0008|0005",  # modality, character set (of the names copied)
    "0018|0020", "0018|0021", "0018|0022", "0018|0023", "0018|0080", "0018|0081", "0018|0082",
    "0018|0091", "0018|1314", "0018|0087", "0018|0060", "0028|1050", "0028|1051",
    "0020|0011", "0008|103e",  # SeriesNumber, SeriesDescription
    "0020|1040", "0018|1030", "0018|0024", "0018|0084", "0018|0085", "0010|1030",  # position reference,
    # protocol, sequence name, imaging frequency, nucleus, patient weight; the ImageType the derived one
    # keeps value 3 of, and the acquiring equipment (its Contributing Equipment)
    "0008|0008", "0008|0070", "0008|1090", "0008|0080", "0008|1010", "0018|1000",
    "0020|0060",  # Laterality
)  # fmt: skip


def from_sitk(img: sitk.Image) -> tuple[np.ndarray, np.ndarray | None, str, dict]:
    dim = img.GetDimension()
    arr = quiet_sitk().GetArrayFromImage(img)  # (..., z, y, x[, component])
    order = list(range(dim))[::-1] + ([dim] if img.GetNumberOfComponentsPerPixel() > 1 else [])
    arr = arr.transpose(order)
    if dim < 3:
        return arr, None, arr.dtype.name, {}
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(np.asarray(img.GetSpacing(), dtype=np.float64)[:3])
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(img.GetOrigin(), dtype=np.float64)[:3]
    return arr, affine, arr.dtype.name, {}


def read_itk(path: Path) -> tuple[np.ndarray, np.ndarray | None, str, dict]:
    return from_sitk(quiet_sitk().ReadImage(str(path)))


def _info(uid: str, files: list[DicomFile]) -> dict:
    number = tag_text(files[0].header, "0020|0011") or ""
    return {
        "uid": uid,
        "description": tag_text(files[0].header, "0008|103e") or "",
        "number": int(number) if number.lstrip("-").isdigit() else None,
        "files": len(files),
    }


def series_info(folder: Path, uid: str) -> dict:
    """``{"uid", "description", "number", "files"}`` of one series in ``folder`` (SeriesDescription
    and SeriesNumber from its first file; ``""`` / ``None`` where absent; ``files`` counts its images)."""
    files = scan_folder(Path(folder)).series.get(uid)
    if not files:
        raise VolsrInputError(folder, f"has no DICOM series {uid}")
    return _info(uid, files)


def _tags(file: str, *keys: str) -> dict[str, str]:
    """The DICOM tags ``keys`` ("gggg|eeee") of one file's header, stripped; absent ones left out."""
    reader = quiet_sitk().ImageFileReader()
    reader.SetFileName(file)
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key).strip() for key in keys if reader.HasMetaDataKey(key)}


def _listed(contents: FolderContents) -> list[dict]:
    found = [_info(uid, files) for uid, files in contents.series.items()]
    return sorted(found, key=lambda s: (s["number"] is None, s["number"] or 0, s["uid"]))


def list_series(folder: str | Path) -> list[dict]:
    """Every DICOM series in ``folder`` (:func:`series_info`), by SeriesNumber, then UID."""
    return _listed(scan_folder(Path(folder)))


def _listing(contents: FolderContents) -> str:
    return "; ".join(f"{s['uid']} ({s['description']!r}, {s['files']} files)" for s in _listed(contents))


def _pick_series(folder: Path, contents: FolderContents, series_uid: str | None) -> str:
    uids = list(contents.series)
    if not uids:
        held = contents.non_image
        only = (
            f" (it holds only {len(held)} DICOM object(s) without pixels, e.g. {held[0][1]})" if held else ""
        )
        raise VolsrInputError(
            folder, f"is a folder without a DICOM series{only}; give an image file or a DICOM folder"
        )
    if series_uid is None and len(uids) > 1:
        raise VolsrInputError(
            folder,
            f"holds {len(uids)} DICOM series; pick one with {{series}}: {_listing(contents)}",
            series=Option("series_uid=", "--series"),
        )
    if series_uid is not None and series_uid not in uids:
        raise VolsrInputError(folder, f"has no DICOM series {series_uid}; it holds: {_listing(contents)}")
    return series_uid or uids[0]


def _skipped_note(folder: Path, contents: FolderContents) -> str | None:
    """The note on the objects without pixels the folder holds: they are not part of any volume."""
    if not contents.non_image:
        return None
    kinds = sorted({what for _, what in contents.non_image})
    return (
        f"{folder}: skipped {len(contents.non_image)} DICOM object(s) without pixels ({', '.join(kinds)}; "
        f"e.g. {contents.non_image[0][0].name})"
    )


def _originals(folder: Path, frames: list[Frame]) -> tuple[list[Frame], str | None]:
    """The acquired images of a series that also holds derived ones (a diffusion trace or ADC image
    mixed in), and the note that names those set aside: they are not a volume of the acquisition. A
    series of derived images only (a reformat, a volsr output) is read as it is."""
    derived = [f for f in frames if f.derived]
    if not derived or len(derived) == len(frames):
        return frames, None
    kinds = sorted({f.image_type for f in derived})
    note = (
        f"{folder}: skipped {len(derived)} derived image(s) mixed into the series (ImageType "
        f"{', '.join(kinds)}; e.g. {derived[0].file.name}); reading its {len(frames) - len(derived)} "
        "acquired images"
    )
    return [f for f in frames if not f.derived], note


def _thickness(header) -> str | None:
    """SliceThickness: the file's own, else an enhanced file's shared pixel measures."""
    stated = tag_text(header, "0018|0050")
    if stated is None and "SharedFunctionalGroupsSequence" in header:
        shared = header.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared and "SliceThickness" in shared.PixelMeasuresSequence[0]:
            stated = str(shared.PixelMeasuresSequence[0].SliceThickness)
    return stated


def _source_images(volume: list, headers: dict) -> list[tuple[str, str]]:
    """``(SOPClassUID, SOPInstanceUID)`` of the images one volume was read from, in slice order, each
    once (an enhanced file's frames share one instance): what a derived series lists as its sources."""
    found: dict[tuple[str, str], None] = {}
    for frame in volume:
        header = headers[frame.file]
        found[(str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", "")))] = None
    return [key for key in found if all(key)]


def read_dicom_folder(folder: Path, series_uid: str | None) -> tuple[SeriesVolumes, np.ndarray, str, dict]:
    """The series ``series_uid`` (or the only one) in ``folder``, placed as dcm2niix places it.

    Returns:
        ``(array, affine, dtype name, extra meta)``: ``array`` is ``(X, Y, Z)``, or ``(X, Y, Z,
        volumes)`` for a 4-D series (decoded a volume at a time when indexed, :class:`SeriesVolumes`);
        ``extra`` holds ``dicom_series_uid``, ``dicom_files``, ``dicom_volumes``,
        ``dicom_source_images`` (per volume, :func:`_source_images`), ``dicom_tags``
        (:data:`REFERENCE_TAGS`) and ``slice_thickness_mm``.

    Raises:
        VolsrInputError: no series, several without a choice, an unknown UID, a DICOM file that
            cannot be read, a header that does not place its images (:mod:`volsr.data.dicom_frames`),
            images that form no even grid (:mod:`volsr.data.dicom_geometry`).
    """
    folder = Path(folder)
    with quiet():  # pydicom's complaints about a header are refused or noted here in one line
        contents = scan_folder(folder)
        uid = _pick_series(folder, contents, series_uid)
        files = contents.series[uid]
        frames, derived_note = _originals(
            folder, [f for file in files for f in frames_of(file.path, file.header)]
        )
        headers = {file.path: file.header for file in files}
        first = headers[frames[0].file]
        thickness = parse_thickness(_thickness(first))
        grid = series_grid(frames, folder, thickness)
        dtype = value_dtype(first, {(f.slope, f.intercept) for f in frames})
        tags = {key: tag_text(headers[grid.volumes[0][0].file], key) for key in REFERENCE_TAGS}
        sources = [_source_images(volume, headers) for volume in grid.volumes]
    for note in (_skipped_note(folder, contents), derived_note):
        if note:
            warnings.warn(note, VolsrInputWarning, stacklevel=2)
    volumes = SeriesVolumes(grid.volumes, grid.shape, dtype)
    return (
        volumes,
        grid.affine,
        dtype.name,
        {
            "dicom_series_uid": uid,
            "dicom_files": len({f.file for f in frames}),
            "dicom_volumes": len(grid.volumes),
            "dicom_source_images": sources,
            "dicom_tags": {key: value for key, value in tags.items() if value},
            "slice_thickness_mm": thickness,  # SliceThickness, mm
        },
    )
