"""Property: any valid DICOM geometry (random rotation and handedness, pixel spacing, slice step, gantry
tilt, position, 3-D or 4-D), written with pydicom under shuffled file names, reads back with the world
corners that the written header values state, computed here straight from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing, and every voxel at its own world position."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from dicom_series import LPS, write_series
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from scans import assert_on_world_grid, rotation_from_quaternion

from volsr.data.io import load_image
from volsr.geometry.grids import fov_corners

SETTINGS = settings(max_examples=25, derandomize=True, database=None, deadline=None)


@st.composite
def geometries(draw) -> tuple[np.ndarray, tuple[int, ...], int]:
    """``(RAS+ affine, shape (X, Y, Z, volumes), file-name seed)``."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    rotation = rotation_from_quaternion(q)
    rotation[:, 2] *= draw(st.sampled_from([-1.0, 1.0]))  # slices along or against row x column
    dx, dy, dz = draw(st.lists(st.floats(0.2, 6.0), min_size=3, max_size=3))
    tilt = draw(st.sampled_from([0.0, 0.0, 0.3, -0.45]))  # gantry tilt: the slice axis leans along j
    a = np.eye(4)
    a[:3, 0], a[:3, 1] = rotation[:, 0] * dx, rotation[:, 1] * dy
    a[:3, 2] = (rotation[:, 2] + tilt * rotation[:, 1]) * dz
    a[:3, 3] = draw(st.lists(st.floats(-300, 300), min_size=3, max_size=3))
    shape = tuple(draw(st.lists(st.integers(2, 5), min_size=3, max_size=3))) + (draw(st.integers(1, 2)),)
    return a, shape, draw(st.integers(0, 2**16))


def corners_from_headers(first: Path, last: Path, columns: int, rows: int, slices: int) -> np.ndarray:
    """The eight RAS+ corners of the field of view from the first and last slice's header values: each
    slice's pixel box from its position, orientation and spacing, half a slice step out on either side."""
    a, b = dcmread(first), dcmread(last)
    row, col = np.array(a.ImageOrientationPatient[:3], float), np.array(a.ImageOrientationPatient[3:], float)
    between_rows, between_columns = (float(v) for v in a.PixelSpacing)
    p0, p1 = np.array(a.ImagePositionPatient, float), np.array(b.ImagePositionPatient, float)
    step = (p1 - p0) / (slices - 1)
    corners = [
        p + i * between_columns * row + j * between_rows * col + s * step
        for p, s in ((p0, -0.5), (p1, 0.5))
        for i in (-0.5, columns - 0.5)
        for j in (-0.5, rows - 0.5)
    ]
    return np.array(corners) @ LPS.T


@SETTINGS
@given(geometries())
def test_read_back_corners_are_the_headers_corners(geometry):
    affine, shape, seed = geometry
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape) - 50
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_series(Path(tmp), data, affine, seed=seed)
        expected = corners_from_headers(paths[0], paths[shape[2] - 1], shape[0], shape[1], shape[2])
        volume = shape[3] - 1
        img = load_image(tmp, volume=volume if shape[3] > 1 else None)
    read = fov_corners(img.affine.numpy(), img.shape[1:])
    distance = np.linalg.norm(read[:, None] - expected[None], axis=-1)
    assert distance.min(axis=1).max() < 1e-4 and distance.min(axis=0).max() < 1e-4
    assert_on_world_grid(img, data[..., volume], affine, same_index=False)
