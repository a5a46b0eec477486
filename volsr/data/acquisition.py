"""The acquired slice thickness, where the file states it, against the slice spacing.

Clinical thick-slice scans are often acquired with gaps (5 mm slices every 6.5 mm) or overlaps
(3 mm slices every 2 mm). The voxel size along the slice axis is the spacing, not the thickness, so
without this record volsr would take every scan as contiguous slices (thickness = spacing).

Where the thickness comes from: a DICOM series' SliceThickness (0018,0050), and for a NIfTI file the
BIDS / dcm2niix sidecar ``<stem>.json`` (``"SliceThickness"``, read by :func:`volsr.data.io.read_sidecar`).
Slices lie along the third voxel axis in both (DICOM stacks them so and dcm2niix keeps that order).
:func:`volsr.data.io.load_image` records it in ``meta["slice_acquisition"]`` with the spacing it goes
with, and so does
:class:`volsr.transforms.SliceThickness` for the slices it simulates (along any axis). A volume
re-gridded along that axis no longer matches the spacing, and :func:`slice_acquisition` then
returns ``None``: the record describes the acquisition grid only.

Used by data consistency and per-scan adaptation (they model the stated thickness; a gap or overlap
also points data consistency to the thick-slice model: :mod:`volsr.inference.consistency_choice`), by
``volsr info``, by ``volsr degrade`` (which writes the sidecar: :func:`sidecar_fields`), and by
:class:`volsr.SuperResolver`, which warns when the slices are not contiguous. A DICOM
SpacingBetweenSlices is not read: the spacing is the one between the slice positions, which the
affine already holds. Reading and writing sidecar files is :mod:`volsr.data.io`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from volsr.geometry.grids import voxel_spacing
from volsr.geometry.meta import affine_of

__all__ = [
    "SLICE_AXIS",
    "CONTIGUOUS_TOLERANCE",
    "SliceAcquisition",
    "slice_acquisition",
    "thickness_ratios",
    "acquisition_record",
    "sidecar_fields",
    "parse_thickness",
]

#: the voxel axis along which DICOM series and dcm2niix NIfTI files stack their slices
SLICE_AXIS = 2
#: a gap or overlap up to this fraction of the spacing counts as contiguous (rounded header values)
CONTIGUOUS_TOLERANCE = 0.1


@dataclass(frozen=True)
class SliceAcquisition:
    """Slices of ``thickness_mm`` every ``spacing_mm`` along voxel axis ``axis``."""

    axis: int
    thickness_mm: float
    spacing_mm: float

    @property
    def gap_mm(self) -> float:
        """Spacing minus thickness: > 0 a gap between slices, < 0 an overlap."""
        return self.spacing_mm - self.thickness_mm

    @property
    def thickness_ratio(self) -> float:
        """Thickness over spacing: 1 for contiguous slices."""
        return self.thickness_mm / self.spacing_mm

    @property
    def contiguous(self) -> bool:
        return abs(self.gap_mm) <= CONTIGUOUS_TOLERANCE * self.spacing_mm

    def describe(self) -> str:
        """E.g. ``"5 mm slices every 6.5 mm along axis 2 (1.5 mm gaps)"``."""
        if self.contiguous:
            kind = "contiguous"
        elif self.gap_mm > 0:
            kind = f"{self.gap_mm:.3g} mm gaps"
        else:
            kind = f"{-self.gap_mm:.3g} mm overlap"
        every = f"every {self.spacing_mm:.3g} mm along axis {self.axis}"
        return f"{self.thickness_mm:.3g} mm slices {every} ({kind})"


def parse_thickness(value: object) -> float | None:
    """A header's slice thickness in mm as a positive float, or ``None`` (missing or not a number)."""
    try:
        thickness = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return thickness if math.isfinite(thickness) and thickness > 0 else None


def sidecar_fields(image: torch.Tensor) -> dict | None:
    """``{"SliceThickness", "SpacingBetweenSlices"}`` (mm) for the sidecar of ``image``'s file, or
    ``None`` when the thickness is unknown or the slices lie along another axis than
    :data:`SLICE_AXIS`, which a sidecar cannot say."""
    acquisition = slice_acquisition(image)
    if acquisition is None or acquisition.axis != SLICE_AXIS:
        return None
    return {"SliceThickness": acquisition.thickness_mm, "SpacingBetweenSlices": acquisition.spacing_mm}


def acquisition_record(thickness_mm: float | None, affine, axis: int = SLICE_AXIS) -> dict | None:
    """What ``meta["slice_acquisition"]`` holds: the thickness of slices along ``axis`` and the
    spacing of the grid ``affine`` they lie on; ``None`` when no thickness is known."""
    if thickness_mm is None:
        return None
    spacing = float(voxel_spacing(np.asarray(affine, dtype=np.float64))[axis])
    return {"axis": int(axis), "thickness_mm": float(thickness_mm), "spacing_mm": spacing}


def slice_acquisition(image: torch.Tensor) -> SliceAcquisition | None:
    """The slice acquisition of ``image`` as its file stated it, or ``None`` when unknown or when
    ``image`` is no longer on that grid (re-gridded along the slice axis)."""
    meta = getattr(image, "meta", None)
    record = meta.get("slice_acquisition") if meta is not None else None
    if not record:
        return None
    axis = int(record["axis"])
    spacing = float(voxel_spacing(affine_of(image))[axis])
    if not math.isclose(spacing, float(record["spacing_mm"]), rel_tol=1e-3):
        return None
    return SliceAcquisition(axis, float(record["thickness_mm"]), spacing)


def thickness_ratios(image: torch.Tensor) -> tuple[float, float, float]:
    """Slice thickness over spacing per voxel axis of ``image``: the stated ratio on the slice
    axis where the slices are not contiguous, else 1 (contiguous, as on every axis where nothing is
    stated)."""
    ratios = [1.0, 1.0, 1.0]
    if (acquisition := slice_acquisition(image)) is not None and not acquisition.contiguous:
        ratios[acquisition.axis] = acquisition.thickness_ratio
    return tuple(ratios)
