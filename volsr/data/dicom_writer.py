"""Writing a volume as a derived DICOM series, for sending a super-resolved scan back to a PACS.

One classic single-frame file per slice of the volume's third axis (``IM_00001.dcm``, ...), with
ImagePositionPatient / ImageOrientationPatient exact for every slice, so oblique and gantry-tilted
(sheared) grids are kept. The series is new (its own SeriesInstanceUID, ImageType
``DERIVED\\SECONDARY``); where the image came from a DICOM series, the patient, study and frame of
reference (and the acquisition's contrast parameters and display window) are copied from that
series, so a viewer files the result beside its source and can link the two in space; every slice
lists the source images (SourceImageSequence) and the scanner (ContributingEquipmentSequence), and
what the MR and CT image IODs require is present (``dciodvfy``: no errors).

Hand-written on SimpleITK (its GDCM writer; pydicom adds the sequences, which SimpleITK's string tags
cannot carry), since MONAI writes no DICOM. Pixel data are 16-bit integers: an integer source's values
rounded and clipped to its type's range (:func:`volsr.data.stored_values.in_integer_range`, the NIfTI
writer's rule), anything else through a fitted Rescale Slope / Intercept (its error at most half the
slope).
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from volsr.data.io import EXISTS, SIDECAR_EXISTS, sidecar_path
from volsr.data.stored_values import in_integer_range
from volsr.data.temporaries import register, release, temporary_name
from volsr.errors import OVERWRITE, Option, VolsrInputError, VolsrOptionError, write_error
from volsr.geometry.meta import affine_of

__all__ = [
    "DICOM_FILE_PATTERN",
    "new_uid",
    "is_written_series",
    "output_modality",
    "check_dicom_output",
    "save_dicom_series",
]

#: the names of the files a series folder written here holds (and the only ones it may replace)
DICOM_FILE_PATTERN = re.compile(r"IM_\d{5}\.dcm")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_DTYPES = ("input", "float32")
_SOP_CLASS = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
}


#: ImageType value 3 of a derived image whose source states none (or is of another modality)
_IMAGE_FLAVOUR = {"MR": "OTHER", "CT": "AXIAL"}
#: what the MR and CT image IODs require that a source may not state: type 2 (and 2C) attributes empty,
#: type 1 ones as "unknown" (ScanningSequence RM: research mode; SequenceVariant NONE)
_REQUIRED_DEFAULTS = {
    "MR": {"0018|0020": "RM", "0018|0021": "NONE", "0018|0022": "", "0018|0023": "", "0018|0080": "",
           "0018|0081": "", "0018|0091": ""},
    "CT": {"0018|0060": "", "0020|0012": ""},
    "any": {"0018|5100": "", "0020|1040": ""},  # patient position, position reference indicator
}  # fmt: skip
#: the source's equipment tags (copied with it, :data:`volsr.data.dicom.REFERENCE_TAGS`) that describe
#: the scanner, not this series: they go to its ContributingEquipmentSequence (pydicom keywords)
_SOURCE_EQUIPMENT = {
    "0008|0070": "Manufacturer",
    "0008|1090": "ManufacturerModelName",
    "0008|0080": "InstitutionName",
    "0008|1010": "StationName",
    "0018|1000": "DeviceSerialNumber",
}


def new_uid() -> str:
    """A fresh DICOM UID under the ``2.25`` root (a UUID as a decimal integer; ISO/IEC 9834-8)."""
    return f"2.25.{uuid.uuid4().int}"


def is_written_series(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a series folder written here: slices named as :data:`DICOM_FILE_PATTERN`
    and nothing else (the only kind of folder ``overwrite`` may replace)."""
    p = Path(folder)
    names = [c.name for c in p.iterdir()] if p.is_dir() else []
    return bool(names) and all(DICOM_FILE_PATTERN.fullmatch(n) for n in names)


def output_modality(reference: torch.Tensor | None, modality: str | None = None) -> str:
    """``modality``, else the source series' (``reference`` read from DICOM), else ``"MR"``; only MR
    and CT are written (their image storage classes carry each slice's position)."""
    source = _reference_tags(reference).get("0008|0060") if reference is not None else None
    chosen = (modality or source or "MR").upper()
    if chosen not in _SOP_CLASS:
        raise VolsrOptionError(
            f"DICOM output is written as MR or CT images (modality {chosen!r} given or in the source); "
            "pass {modality}, or write NIfTI",
            modality=Option("modality='MR' or 'CT'", "--modality MR or CT"),
        )
    return chosen


def check_dicom_output(
    folder: str | os.PathLike,
    image: torch.Tensor | None = None,
    overwrite: bool = False,
    sidecar: bool = False,
    modality: str | None = None,
    dtype: str = "input",
) -> Path:
    """Everything :func:`save_dicom_series` would refuse, checked before any work is done.

    Raises:
        ValueError: a modality other than MR or CT (:func:`output_modality`); a ``dtype`` other than
            ``"input"`` or ``"float32"``.
        VolsrInputError: a file rather than a folder; the input's own folder or file; an existing
            folder without ``overwrite``, or one holding anything but a series written here (even
            with ``overwrite``: volsr never deletes files it did not write); with ``sidecar``, an
            existing sidecar without ``overwrite``.
    """
    out = Path(folder)
    source = getattr(image, "meta", {}).get("filename_or_obj") if image is not None else None
    if source:
        src = Path(str(source)).resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise VolsrInputError(folder, "holds the input; refusing to write over it, choose another output")
        if src.is_dir() and src in out.resolve().parents:  # a second series would make it ambiguous
            raise VolsrInputError(folder, "is inside the input DICOM folder; choose an output outside it")
    if out.exists() and not out.is_dir():
        raise VolsrInputError(folder, "is a file; a DICOM series is written to a folder")
    if out.is_dir():
        if not overwrite:
            raise VolsrInputError(folder, EXISTS, overwrite=OVERWRITE)
        foreign = [p.name for p in out.iterdir() if not DICOM_FILE_PATTERN.fullmatch(p.name)]
        if foreign:
            raise VolsrInputError(
                folder, f"holds files volsr did not write (e.g. {foreign[0]}); choose an empty or new folder"
            )
    if sidecar and sidecar_path(out, folder=True).exists() and not overwrite:
        raise VolsrInputError(sidecar_path(out, folder=True), SIDECAR_EXISTS, overwrite=OVERWRITE)
    output_modality(image, modality)
    if dtype not in _DTYPES:
        raise ValueError(f"DICOM output takes dtype 'input' or 'float32', got {dtype!r}")
    return out


def save_dicom_series(
    image: torch.Tensor,
    folder: str | os.PathLike,
    reference: torch.Tensor | None = None,
    dtype: str = "input",
    description: str | None = None,
    derivation: str = "super-resolved by volsr",
    modality: str | None = None,
    overwrite: bool = False,
    label: str = "SR",
    series_offset: int = 1000,
    joins: str | os.PathLike | None = None,
) -> Path:
    """Write a ``(1, X, Y, Z)`` MetaTensor as a new DICOM series in ``folder``, atomically.

    Args:
        image: the volume (RAS+ affine); slices are taken along its third axis, whose first two axes
            must be perpendicular (DICOM has no in-plane shear).
        folder: the series folder; written under a temporary name, then renamed.
        reference: the image ``image`` was made from (default: ``image``); when it was read from a
            DICOM series, that series' patient, study and frame of reference are copied.
        dtype: ``"input"`` keeps an integer source's values as 16-bit integers (rounded) where they
            fit; ``"float32"`` (or a float source) stores them through a fitted rescale slope.
        description: SeriesDescription (default: the source's, or the file name, plus `` volsr SR``).
        derivation: DerivationDescription, e.g. the model and its options.
        modality: ``"MR"`` or ``"CT"`` (the image storage classes that carry each slice's position);
            default: the source series' modality, else ``"MR"``.
        overwrite: replace an existing series folder written by volsr.
        label: what the series is, ending the default description (``"SR"``, ``"uncertainty"``).
        series_offset: SeriesNumber is the source's plus this, so derived series sort after it.
        joins: a series folder written before (e.g. the super-resolved series a map belongs to) whose
            patient, study and frame of reference this one shares, where the source has none of its own.

    Returns:
        The folder.

    Example:
        >>> save_dicom_series(sr("series/"), "series_sr", reference=load_image("series/"))
    """
    reference = image if reference is None else reference
    out = check_dicom_output(folder, reference, overwrite, modality=modality, dtype=dtype)
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise ValueError(f"save_dicom_series needs a (1, X, Y, Z) image, got shape {tuple(arr.shape)}")
    affine = np.asarray(affine_of(image), dtype=np.float64)
    lps = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    row, column = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    if abs(float(row @ column)) > 1e-6:
        raise ValueError("DICOM cannot store a grid whose first two axes are not perpendicular; write NIfTI")
    normal = np.cross(row, column)
    values, pixel_tags = _pixel_encoding(arr[0], _source_dtype(reference), dtype)
    series_tags = {**_reference_tags(reference), **pixel_tags}
    if joins is not None:  # a source that is not DICOM: the study volsr made for the first series
        series_tags = {**_joined_tags(joins), **series_tags}
    modality = output_modality(reference, modality)
    equipment = {key: series_tags.pop(key) for key in _SOURCE_EQUIPMENT if key in series_tags}
    series_tags.update(
        _new_series_tags(series_tags, reference, description, derivation, modality, label, series_offset)
    )
    links = _source_links(reference, equipment)
    direction = np.column_stack([row, column, normal])
    origin = _RAS_TO_LPS @ affine[:3, 3]
    step = _RAS_TO_LPS @ affine[:3, 2]
    thickness = abs(float(step @ normal))  # the distance between slice planes, under tilt too

    tmp = temporary_name(out)
    register(tmp)
    try:
        tmp.mkdir(parents=True)
        for k in range(values.shape[2]):
            position = origin + k * step
            tags = {
                **series_tags,
                "0008|0018": new_uid(),  # SOPInstanceUID
                "0020|0013": str(k + 1),  # InstanceNumber
                "0020|1041": f"{float(position @ normal):.6f}",  # SliceLocation
                "0018|0050": f"{thickness:.6g}",  # SliceThickness
                "0018|0088": f"{thickness:.6g}",  # SpacingBetweenSlices
            }
            plane = sitk.GetImageFromArray(np.ascontiguousarray(values[:, :, k].T)[None])  # (X, Y, 1)
            plane.SetSpacing((float(spacing[0]), float(spacing[1]), thickness or 1.0))
            plane.SetOrigin(tuple(float(v) for v in position))
            plane.SetDirection(tuple(float(v) for v in direction.ravel()))
            path = tmp / f"IM_{k + 1:05d}.dcm"
            _write_slice(plane, tags, path)
            # GDCM writes an MR with a rescale slope as *Enhanced* MR until a DICOM file has been read in
            # the process (ITK's reader sets GDCM's global ForceRescaleInterceptSlope): reading the
            # first slice back sets it, for that slice's rewrite and every slice after
            if k == 0 and _sop_class(path) != tags["0008|0016"]:
                _write_slice(plane, tags, path)
            _add_sequences(path, links)
        _replace_folder(out, tmp, overwrite)
    except OSError as exc:  # read-only folder, disk full: one line naming the output, not the temporary
        raise write_error(out, exc) from None
    except RuntimeError as exc:  # SimpleITK's writer reports a failed write so
        raise write_error(out, OSError(str(exc).strip().splitlines()[-1])) from None
    finally:  # on any error or signal (the CLI turns SIGTERM into SystemExit) no half series is left
        release(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _source_dtype(reference: torch.Tensor) -> str:
    return str(getattr(reference, "meta", {}).get("source_dtype", "float32"))


def _pixel_encoding(values: np.ndarray, source_dtype: str, dtype: str) -> tuple[np.ndarray, dict[str, str]]:
    """The array to hand to GDCM and the pixel tags: 16-bit integers as they are, or float values with
    a Rescale Slope / Intercept over signed 16-bit stored values (GDCM rounds them)."""
    lo, hi = float(values.min()), float(values.max())
    if dtype == "input" and np.dtype(source_dtype).kind in "iu":
        values = in_integer_range(values, source_dtype)  # as NIfTI stores them: no negatives from uint
        lo, hi = float(values.min()), float(values.max())
        for kind in (np.int16, np.uint16):
            info = np.iinfo(kind)
            if info.min <= lo and hi <= info.max:
                return values.astype(kind), {}
    # a slope short enough for a DICOM decimal string (16 characters); the stored range is +-32767
    slope = float(f"{(hi - lo) / 65534:.9g}") if hi > lo else 1.0
    intercept = float(f"{lo + 32767 * slope:.9g}")
    tags = {"0028|1053": f"{slope:.9g}", "0028|1052": f"{intercept:.9g}",
            "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"}  # fmt: skip
    clipped = np.clip(values.astype(np.float64), intercept - 32767 * slope, intercept + 32767 * slope)
    return clipped, tags


#: what a second derived series takes from the first when the source has no study of its own
_JOINED_TAGS = ("0010|0010", "0010|0020", "0020|000d", "0008|0020", "0008|0030", "0020|0052")


def _joined_tags(folder: str | os.PathLike) -> dict[str, str]:
    from volsr.data.dicom import _tags

    first = min(f for f in Path(folder).iterdir() if DICOM_FILE_PATTERN.fullmatch(f.name))
    return _tags(str(first), *_JOINED_TAGS)


def _reference_tags(reference: torch.Tensor) -> dict[str, str]:
    """The source series' :data:`~volsr.data.dicom.REFERENCE_TAGS`, read with it by
    :func:`volsr.data.io.load_image`."""
    return dict(getattr(reference, "meta", {}).get("dicom_tags") or {})


def _new_series_tags(
    tags: Mapping[str, str],
    reference: torch.Tensor,
    description: str | None,
    derivation: str,
    modality: str,
    label: str = "SR",
    series_offset: int = 1000,
) -> dict[str, str]:
    from volsr import __version__

    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    source_number = tags.get("0020|0011", "")
    if description is None:
        stem = (
            tags.get("0008|103e")
            or Path(str(getattr(reference, "meta", {}).get("filename_or_obj", "volume"))).name
        )
        description = f"{stem} volsr {label}"
    source_type = tags.get("0008|0008", "").split("\\")
    flavour = source_type[2] if len(source_type) > 2 and tags.get("0008|0060") == modality else ""
    new = {
        "0008|0060": modality,
        "0008|0016": _SOP_CLASS[modality],
        # ImageType; value 3 (required of MR and CT) as the source's, e.g. M for an MR magnitude
        "0008|0008": f"DERIVED\\SECONDARY\\{flavour or _IMAGE_FLAVOUR[modality]}",
        "0008|0070": "volsr",  # Manufacturer: of the equipment that made this series; the scanner is in
        "0008|1090": "volsr",  # ContributingEquipmentSequence. ManufacturerModelName
        "0008|2111": derivation[:1024],  # DerivationDescription
        "0018|1020": f"volsr {__version__}",  # SoftwareVersions
        "0020|000e": new_uid(),  # SeriesInstanceUID
        "0020|0011": str(int(source_number) + series_offset)
        if source_number.lstrip("-").isdigit()
        else str(series_offset),
        "0008|103e": description[:64],
        "0008|0021": date, "0008|0031": time, "0008|0023": date, "0008|0033": time,  # series, content
    }  # fmt: skip
    required = {**_REQUIRED_DEFAULTS["any"], **_REQUIRED_DEFAULTS[modality]}
    if "0018|0015" not in tags:  # Laterality: required of paired body parts; for an unknown one, empty
        required["0020|0060"] = ""
    new.update({key: value for key, value in required.items() if key not in tags})
    if "0020|000d" not in tags:  # no source study: a new one
        new.update({"0020|000d": new_uid(), "0008|0020": date, "0008|0030": time})
    if "0020|0052" not in tags:  # no stated frame of reference (required of MR and CT images): a new one
        new["0020|0052"] = new_uid()
    return new


def _source_links(reference: torch.Tensor, equipment: Mapping[str, str]) -> dict:
    """The sequences that link a derived slice to its source (pydicom keywords -> items): every source
    image (SourceImageSequence: a viewer finds the source series from it) and the acquiring equipment
    (ContributingEquipmentSequence); empty for a source that is not a DICOM series."""
    meta = getattr(reference, "meta", {})
    per_volume = meta.get("dicom_source_images")
    if not per_volume:
        return {}
    from pydicom.dataset import Dataset

    sources = []
    for sop_class, sop_instance in per_volume[int(meta.get("volume") or 0)]:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        sources.append(item)
    links: dict = {"SourceImageSequence": sources}
    if equipment:
        item, purpose = Dataset(), Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator = "109101", "DCM"
        purpose.CodeMeaning = "Acquisition Equipment"
        item.PurposeOfReferenceCodeSequence = [purpose]
        for key, value in equipment.items():
            setattr(item, _SOURCE_EQUIPMENT[key], value)
        if "Manufacturer" not in item:
            item.Manufacturer = ""  # type 1 in this sequence's items; type 2 would do, an absent one not
        links["ContributingEquipmentSequence"] = [item]
    return links


def _add_sequences(path: Path, links: Mapping[str, list]) -> None:
    """Add ``links`` (from :func:`_source_links`) to a written slice: GDCM's writer (through SimpleITK's
    string tags) writes no sequences."""
    if not links:
        return
    from pydicom import dcmread

    ds = dcmread(path)
    for keyword, items in links.items():
        setattr(ds, keyword, items)
    ds.save_as(path)


def _write_slice(plane: sitk.Image, tags: Mapping[str, str], path: Path) -> None:
    for key, value in tags.items():
        plane.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # our Study/Series/SOP Instance UIDs, not fresh ones
    writer.SetFileName(str(path))
    writer.Execute(plane)


def _sop_class(path: Path) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetMetaData("0008|0016").strip()


def _replace_folder(out: Path, tmp: Path, overwrite: bool = True) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (checked to be ours) is moved aside first and
    deleted only once the new one is in place. Without ``overwrite`` a series another writer put at
    ``out`` meanwhile is never replaced (renaming onto a non-empty folder fails)."""
    if not overwrite or not out.exists():
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise VolsrInputError(out, EXISTS, overwrite=OVERWRITE) from None
            raise
        return
    old = temporary_name(out, kind="old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old)
