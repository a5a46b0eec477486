"""What ``volsr infer`` says of each scan it wrote: both grids, the time, where and in what precision
the network ran, the bundle and where it came from, the data-consistency model, and every file
written. Read from what the run already recorded (the sidecar's record,
:meth:`volsr.api.resolver.SuperResolver.provenance`), so the lines say what the sidecar says.

Example:
    >>> print(scan_summary("t.nii.gz", info, 2.4, [out, sidecar], "installed copy: /b/volsr_cnn3d"))
    t.nii.gz: 16 x 12 x 5 voxels of 1 x 1 x 2 mm -> 16 x 12 x 10 voxels of 1 x 1 x 1 mm, 2.4 s on cpu float32
      bundle: volsr_cnn3d 1.3.0 (installed copy: /b/volsr_cnn3d)
      consistency: slices (no acquisition type stated; one axis up-sampled (x1, x1, x2): thick slices)
      wrote out/t_sr.nii.gz
      wrote out/t_sr.json
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["scan_summary", "grid_text"]


def grid_text(grid: Mapping) -> str:
    """``16 x 12 x 5 voxels of 1 x 1 x 2 mm`` from a sidecar's ``Input`` / ``Output`` record."""
    shape = " x ".join(str(int(n)) for n in grid["shape"])
    spacing = " x ".join(f"{float(s):.4g}" for s in grid["spacing_mm"])
    return f"{shape} voxels of {spacing} mm"


def _consistency_text(record: Mapping) -> str:
    model = record.get("model") or "none"
    reason = record.get("reason")
    return f"{model} ({reason})" if reason else str(model)


def scan_summary(
    scan: str | os.PathLike,
    info: Mapping,
    seconds: float,
    written: Sequence[str | os.PathLike],
    bundle_origin: str | None = None,
    series: str | None = None,
) -> str:
    """A few lines on one written output.

    Args:
        scan: the input as the user named it.
        info: the output's provenance (its sidecar's record): ``Input``, ``Output``, ``GeneratedBy``
            and, where data consistency was considered, ``Consistency``.
        seconds: the scan's time, reading and writing included.
        written: every path written: the output (a file or a DICOM series folder), its uncertainty
            map, its sidecar.
        bundle_origin: how the bundle was found
            (:meth:`volsr.api.bundle_search.BundleLocation.describe`); ``None``: the bundle folder.
        series: the DICOM series read from ``scan``, if one was named.
    """
    made = info.get("GeneratedBy", {})
    options = made.get("Options", {})
    name = f"{scan} (series {series})" if series else str(scan)
    run = f"{seconds:.1f} s on {options.get('device', '?')} {options.get('precision', '')}".rstrip()
    lines = [f"{name}: {grid_text(info['Input'])} -> {grid_text(info['Output'])}, {run}"]
    if made.get("Bundle"):
        version = f" {made['BundleVersion']}" if made.get("BundleVersion") else ""
        where = bundle_origin or made["Bundle"]
        handed_over = bool(bundle_origin) and not bundle_origin.endswith(str(made["Bundle"]))
        if handed_over:  # another bundle than the one asked for made it (SuperResolver.for_scan)
            where = f"handed a reduced k-space matrix by the bundle asked for: {made['Bundle']}"
        lines.append(f"  bundle: {Path(made['Bundle']).name}{version} ({where})")
    if info.get("Consistency"):
        lines.append(f"  consistency: {_consistency_text(info['Consistency'])}")
    lines += [f"  wrote {path}" for path in written]
    return "\n".join(lines)
