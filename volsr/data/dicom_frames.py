"""Every image of a DICOM file as a :class:`Frame`: where the standard puts it, read from the header.

One file holds one image (the classic storage), several frames whose places are given per frame
(enhanced multi-frame: the per-frame and shared functional groups), or a Siemens mosaic, a grid of
slices in one image whose layout, slice normal and position correction nibabel's ``nicom`` knows.
The values are the header's, in DICOM's LPS+ frame, checked as read: a missing or zero PixelSpacing
and an ImageOrientationPatient that is not orthonormal are refused, never guessed or straightened.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volsr.data.dicom_files import quiet
from volsr.errors import VolsrInputError

__all__ = ["Frame", "ORIENTATION_TOLERANCE", "frames_of", "mosaic_wrapper"]

#: how far ImageOrientationPatient's row and column may be from unit length and from orthogonal
#: (the stored decimals of real headers stay well below it; 1e-4 leans 0.006 degrees)
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Frame:
    """One image: a slice, or a mosaic of ``mosaic`` slices.

    ``position`` is the centre of its first voxel, ``row`` / ``col`` the unit directions in which the
    column and row index grow (ImageOrientationPatient), ``spacing`` the PixelSpacing (between rows,
    between columns), all in LPS+ mm. ``order`` sorts the images that share a slice position
    (InstanceNumber, then file and frame); ``frame`` is the frame's index in a multi-frame file.
    """

    file: Path
    frame: int | None
    position: np.ndarray
    row: np.ndarray
    col: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]  # (Rows, Columns) of one slice
    slope: float
    intercept: float
    derived: bool
    image_type: str
    order: tuple
    mosaic: int = 0  # slices in the mosaic (0: not a mosaic)
    slice_step: np.ndarray | None = None  # a mosaic's slice axis, LPS mm per slice


def _numbers(value, count: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.all(np.isfinite(out)) else None


def _orientation(value, file: Path | str) -> tuple[np.ndarray, np.ndarray]:
    iop = _numbers(value, 6) if value is not None else None
    if iop is None:
        raise VolsrInputError(
            file, "states no valid ImageOrientationPatient; volsr cannot place its pixels in space"
        )
    row, col = iop[:3], iop[3:]
    norms, dot = (float(np.linalg.norm(row)), float(np.linalg.norm(col))), float(row @ col)
    if max(abs(norms[0] - 1), abs(norms[1] - 1), abs(dot)) > ORIENTATION_TOLERANCE:
        angle = np.degrees(np.arccos(np.clip(dot / max(norms[0] * norms[1], 1e-12), -1, 1)))
        raise VolsrInputError(
            file,
            f"ImageOrientationPatient is not orthonormal (row and column {angle:.4g} degrees apart, "
            f"lengths {norms[0]:.6g} and {norms[1]:.6g}); volsr will not straighten it, fix the header",
        )
    return row / norms[0], col / norms[1]


def _position(value, file: Path | str) -> np.ndarray:
    ipp = _numbers(value, 3) if value is not None else None
    if ipp is None:
        raise VolsrInputError(
            file, "states no valid ImagePositionPatient; volsr cannot place its pixels in space"
        )
    return ipp


def _spacing(value, file: Path | str, header) -> tuple[float, float]:
    spacing = _numbers(value, 2) if value is not None else None
    if spacing is None or np.any(spacing <= 0):
        stated = "no PixelSpacing" if value is None else f"PixelSpacing {value!s}"
        projection = "ImagerPixelSpacing" in header
        imager = " (ImagerPixelSpacing is the detector's, of projection images)" if projection else ""
        raise VolsrInputError(
            file, f"states {stated}{imager}; the voxel size is unknown and volsr will not guess it"
        )
    return float(spacing[0]), float(spacing[1])


def _image_type(value) -> tuple[str, bool]:
    values = [value] if isinstance(value, str) else list(value or [])
    parts = [str(v).strip().upper() for v in values]
    return "\\".join(parts), bool(parts) and parts[0] == "DERIVED"


def _rescale(item) -> dict[str, float]:
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    return {
        "slope": 1.0 if slope in (None, "") else float(slope),
        "intercept": 0.0 if intercept in (None, "") else float(intercept),
    }


def _instance(header) -> int | float:
    number = header.get("InstanceNumber")
    try:
        return int(number)
    except (TypeError, ValueError):
        return float("inf")


def _check_greyscale(header, file: Path) -> None:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise VolsrInputError(
            file, f"has {samples} samples per pixel (colour); volsr reads greyscale images only"
        )


def mosaic_wrapper(header):
    """nibabel's reading of a Siemens mosaic header (``None`` when it is not one): it knows the tile
    layout, the slice normal of the CSA header and the correction of the mosaic's position."""
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nicom's import announces that it is experimental
        from nibabel.nicom import dicomwrappers

        try:
            wrapper = dicomwrappers.wrapper_from_data(header)
        except Exception:
            return None
    return wrapper if getattr(wrapper, "is_mosaic", False) else None


def _mosaic(header, file: Path) -> Frame | None:
    image_type, derived = _image_type(header.get("ImageType"))
    if "MOSAIC" not in image_type.split("\\"):
        return None
    wrapper = mosaic_wrapper(header)
    if wrapper is None:
        raise VolsrInputError(
            file, "is a Siemens mosaic without the CSA header that states its slices; volsr cannot unpack it"
        )
    row, col = _orientation(header.get("ImageOrientationPatient"), file)
    spacing = _spacing(header.get("PixelSpacing"), file, header)
    _position(header.get("ImagePositionPatient"), file)
    with quiet():
        normal = np.asarray(wrapper.slice_normal, dtype=np.float64)
        position = np.asarray(wrapper.image_position, dtype=np.float64)
        step = float(wrapper.voxel_sizes[2])  # SpacingBetweenSlices, else SliceThickness
    if not abs(abs(float(normal @ np.cross(row, col))) - 1) < 1e-4 or not step > 0:
        raise VolsrInputError(
            file, "is a Siemens mosaic whose slice normal or slice spacing contradicts its orientation"
        )
    rows, cols = wrapper.image_shape[:2]
    return Frame(
        file=file, frame=None, position=position, row=row, col=col, spacing=spacing,
        shape=(int(rows), int(cols)), **_rescale(header), derived=derived, image_type=image_type,
        order=(_instance(header), file.name, 0), mosaic=int(wrapper.n_mosaic), slice_step=normal * step,
    )  # fmt: skip


def _group(item, shared, name: str):
    """Functional group ``name`` of one frame: its own, else the shared one (``{}`` when neither)."""
    for source in (item, shared):
        if source is not None and name in source and len(source[name].value):
            return source[name].value[0]
    return {}


def _enhanced(header, file: Path) -> list[Frame]:
    shared = header.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in header else None
    file_type, file_derived = _image_type(header.get("ImageType"))
    frames = []
    for index, item in enumerate(header.PerFrameFunctionalGroupsSequence):
        where = f"{file} (frame {index + 1})"  # the place a refusal names
        orientation = _group(item, shared, "PlaneOrientationSequence")
        row, col = _orientation(orientation.get("ImageOrientationPatient"), where)
        position = _position(_group(item, shared, "PlanePositionSequence").get("ImagePositionPatient"), where)
        measures = _group(item, shared, "PixelMeasuresSequence")
        spacing = _spacing(measures.get("PixelSpacing"), where, header)
        transform = _group(item, shared, "PixelValueTransformationSequence") or header
        frame_type = next(
            (_group(item, shared, name).get("FrameType") for name in
             ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence")
             if _group(item, shared, name)),
            None,
        )  # fmt: skip
        image_type, derived = _image_type(frame_type) if frame_type else (file_type, file_derived)
        frames.append(
            Frame(
                file=file,
                frame=index,
                position=position,
                row=row,
                col=col,
                spacing=spacing,
                shape=(int(header.Rows), int(header.Columns)),
                **_rescale(transform),
                derived=derived,
                image_type=image_type,
                order=(index, file.name, index),
            )  # fmt: skip
        )
    return frames


def frames_of(file: Path, header) -> list[Frame]:
    """The images of one DICOM file (module doc), in the order the file stores them.

    Raises:
        VolsrInputError: colour, no or invalid position, orientation or pixel spacing, a multi-frame
            file that states no place for its frames, a mosaic without its CSA header.
    """
    _check_greyscale(header, file)
    if "PerFrameFunctionalGroupsSequence" in header:
        return _enhanced(header, file)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise VolsrInputError(
            file, f"holds {frames} frames without a position for each (no per-frame functional groups); "
            "volsr cannot place them",
        )  # fmt: skip
    mosaic = _mosaic(header, file)
    if mosaic is not None:
        return [mosaic]
    row, col = _orientation(header.get("ImageOrientationPatient"), file)
    position = _position(header.get("ImagePositionPatient"), file)
    spacing = _spacing(header.get("PixelSpacing"), file, header)
    image_type, derived = _image_type(header.get("ImageType"))
    return [
        Frame(
            file=file,
            frame=None,
            position=position,
            row=row,
            col=col,
            spacing=spacing,
            shape=(int(header.Rows), int(header.Columns)),
            **_rescale(header),
            derived=derived,
            image_type=image_type,
            order=(_instance(header), file.name, 0),
        )  # fmt: skip
    ]
