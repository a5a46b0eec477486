"""Voxel grids and their affines.

Convention: an affine maps voxel *centres* ``(i, j, k, 1)`` to world millimetres in MONAI's
RAS+ frame (x grows to the Right, y to the Anterior, z to the Superior), the same frame a NIfTI
``sform`` uses. Voxel ``i`` covers the index interval ``[i - 0.5, i + 0.5]``.

Re-gridding keeps the field of view: an axis of ``n`` voxels scaled by ``s`` (``s > 1`` up-samples)
gets ``n_out = round(n * s)`` voxels (halves rounded up: 45 x 2.5 -> 113, as 47 x 2.5 -> 118; Python's
``round`` would give 112 and 118) whose outer edges coincide with the input's, so the effective
factor is ``n_out / n`` and output voxel ``j`` is centred at input index ``(j + 0.5) * n / n_out - 0.5``.
For ``s = 4`` the first output centre lies ``(s - 1) / (2 s) = 3/8`` of an input voxel before the
first input centre; for ``s = 1/4`` it lies at index 1.5, the mean of indices 0..3. Because the
change is composed in index space, it is exact for oblique, flipped and sheared affines alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "voxel_spacing",
    "voxel_to_world",
    "scaled_grid",
    "scale_for_spacing",
    "grid_factors",
    "round_half_up",
    "fov_corners",
    "index_map",
    "is_sheared",
]


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis: the norms of the affine's first three columns."""
    a = np.asarray(affine, dtype=np.float64)
    return np.linalg.norm(a[:3, :3], axis=0)


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of voxel index coordinates ``ijk`` with shape ``(..., 3)``."""
    a = np.asarray(affine, dtype=np.float64)
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ a[:3, :3].T + a[:3, 3]


def is_sheared(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when the voxel axes are not mutually orthogonal (e.g. CT with gantry tilt)."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    cols = a / np.linalg.norm(a, axis=0, keepdims=True)
    gram = cols.T @ cols
    return bool(np.max(np.abs(gram - np.eye(3))) > tol)


def index_map(n_in: int, n_out: int) -> tuple[float, float]:
    """``(step, offset)`` such that output voxel ``j`` sits at input index ``offset + j * step``."""
    step = n_in / n_out
    return step, 0.5 * step - 0.5


def scaled_grid(
    affine: np.ndarray, shape: Sequence[int], scale: Sequence[float]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The grid that covers the same field of view with ``scale`` times as many voxels per axis.

    Args:
        affine: 4x4 voxel-to-world matrix of the input grid.
        shape: spatial shape of the input grid.
        scale: per-axis up-sampling factor (``2`` doubles the voxel count, ``0.25`` keeps a quarter);
            non-integer values are allowed.

    Returns:
        ``(affine, shape)`` of the output grid. The effective factor on each axis is
        ``n_out / n_in`` with ``n_out = max(1, round_half_up(n_in * scale))``, so the field of view is kept
        exactly and the spacing is ``spacing * n_in / n_out``.

    Example:
        >>> aff, shp = scaled_grid(np.eye(4), (32, 32, 8), (1, 1, 4))
        >>> shp, aff[2, 2], aff[2, 3]
        ((32, 32, 32), 0.25, -0.375)
    """
    if len(shape) != len(scale):
        raise ValueError(f"scale has {len(scale)} values but the grid has {len(shape)} axes")
    for s in scale:
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"scale factors must be positive and finite, got {tuple(scale)}")
    a = np.asarray(affine, dtype=np.float64)
    nd = len(shape)
    new_shape = tuple(max(1, round_half_up(n * s)) for n, s in zip(shape, scale, strict=True))
    index_to_index = np.eye(nd + 1)
    for ax, (n_in, n_out) in enumerate(zip(shape, new_shape, strict=True)):
        step, offset = index_map(n_in, n_out)
        index_to_index[ax, ax] = step
        index_to_index[ax, nd] = offset
    full = np.eye(4)
    full[:nd, :nd] = index_to_index[:nd, :nd]
    full[:nd, 3] = index_to_index[:nd, nd]
    return a @ full, new_shape


def round_half_up(x: float) -> int:
    """The nearest integer, halves up: the same rule for every size, unlike ``round``'s
    round-half-to-even. A product like ``45 * 2.5`` is exact in binary, so the half is real."""
    return math.floor(x + 0.5)


def grid_factors(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[float]:
    """Per-axis up-sampling factor ``n_out / n_in`` between two grids of the same field of view."""
    return [n_out / n_in for n_in, n_out in zip(in_shape, out_shape, strict=True)]


def scale_for_spacing(
    affine: np.ndarray, spacing: Sequence[float | None] | float
) -> tuple[float, float, float]:
    """Per-axis up-sampling factors that bring the grid to ``spacing`` mm (``None`` keeps an axis)."""
    current = voxel_spacing(affine)
    if np.isscalar(spacing):
        spacing = [float(spacing)] * 3  # type: ignore[list-item]
    spacing = list(spacing)  # type: ignore[arg-type]
    if len(spacing) != 3:
        raise ValueError(f"spacing needs 3 values (mm), got {spacing}")
    out = []
    for cur, tgt in zip(current, spacing, strict=True):
        if tgt is None:
            out.append(1.0)
            continue
        if not np.isfinite(tgt) or tgt <= 0:
            raise ValueError(f"spacing must be positive mm values, got {spacing}")
        out.append(float(cur / tgt))
    return tuple(out)  # type: ignore[return-value]


def fov_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates of the 8 outer corners of the field of view (voxel edges, not centres)."""
    lo = [-0.5] * 3
    hi = [n - 0.5 for n in shape]
    corners = np.array(
        [
            [(lo, hi)[b0][0], (lo, hi)[b1][1], (lo, hi)[b2][2]]
            for b0 in (0, 1)
            for b1 in (0, 1)
            for b2 in (0, 1)
        ]
    )
    return voxel_to_world(affine, corners)
