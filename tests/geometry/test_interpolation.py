"""Separable re-gridding: analytic ramps and quadratics, checked at the world position of each voxel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation

from volsr.geometry.interpolation import axis_matrix, resample, resample_array

SPACING = np.array([0.8, 1.1, 2.5])


def oblique_affine() -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("zyx", [25.0, 10.0, -40.0], degrees=True).as_matrix() @ np.diag(SPACING)
    a[:3, 3] = [31.0, -7.5, 102.25]
    return a


def image(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(data)[None], affine=torch.tensor(affine, dtype=torch.float64))


def centres(affine: np.ndarray, shape) -> np.ndarray:
    """World positions (X, Y, Z, 3) of all voxel centres, written out without library helpers."""
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def source_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output centre when the outer voxel edges are kept."""
    return (np.arange(n_out) + 0.5) * n_in / n_out - 0.5


# --- axis_matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["linear", "cubic", "nearest"])
@pytest.mark.parametrize(("n_in", "n_out"), [(10, 25), (25, 10), (8, 32), (12, 7), (5, 6)])
def test_axis_matrix_is_a_partition_of_unity(mode, n_in, n_out):
    m = axis_matrix(n_in, n_out, mode)
    assert m.shape == (n_out, n_in)
    assert np.allclose(m.sum(axis=1), 1.0, atol=1e-10)


@pytest.mark.parametrize(("n_in", "n_out"), [(10, 25), (25, 10), (8, 32), (12, 7)])
def test_linear_matrix_reproduces_a_ramp_inside_the_grid(n_in, n_out):
    x = source_index(n_in, n_out)
    inside = (x >= 0) & (x <= n_in - 1)
    assert inside.sum() >= n_out - 4  # the test must look at most voxels
    ramp = 3.0 - 0.7 * np.arange(n_in)
    out = axis_matrix(n_in, n_out, "linear") @ ramp
    assert np.allclose(out[inside], 3.0 - 0.7 * x[inside], atol=1e-12)
    # beyond the outer centres the half-sample-symmetric edge flattens the ramp: not the ramp any more
    if (~inside).any():
        assert not np.allclose(out[~inside], 3.0 - 0.7 * x[~inside])


def test_linear_matrix_weights_are_the_two_neighbours():
    # 4 -> 8: output centre 3 sits at input index 1.25 -> 0.75 * v1 + 0.25 * v2
    m = axis_matrix(4, 8, "linear")
    assert np.allclose(m[3], [0.0, 0.75, 0.25, 0.0])


@pytest.mark.parametrize(("n_in", "n_out"), [(40, 100), (40, 17), (30, 90)])
def test_cubic_bspline_reproduces_a_quadratic_away_from_edges(n_in, n_out):
    x = source_index(n_in, n_out)
    q = lambda t: 0.02 * t**2 - 0.3 * t + 1.0  # noqa: E731
    out = axis_matrix(n_in, n_out, "cubic") @ q(np.arange(n_in, dtype=np.float64))
    interior = (x >= 12) & (x <= n_in - 13)
    assert interior.sum() >= 5
    assert np.allclose(out[interior], q(x[interior]), atol=1e-6)
    # linear interpolation cannot do this: the test discriminates between the modes
    lin = axis_matrix(n_in, n_out, "linear") @ q(np.arange(n_in, dtype=np.float64))
    off_grid = interior & (np.abs(x - np.round(x)) > 0.1)
    assert not np.allclose(lin[off_grid], q(x[off_grid]), atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_axis_matrix_is_identity_for_equal_sizes(mode):
    assert np.allclose(axis_matrix(9, 9, mode), np.eye(9), atol=1e-12)


def test_axis_matrix_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        axis_matrix(4, 8, "quintic")


# --- resample_array / resample -----------------------------------------------------------------


def test_resample_array_only_touches_changed_axes():
    x = torch.arange(2 * 4 * 5 * 3, dtype=torch.float64).reshape(2, 4, 5, 3)
    out = resample_array(x, (4, 10, 3), mode="linear")
    assert out.shape == (2, 4, 10, 3)
    expected = torch.einsum("oi,cxiz->cxoz", torch.tensor(axis_matrix(5, 10, "linear")), x)
    assert torch.allclose(out, expected)


def world_ramp(points: np.ndarray) -> np.ndarray:
    return 0.3 * points[..., 0] - 0.2 * points[..., 1] + 0.05 * points[..., 2] + 4.0


@pytest.mark.parametrize("scale", [(2.0, 2.5, 1.0), (0.5, 1.0, 2.4), (1.5, 0.75, 3.0)])
def test_linear_resample_of_world_ramp_is_exact_at_output_centres(scale):
    a = oblique_affine()
    shape = (6, 8, 5)
    img = image(world_ramp(centres(a, shape)), a)
    out = resample(img, scale=scale, mode="linear")
    new_shape = tuple(out.shape[1:])
    assert new_shape == tuple(round(n * s) for n, s in zip(shape, scale, strict=True))
    # independent world position of every output centre: input index (j + 1/2) n_in / n_out - 1/2
    idx = np.meshgrid(*[source_index(n, m) for n, m in zip(shape, new_shape, strict=True)], indexing="ij")
    expected_pos = np.stack(idx, axis=-1) @ a[:3, :3].T + a[:3, 3]
    out_aff = out.affine.numpy()
    assert np.allclose(centres(out_aff, new_shape), expected_pos, atol=1e-9)
    inside = np.all([(i >= 0) & (i <= n - 1) for i, n in zip(idx, shape, strict=True)], axis=0)
    assert inside.mean() > 0.4
    got = out.as_tensor()[0].numpy()
    assert np.allclose(got[inside], world_ramp(expected_pos)[inside], atol=1e-9)


def test_cubic_resample_of_quadratic_along_one_axis():
    a = oblique_affine()
    shape = (3, 40, 2)
    pos = centres(a, shape)
    u = pos @ a[:3, 1] / SPACING[1] ** 2  # the (world) coordinate that follows array axis 1
    img = image(0.01 * u**2 + u, a)
    out = resample(img, scale=(1.0, 2.5, 1.0), mode="cubic")
    out_pos = centres(out.affine.numpy(), out.shape[1:])
    u_out = out_pos @ a[:3, 1] / SPACING[1] ** 2
    truth = 0.01 * u_out**2 + u_out
    j = np.arange(out.shape[2])
    interior = (source_index(40, 100) >= 12) & (source_index(40, 100) <= 27)
    got = out.as_tensor()[0].numpy()
    assert np.allclose(got[:, j[interior]], truth[:, j[interior]], atol=1e-6)


def test_resample_by_scale_sets_affine_shape_and_meta():
    a = oblique_affine()
    shape = (6, 8, 5)
    img = image(np.random.default_rng(0).random(shape), a)
    img.meta["filename_or_obj"] = "scan.nii.gz"
    out = resample(img, scale=(2.0, 0.5, 2.4), mode="cubic")
    assert isinstance(out, MetaTensor)
    assert tuple(out.shape) == (1, 12, 4, 12)
    assert np.array_equal(np.asarray(out.meta["spatial_shape"]), [12, 4, 12])
    assert out.meta["filename_or_obj"] == "scan.nii.gz"
    assert out.affine.dtype == torch.float64
    out_aff = out.affine.numpy()
    assert np.allclose(np.linalg.norm(out_aff[:3, :3], axis=0), SPACING * np.array([6, 8, 5]) / [12, 4, 12])
    # directions are kept: each column is a positive multiple of the input column
    cos = np.sum(out_aff[:3, :3] * a[:3, :3], axis=0) / (
        np.linalg.norm(out_aff[:3, :3], axis=0) * np.linalg.norm(a[:3, :3], axis=0)
    )
    assert np.allclose(cos, 1.0)
    assert_same_fov(a, shape, out_aff, (12, 4, 12))
    # the input is untouched
    assert tuple(img.shape) == (1, 6, 8, 5)
    assert np.allclose(img.affine.numpy(), a)


def test_resample_by_spacing():
    a = oblique_affine()
    shape = (6, 8, 5)
    img = image(np.ones(shape), a)
    out = resample(img, spacing=(0.4, None, 1.25), mode="linear")
    assert tuple(out.shape[1:]) == (12, 8, 10)
    assert np.allclose(np.linalg.norm(out.affine.numpy()[:3, :3], axis=0), [0.4, 1.1, 1.25])
    assert np.array_equal(np.asarray(out.meta["spatial_shape"]), [12, 8, 10])
    assert_same_fov(a, shape, out.affine.numpy(), (12, 8, 10))
    assert torch.allclose(out.as_tensor(), torch.ones_like(out.as_tensor()))


def test_resample_by_spacing_with_rounded_count():
    # 5 voxels of 2.5 mm -> 1 mm asks for 12.5 voxels; the grid keeps the FOV, so spacing = 12.5 / n_out
    a = oblique_affine()
    out = resample(image(np.zeros((6, 8, 5)), a), spacing=(None, None, 1.0), mode="linear")
    n_out = out.shape[3]
    assert n_out in (12, 13)
    assert np.linalg.norm(out.affine.numpy()[:3, 2]) == pytest.approx(12.5 / n_out)
    assert_same_fov(a, (6, 8, 5), out.affine.numpy(), out.shape[1:])


def assert_same_fov(a_in, shape_in, a_out, shape_out):
    for b in itertools.product((0, 1), repeat=3):
        e_in = np.array([(-0.5, n - 0.5)[bit] for n, bit in zip(shape_in, b, strict=True)])
        e_out = np.array([(-0.5, n - 0.5)[bit] for n, bit in zip(shape_out, b, strict=True)])
        assert np.allclose(a_out[:3, :3] @ e_out + a_out[:3, 3], a_in[:3, :3] @ e_in + a_in[:3, 3], atol=1e-9)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resample_with_unit_scale_is_identity(mode):
    a = oblique_affine()
    data = np.random.default_rng(1).random((4, 5, 3))
    out = resample(image(data, a), scale=(1.0, 1.0, 1.0), mode=mode)
    assert np.allclose(out.affine.numpy(), a)
    assert np.allclose(out.as_tensor()[0].numpy(), data)


def test_resample_plain_tensor_uses_identity_affine():
    out = resample(torch.zeros(1, 4, 4, 2), scale=(1.0, 1.0, 2.0), mode="linear")
    assert isinstance(out, MetaTensor)
    assert np.allclose(out.affine.numpy()[2], [0.0, 0.0, 0.5, -0.25])


def test_resample_needs_exactly_one_of_scale_and_spacing():
    img = image(np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="scale and spacing"):
        resample(img)
    with pytest.raises(ValueError, match="scale and spacing"):
        resample(img, scale=(2, 2, 2), spacing=1.0)
