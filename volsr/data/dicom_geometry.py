"""The grid of a DICOM series: its images sorted into slices and volumes, and the RAS+ affine.

Written here because it is where readers differ and none states it as a checked rule: slices are
sorted by their signed position along the slice normal (row x column, as ITK and dcm2niix do); a
position that repeats is a volume boundary (diffusion, fMRI, multi-echo: the same number of images
at every position, the n-th image of each, by InstanceNumber, forms volume n), never a slice; the
steps between positions must be even and the positions on one line, else the series is refused.
The slice axis runs from the first position to the last (a sheared affine under gantry tilt, as
dcm2niix places it). A Siemens mosaic is one volume per file, its slice axis from the CSA header.
DICOM's frame is LPS+, volsr's RAS+: the affine is ``diag(-1, -1, 1) @ [row * dx | col * dy | step]``
with voxel index ``(column, row, slice)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volsr.data.dicom_frames import ORIENTATION_TOLERANCE, Frame
from volsr.errors import VolsrInputError

__all__ = ["SeriesGrid", "series_grid", "POSITION_TOLERANCE_MM", "SLICE_STEP_TOLERANCE"]

#: images whose positions lie closer than this (mm) share a slice position
POSITION_TOLERANCE_MM = 0.01
#: slice positions further than this fraction of the typical slice step from an even grid are a gap
SLICE_STEP_TOLERANCE = 0.01

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SeriesGrid:
    """``volumes[v]`` lists volume ``v``'s images in slice order (one image for a mosaic); ``affine``
    maps voxel ``(column, row, slice)`` of every volume to RAS+ mm; ``shape`` is one volume's."""

    volumes: list[list[Frame]]
    affine: np.ndarray
    shape: tuple[int, int, int]


def _check_alike(frames: list[Frame], folder: Path) -> None:
    """One stack: the same orientation, matrix, pixel spacing and storage in every image."""
    first = frames[0]
    for f in frames[1:]:
        what = None
        if not (np.allclose(f.row, first.row, atol=ORIENTATION_TOLERANCE)
                and np.allclose(f.col, first.col, atol=ORIENTATION_TOLERANCE)):  # fmt: skip
            what = "ImageOrientationPatient"
        elif f.shape != first.shape:
            what = "matrix (Rows x Columns)"
        elif not np.allclose(f.spacing, first.spacing, rtol=1e-4):
            what = "PixelSpacing"
        elif f.mosaic != first.mosaic:
            what = "storage (mosaic and single slices)"
        if what:
            raise VolsrInputError(
                folder,
                f"{f.file.name} and {first.file.name} differ in {what}: the series is not one stack "
                "of slices (a localizer, or several series under one SeriesInstanceUID); volsr cannot "
                "place it as one volume",
            )


def _affine(first: Frame, step: np.ndarray) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, 0] = first.row * first.spacing[1]  # along a row: the column index, columns PixelSpacing[1] apart
    lps[:3, 1] = first.col * first.spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = first.position
    out = np.eye(4)
    out[:3] = _LPS_TO_RAS @ lps[:3]
    return out


def _mosaic_grid(frames: list[Frame], folder: Path) -> SeriesGrid:
    volumes = sorted(frames, key=lambda f: f.order)
    first = volumes[0]
    for f in volumes[1:]:
        if np.linalg.norm(f.position - first.position) > POSITION_TOLERANCE_MM:
            raise VolsrInputError(
                folder,
                f"mosaics {first.file.name} and {f.file.name} lie at different positions: their volumes "
                "share no grid",
            )
    shape = (first.shape[1], first.shape[0], first.mosaic)
    return SeriesGrid([[f] for f in volumes], _affine(first, first.slice_step), shape)


def _positions(frames: list[Frame], normal: np.ndarray, folder: Path) -> list[list[Frame]]:
    """The images grouped by slice position, along ``normal``; each group in volume order."""
    ordered = sorted(frames, key=lambda f: (float(f.position @ normal), f.order))
    groups: list[list[Frame]] = []
    for f in ordered:
        if groups and float((f.position - groups[-1][0].position) @ normal) <= POSITION_TOLERANCE_MM:
            if np.linalg.norm(f.position - groups[-1][0].position) > POSITION_TOLERANCE_MM:
                raise VolsrInputError(
                    folder,
                    f"{f.file.name} and {groups[-1][0].file.name} lie in one slice plane at different "
                    "positions within it; volsr cannot place them as one grid",
                )
            groups[-1].append(f)
        else:
            groups.append([f])
    for group in groups:
        group.sort(key=lambda f: f.order)
    counts = [len(g) for g in groups]
    if len(set(counts)) > 1:
        typical = max(set(counts), key=counts.count)
        odd = next(g for g in groups if len(g) != typical)
        names = ", ".join(f.file.name for f in odd[:3]) + (", ..." if len(odd) > 3 else "")
        raise VolsrInputError(
            folder,
            f"the slice position of {names} holds {len(odd)} image(s) where the others hold {typical} "
            "(a missing or repeated slice, or an incomplete 4-D series); volsr reads complete series only",
        )
    return groups


def _check_spacing(groups: list[list[Frame]], normal: np.ndarray, folder: Path) -> None:
    """Even steps between the signed positions, and every position on the line first -> last."""
    firsts = [g[0] for g in groups]
    if len(firsts) < 2:
        return
    steps = np.diff([float(f.position @ normal) for f in firsts])
    typical = float(np.median(steps))
    off = np.abs(steps - typical) > SLICE_STEP_TOLERANCE * typical
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise VolsrInputError(
            folder,
            f"slices are not evenly spaced: {firsts[i].file.name} and {firsts[i + 1].file.name} lie "
            f"{steps[i]:.4g} mm apart where the others lie {typical:.4g} mm apart (a missing or repeated "
            "slice); volsr reads complete series only",
        )
    first, last = firsts[0].position, firsts[-1].position
    step = (last - first) / (len(firsts) - 1)
    for k, f in enumerate(firsts):
        if np.linalg.norm(f.position - (first + k * step)) > SLICE_STEP_TOLERANCE * np.linalg.norm(step):
            raise VolsrInputError(
                folder,
                f"slice positions do not lie on one line ({f.file.name} is "
                f"{np.linalg.norm(f.position - (first + k * step)):.4g} mm off it); volsr cannot place "
                "them as one grid",
            )


def series_grid(frames: list[Frame], folder: Path, slice_thickness: float | None = None) -> SeriesGrid:
    """The volumes and affine of one series' images (module doc).

    Args:
        frames: every image of the series (:func:`volsr.data.dicom_frames.frames_of`), in any order.
        folder: the series' folder, named in refusals.
        slice_thickness: mm; the slice axis of a single-slice series (the one case without two positions).

    Raises:
        VolsrInputError: images of different orientation, matrix or spacing; positions that repeat
            unevenly, are unevenly spaced or off one line; mosaics at different positions.
    """
    _check_alike(frames, folder)
    if frames[0].mosaic:
        return _mosaic_grid(frames, folder)
    normal = np.cross(frames[0].row, frames[0].col)
    groups = _positions(frames, normal, folder)
    _check_spacing(groups, normal, folder)
    first, last = groups[0][0].position, groups[-1][0].position
    # a single slice is refused as 2-D by load_image; its axis only keeps the affine invertible
    step = (last - first) / (len(groups) - 1) if len(groups) > 1 else normal * (slice_thickness or 1.0)
    volumes = [[g[v] for g in groups] for v in range(len(groups[0]))]
    shape = (frames[0].shape[1], frames[0].shape[0], len(groups))
    return SeriesGrid(volumes, _affine(groups[0][0], step), shape)
