"""Scans on disk: describe one (``volsr info``), or write its degraded version (``volsr degrade``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from volsr.transforms.protocol import Protocol, ThickSlices, as_protocol

__all__ = ["describe", "degrade_file", "DegradedFile"]


def describe(src: str | Path, series_uid: str | None = None, volume: int | None = None) -> dict:
    """Grid, data type and intensity range of a scan (:func:`volsr.data.io.describe`): ``path``,
    ``shape``, ``spacing`` (mm), ``orientation``, ``sheared``, ``slices`` (the stated thickness, or
    ``None``), ``source_dtype``, ``min`` / ``max`` / ``mean``."""
    from volsr.data.io import describe as describe_image
    from volsr.data.io import load_image

    return describe_image(load_image(src, series_uid=series_uid, volume=volume))


@dataclass(frozen=True)
class DegradedFile:
    """What :func:`degrade_file` wrote: the image, its grid, and the slice sidecar (thick slices along
    the slice axis) with the acquisition it states."""

    path: Path
    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    sidecar: Path | None = None
    slices: str | None = None


def degrade_file(
    src: str | Path,
    dst: str | Path,
    protocol: Protocol | Mapping,
    dtype: str = "float32",
    overwrite: bool = False,
    series_uid: str | None = None,
    volume: int | None = None,
) -> DegradedFile:
    """Read ``src``, degrade it by ``protocol`` and write NIfTI to ``dst`` (field of view kept, affine on
    the new grid). Thick slices along the slice axis (2) also get a JSON sidecar stating their
    thickness (:func:`volsr.data.acquisition.sidecar_fields`), so the output reads back as acquired.
    Nothing is written when the output would be refused (an existing file without ``overwrite``,
    the input itself)."""
    from volsr.data.acquisition import SLICE_AXIS, sidecar_fields, slice_acquisition
    from volsr.data.io import check_output, load_image, save_image, write_sidecar
    from volsr.geometry.grids import voxel_spacing

    protocol = as_protocol(protocol)
    image = load_image(src, series_uid=series_uid, volume=volume)
    slices_along_z = isinstance(protocol, ThickSlices) and protocol.axis == SLICE_AXIS
    out = check_output(dst, image, dtype, overwrite, sidecar=slices_along_z)
    result = protocol.transform()(image)
    written = save_image(result, out, dtype=dtype, overwrite=overwrite)
    sidecar = slices = None
    if isinstance(protocol, ThickSlices) and (fields := sidecar_fields(result)) is not None:
        sidecar = write_sidecar(written, fields, overwrite=overwrite)
        slices = slice_acquisition(result).describe()
    return DegradedFile(
        Path(written),
        tuple(int(n) for n in result.shape[1:]),
        tuple(float(s) for s in voxel_spacing(result.affine)),
        sidecar,
        slices,
    )
