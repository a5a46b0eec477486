"""Property-based geometry: random oblique, flipped and sheared grids keep their field of view under
re-gridding, a degraded grid up-sampled back is the original grid, and NIfTI round trips are exact."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from scans import rotation_from_quaternion

from volsr.data.io import load_image, save_image
from volsr.geometry.grids import fov_corners, scaled_grid

SETTINGS = settings(max_examples=50, derandomize=True, database=None, deadline=None)


@st.composite
def affines(draw) -> np.ndarray:
    """A voxel-to-world matrix: random rotation, axis flips, shear, voxel sizes and origin."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    rotation = rotation_from_quaternion(q)
    flips = np.diag(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
    shear = np.eye(3)
    shear[0, 1], shear[0, 2], shear[1, 2] = draw(st.lists(st.floats(-0.4, 0.4), min_size=3, max_size=3))
    spacing = np.diag(draw(st.lists(st.floats(0.2, 6.0), min_size=3, max_size=3)))
    a = np.eye(4)
    a[:3, :3] = rotation @ flips @ shear @ spacing
    a[:3, 3] = draw(st.lists(st.floats(-300, 300), min_size=3, max_size=3))
    return a


shapes = st.lists(st.integers(1, 64), min_size=3, max_size=3).map(tuple)
factors = st.lists(st.floats(0.25, 6.0), min_size=3, max_size=3).map(tuple)


@SETTINGS
@given(affines(), shapes, factors)
def test_scaled_grid_keeps_the_field_of_view_corners(affine, shape, scale):
    out_affine, out_shape = scaled_grid(affine, shape, scale)
    np.testing.assert_allclose(fov_corners(out_affine, out_shape), fov_corners(affine, shape), atol=1e-6)


@SETTINGS
@given(
    affines(),
    st.lists(st.integers(1, 12), min_size=3, max_size=3),
    st.lists(st.integers(1, 5), min_size=3, max_size=3),
)
def test_a_degraded_grid_up_sampled_back_is_the_original_grid(affine, low_shape, factor):
    """Where the factor divides the size, degrade-then-SR lands on the original voxel centres."""
    shape = tuple(n * f for n, f in zip(low_shape, factor, strict=True))
    low_affine, low = scaled_grid(affine, shape, [1 / f for f in factor])
    assert low == tuple(low_shape)
    back_affine, back = scaled_grid(low_affine, low, factor)
    assert back == shape
    np.testing.assert_allclose(back_affine, affine, atol=1e-9 * max(1.0, np.abs(affine).max()))


@SETTINGS
@given(
    affines(),
    st.lists(st.integers(2, 9), min_size=3, max_size=3),
    st.sampled_from(["int16", "uint8", "float32"]),
    st.integers(0, 2**31 - 1),
)
def test_nifti_write_read_round_trip_is_exact(affine, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if dtype != "float32" else None
    data = rng.integers(info.min, info.max, size=shape, endpoint=True) if info else rng.normal(0, 1e3, shape)
    data = data.astype(dtype)
    image = MetaTensor(torch.as_tensor(data.astype(np.float32))[None], affine=torch.as_tensor(affine))
    with tempfile.TemporaryDirectory() as folder:
        path = save_image(image, Path(folder) / "x.nii.gz", dtype=dtype)
        back = load_image(path)
    # the sform is stored as float32: 1e-5 mm, or its half-ulp (6e-8 relative) at large origins
    np.testing.assert_allclose(back.affine.numpy(), affine, rtol=1e-7, atol=1e-5)
    assert back.meta["source_dtype"] == dtype
    np.testing.assert_array_equal(back[0].numpy(), data.astype(np.float32))
