"""SimpleITK readers: NRRD / MetaImage files and DICOM series, as arrays with RAS+ affines.

ITK's frame is LPS+; volsr's is RAS+, so every affine is ``diag(-1, -1, 1) @ [direction * spacing |
origin]``. A DICOM series under gantry tilt gets its slice axis from the first and last
ImagePositionPatient (a sheared affine), which ITK alone would straighten. Used by
:func:`volsr.data.io.load_image`; each reader returns ``(array, affine or None, dtype name, extra meta)``.
A series also keeps its :data:`REFERENCE_TAGS` (``meta["dicom_tags"]``), which a derived series
written by :mod:`volsr.data.dicom_writer` copies, so it is read from the header once, with the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from volsr.data.acquisition import parse_thickness
from volsr.errors import VolsrInputError

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["REFERENCE_TAGS", "from_sitk", "read_itk", "read_dicom_folder", "list_series", "series_info"]

#: slice positions further than this fraction of the typical slice step from an even grid are a gap
SLICE_STEP_TOLERANCE = 0.01

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


def _sitk():
    """SimpleITK, imported on first use (it is slow to import and only these readers need it), with
    ITK's own warnings silenced: volsr checks what they warn about and reports it in one line."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def from_sitk(img: sitk.Image) -> tuple[np.ndarray, np.ndarray | None, str, dict]:
    dim = img.GetDimension()
    arr = _sitk().GetArrayFromImage(img)  # (..., z, y, x[, component])
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
    return from_sitk(_sitk().ReadImage(str(path)))


def series_info(folder: Path, uid: str) -> dict:
    """``{"uid", "description", "number", "files"}`` of one series in ``folder`` (SeriesDescription
    and SeriesNumber from its first file; ``""`` / ``None`` where absent)."""
    files = _sitk().ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    tags = _tags(files[0], "0008|103e", "0020|0011")
    number = tags.get("0020|0011", "")
    return {
        "uid": uid,
        "description": tags.get("0008|103e", ""),
        "number": int(number) if number.lstrip("-").isdigit() else None,
        "files": len(files),
    }


def _tags(file: str, *keys: str) -> dict[str, str]:
    """The DICOM tags ``keys`` ("gggg|eeee") of one file's header, stripped; absent ones left out."""
    reader = _sitk().ImageFileReader()
    reader.SetFileName(file)
    reader.ReadImageInformation()
    return {key: reader.GetMetaData(key).strip() for key in keys if reader.HasMetaDataKey(key)}


def list_series(folder: str | Path) -> list[dict]:
    """Every DICOM series in ``folder`` (:func:`series_info`), by SeriesNumber, then UID."""
    uids = _sitk().ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    found = [series_info(Path(folder), uid) for uid in uids]
    return sorted(found, key=lambda s: (s["number"] is None, s["number"] or 0, s["uid"]))


def _series_summary(folder: Path, uid: str) -> str:
    info = series_info(folder, uid)
    return f"{uid} ({info['description']!r}, {info['files']} files)"


def _position(file: str) -> np.ndarray | None:
    """ImagePositionPatient of one DICOM file, in RAS+ mm (None when absent)."""
    position = _tags(file, "0020|0032").get("0020|0032")
    if position is None:
        return None
    return _LPS_TO_RAS @ np.array([float(v) for v in position.split("\\")])


def _with_tilt(affine: np.ndarray, files: list[str], n_slices: int) -> np.ndarray:
    """The slice axis from the first and last ImagePositionPatient (as dcm2niix does).

    ITK stacks the slices along the normal of their rows and columns; under gantry tilt the true slice
    axis leans away from it, and only these positions give the sheared affine.
    """
    if len(files) != n_slices or n_slices < 2:
        return affine
    first, last = _position(files[0]), _position(files[-1])
    if first is None or last is None:
        return affine
    step = (last - first) / (n_slices - 1)
    if np.allclose(step, affine[:3, 2], atol=1e-4) and np.allclose(first, affine[:3, 3], atol=1e-4):
        return affine
    out = affine.copy()
    out[:3, 2], out[:3, 3] = step, first
    return out


def _unread_dicom_files(folder: Path, read: set[str]) -> list[Path]:
    """Files in ``folder`` that look like DICOM (a ``.dcm`` name or the ``DICM`` preamble) yet belong
    to no series GDCM could read: truncated or corrupt slices, which GDCM drops without a word."""
    suspects = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or str(path) in read:
            continue
        with open(path, "rb") as f:
            magic = f.read(132)[128:]
        if path.suffix.lower() == ".dcm" or magic == b"DICM":
            suspects.append(path)
    return suspects


def _check_slice_positions(folder: Path, files: list[str], affine: np.ndarray) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice): stacked
    as they are they would be placed on a wrong, even grid."""
    positions = [_position(f) for f in files]
    if len(files) < 3 or any(p is None for p in positions):
        return
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    normal /= np.linalg.norm(normal)
    steps = np.diff([float(p @ normal) for p in positions])
    typical = float(np.median(np.abs(steps)))
    off = np.abs(np.abs(steps) - typical) > SLICE_STEP_TOLERANCE * max(typical, 1e-6)
    if typical == 0 or off.any():
        i = int(np.flatnonzero(off)[0]) if off.any() else 0
        a, b = Path(files[i]).name, Path(files[i + 1]).name
        raise VolsrInputError(
            folder,
            f"slices are not evenly spaced: {a} and {b} lie {abs(steps[i]):.4g} mm apart where the others "
            f"lie {typical:.4g} mm apart (a missing or repeated slice); volsr reads complete series only",
        )


def read_dicom_folder(
    folder: Path, series_uid: str | None
) -> tuple[np.ndarray, np.ndarray | None, str, dict]:
    """The series ``series_uid`` (or the only one) in ``folder``.

    Raises:
        VolsrInputError: no series, several without a choice, an unknown UID, a DICOM file no series
            could read (corrupt or truncated), or slices that are not evenly spaced.
    """
    sitk = _sitk()
    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    series_files = {u: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u)) for u in uids}
    unread = _unread_dicom_files(folder, {f for files in series_files.values() for f in files})
    if unread:
        raise VolsrInputError(
            unread[0],
            "cannot be read as DICOM (truncated or corrupt); remove or replace it to read the series",
        )
    if not uids:
        raise VolsrInputError(
            folder, "is a folder without a DICOM series; give an image file or a DICOM folder"
        )
    if series_uid is None and len(uids) > 1:
        listing = "; ".join(_series_summary(folder, u) for u in uids)
        raise VolsrInputError(
            folder, f"holds {len(uids)} DICOM series; pick one with series_uid= (--series): {listing}"
        )
    if series_uid is not None and series_uid not in uids:
        listing = "; ".join(_series_summary(folder, u) for u in uids)
        raise VolsrInputError(folder, f"has no DICOM series {series_uid}; it holds: {listing}")
    uid = series_uid or uids[0]
    files = series_files[uid]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    arr, affine, dtype, extra = from_sitk(reader.Execute())
    if affine is not None and arr.ndim == 3:
        _check_slice_positions(folder, files, affine)
        affine = _with_tilt(affine, files, arr.shape[2])
    header = _tags(files[0], "0018|0050", *REFERENCE_TAGS)
    return (
        arr,
        affine,
        dtype,
        {
            **extra,
            "dicom_series_uid": uid,
            "dicom_files": len(files),
            "dicom_tags": {key: header[key] for key in REFERENCE_TAGS if header.get(key)},
            "slice_thickness_mm": parse_thickness(header.get("0018|0050")),  # SliceThickness, mm
        },
    )
