"""Voxel grids in world coordinates: every expectation is an independent formula in mm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from volsr.geometry.grids import (
    fov_corners,
    index_map,
    is_sheared,
    scale_for_spacing,
    scaled_grid,
    voxel_spacing,
    voxel_to_world,
)

SPACING = np.array([0.7, 1.3, 2.9])
ORIGIN = np.array([-12.5, 40.25, 7.0])


def make_affine(kind: str, spacing=SPACING, origin=ORIGIN) -> np.ndarray:
    """Voxel-to-world affines; columns are the world steps (mm) of the three array axes."""
    sx, sy, sz = spacing
    if kind == "ras":
        m = np.diag([sx, sy, sz])
    elif kind == "oblique":
        m = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix() @ np.diag(spacing)
    elif kind == "lia":  # i -> Left, j -> Inferior, k -> Anterior
        m = np.array([[-sx, 0, 0], [0, 0, sz], [0, -sy, 0]], dtype=np.float64)
    elif kind == "las":  # radiological: i -> Left
        m = np.diag([-sx, sy, sz])
    elif kind == "sheared":  # CT gantry tilt of 15 degrees: slices step along z and y
        m = np.diag([sx, sy, sz])
        m[1, 2] = sz * np.tan(np.deg2rad(15.0))
    else:
        raise KeyError(kind)
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = origin
    return a


KINDS = ("ras", "oblique", "lia", "las", "sheared")


def world(affine: np.ndarray, ijk) -> np.ndarray:
    """World position of continuous voxel index ``ijk``, written out without library helpers."""
    i, j, k = ijk
    return affine[:3, 3] + i * affine[:3, 0] + j * affine[:3, 1] + k * affine[:3, 2]


def test_affine_fixtures_have_expected_orientation():
    # guards the fixtures themselves: LIA's first axis points left, second inferior, third anterior
    lia = make_affine("lia")
    assert lia[0, 0] < 0 and lia[2, 1] < 0 and lia[1, 2] > 0
    assert np.allclose(np.linalg.norm(make_affine("oblique")[:3, :3], axis=0), SPACING)


def test_voxel_to_world_and_spacing():
    a = make_affine("oblique")
    ijk = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 3.5]])
    expected = np.stack([world(a, p) for p in ijk])
    assert np.allclose(voxel_to_world(a, ijk), expected)
    assert np.allclose(voxel_spacing(a), SPACING)
    # the sheared slice axis is longer than its nominal thickness: 2.9 / cos(15 deg)
    assert voxel_spacing(make_affine("sheared"))[2] == pytest.approx(2.9 / np.cos(np.deg2rad(15.0)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "s"), [(8, 4.0), (10, 2.5)])
def test_first_output_centre_sits_before_first_input_centre(kind, n, s):
    a = make_affine(kind)
    shape = (5, n, 3)
    new_aff, new_shape = scaled_grid(a, shape, (1.0, s, 1.0))
    assert new_shape == (5, round(n * s), 3)
    # (s - 1) / (2 s) input voxels before input centre 0, along the array axis in world mm
    back = (s - 1) / (2 * s)
    assert np.allclose(new_aff[:3, 3], a[:3, 3] - back * a[:3, 1])
    # every output centre j lies at input index (j + 1/2) / s - 1/2 along that axis
    for j in range(new_shape[1]):
        assert np.allclose(world(new_aff, (0, j, 0)), world(a, (0, (j + 0.5) / s - 0.5, 0)))
    # the untouched axes keep their columns
    assert np.allclose(new_aff[:3, [0, 2]], a[:3, [0, 2]])
    assert np.linalg.norm(new_aff[:3, 1]) == pytest.approx(SPACING[1] / s)


def test_scaled_grid_docstring_numbers():
    aff, shp = scaled_grid(np.eye(4), (32, 32, 8), (1, 1, 4))
    assert shp == (32, 32, 32)
    assert aff[2, 2] == pytest.approx(0.25)
    assert aff[2, 3] == pytest.approx(-0.375)


def test_index_map():
    step, offset = index_map(10, 25)
    assert step == pytest.approx(0.4)
    assert offset == pytest.approx(-0.3)
    step, offset = index_map(12, 3)
    assert (step, offset) == (4.0, 1.5)


def test_fov_corners_of_identity_grid():
    corners = fov_corners(np.eye(4), (2, 3, 4))
    expected = np.array(list(itertools.product([-0.5, 1.5], [-0.5, 2.5], [-0.5, 3.5])))
    assert np.allclose(corners, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [(0.25, 1.0, 0.5), (2.0, 2.5, 4.0), (1.5, 0.4, 3.0), (0.3, 1.7, 1.0)])
def test_fov_corners_are_kept(kind, scale):
    a = make_affine(kind)
    shape = (8, 10, 6)
    new_aff, new_shape = scaled_grid(a, shape, scale)
    # corners written out by hand: voxel edges -1/2 and n - 1/2 on each axis
    for b in itertools.product((0, 1), repeat=3):
        edge_in = [(-0.5, n - 0.5)[bit] for n, bit in zip(shape, b, strict=True)]
        edge_out = [(-0.5, n - 0.5)[bit] for n, bit in zip(new_shape, b, strict=True)]
        assert np.allclose(world(new_aff, edge_out), world(a, edge_in), atol=1e-9)
    assert np.allclose(fov_corners(new_aff, new_shape), fov_corners(a, shape), atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("s", [2, 3, 4])
def test_low_res_voxel_is_centred_at_mean_of_its_high_res_voxels(kind, s):
    a = make_affine(kind)
    shape = (4 * s, 6, 2 * s)
    lr_aff, lr_shape = scaled_grid(a, shape, (1.0 / s, 1.0, 1.0 / s))
    assert lr_shape == (4, 6, 2)
    for j in range(lr_shape[0]):
        for k in range(lr_shape[2]):
            members = [world(a, (s * j + p, 3, s * k + q)) for p in range(s) for q in range(s)]
            assert np.allclose(world(lr_aff, (j, 3, k)), np.mean(members, axis=0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("shape", "s"), [((10, 4, 6), (2.5, 1.0, 4.0)), ((8, 8, 5), (4.0, 0.5, 3.0))])
def test_up_then_down_returns_original_grid(kind, shape, s):
    a = make_affine(kind)
    up_aff, up_shape = scaled_grid(a, shape, s)
    back_aff, back_shape = scaled_grid(up_aff, up_shape, [1.0 / f for f in s])
    assert back_shape == shape
    assert np.allclose(back_aff, a, atol=1e-12)


def test_scale_is_effective_factor_for_non_integral_counts():
    # 7 voxels x 1.6 = 11.2 -> 11 voxels; the spacing follows n_in / n_out = 7 / 11, not 1 / 1.6
    a = make_affine("oblique")
    new_aff, new_shape = scaled_grid(a, (7, 9, 4), (1.6, 1.0, 1.0))
    assert new_shape[0] == 11
    assert voxel_spacing(new_aff)[0] == pytest.approx(0.7 * 7 / 11)
    assert np.allclose(fov_corners(new_aff, new_shape), fov_corners(a, (7, 9, 4)))


@pytest.mark.parametrize(("n", "expected"), [(45, 113), (47, 118), (3, 8)])
def test_half_voxel_counts_round_up_whatever_their_parity(n, expected):
    # n x 2.5 ends in .5 for odd n: Python's round would give 112 for 45 but 118 for 47
    new_aff, new_shape = scaled_grid(make_affine("oblique"), (n, 4, 4), (2.5, 1.0, 1.0))
    assert new_shape[0] == expected
    assert np.allclose(fov_corners(new_aff, new_shape), fov_corners(make_affine("oblique"), (n, 4, 4)))


def test_scale_for_spacing():
    a = make_affine("oblique")
    assert scale_for_spacing(a, (0.35, None, 1.45)) == pytest.approx((2.0, 1.0, 2.0))
    assert scale_for_spacing(a, 1.0) == pytest.approx((0.7, 1.3, 2.9))
    # applying the factor yields the requested spacing (up to the rounding of the voxel count)
    new_aff, new_shape = scaled_grid(a, (20, 10, 10), scale_for_spacing(a, (0.35, None, 1.45)))
    assert new_shape == (40, 10, 20)
    assert np.allclose(voxel_spacing(new_aff), [0.35, 1.3, 1.45])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), (1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -2.0, None)])
def test_scale_for_spacing_rejects_bad_spacing(bad):
    with pytest.raises(ValueError, match="spacing"):
        scale_for_spacing(np.eye(4), bad)


def test_is_sheared():
    for kind in ("ras", "oblique", "lia", "las"):
        assert not is_sheared(make_affine(kind)), kind
    assert is_sheared(make_affine("sheared"))
    # a rotation applied to a sheared grid keeps it sheared; tiny numerical noise is not shear
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("z", 30.0, degrees=True).as_matrix()
    assert is_sheared(rot @ make_affine("sheared"))
    noisy = make_affine("oblique")
    noisy[0, 2] += 1e-7
    assert not is_sheared(noisy)


@pytest.mark.parametrize(
    "scale", [(0.0, 1.0, 1.0), (-2.0, 1.0, 1.0), (float("nan"), 1.0, 1.0), (float("inf"), 1, 1), (2.0, 2.0)]
)
def test_scaled_grid_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        scaled_grid(np.eye(4), (4, 4, 4), scale)
