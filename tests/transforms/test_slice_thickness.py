"""Thick-slice simulation: analytic ramps and constants, world positions, affines and random draws."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation

from volsr.transforms import (
    RandSliceThickness,
    RandSliceThicknessd,
    SliceThickness,
    SliceThicknessd,
    slice_profile_matrix,
)

RAMP_GRADIENT = np.array([0.05, -0.11, 0.07])  # value per mm along world x, y, z


def make_affine(spacing, kind: str = "oblique") -> np.ndarray:
    sx, sy, sz = spacing
    if kind == "oblique":
        m = Rotation.from_euler("xyz", [15.0, 30.0, -60.0], degrees=True).as_matrix() @ np.diag(spacing)
    elif kind == "lia":
        m = np.array([[-sx, 0, 0], [0, 0, sz], [0, -sy, 0]], dtype=np.float64)
    elif kind == "sheared":
        m = np.diag([sx, sy, sz])
        m[1, 2] = sz * np.tan(np.deg2rad(12.0))
    else:
        raise KeyError(kind)
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = [-20.0, 13.5, 6.25]
    return a


def image(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(data)[None], affine=torch.tensor(affine, dtype=torch.float64))


def grid_world(affine: np.ndarray, index_axes) -> np.ndarray:
    """World positions (X, Y, Z, 3) of the (possibly fractional) indices listed per axis."""
    ijk = np.stack(np.meshgrid(*index_axes, indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ramp(points: np.ndarray) -> np.ndarray:
    return points @ RAMP_GRADIENT + 2.0


def volume_shape(axis: int, n: int) -> tuple[int, int, int]:
    shape = [4, 3, 5]
    shape[axis] = n
    return tuple(shape)


def spacing_with(axis: int, d: float) -> np.ndarray:
    spacing = np.array([1.1, 0.9, 1.3])
    spacing[axis] = d
    return spacing


# (axis, n, d mm, thickness mm, spacing mm or None): factors as thickness / d in input voxels
RAMP_CASES = {
    "integer x4": (1, 20, 0.8, 3.2, None),
    "non-integer x2.5": (1, 20, 0.8, 2.0, None),
    "non-integer x2.5 axis 0": (0, 10, 1.2, 3.0, None),
    "count rounded (6.96 -> 7)": (2, 20, 0.8, 2.3, None),
    "gap (1.5 thick, 2.5 apart)": (1, 20, 0.8, 1.2, 2.0),
    "overlap (3.5 thick, 2.5 apart)": (1, 20, 0.8, 2.8, 2.0),
    "integer x4 spacing, thickness 2": (2, 20, 0.8, 1.6, 3.2),
    "integer x3, thickness 4.2": (0, 18, 1.0, 4.2, 3.0),
}


def expected_slices(n: int, d: float, thickness: float, spacing: float | None):
    """Slice count, input index of each slice centre and the slices whose slab lies in the volume."""
    spacing = thickness if spacing is None else spacing
    m = round(n * d / spacing)
    centre = (np.arange(m) + 0.5) * n / m - 0.5
    half = thickness / d / 2
    whole = (centre - half >= -0.5 - 1e-9) & (centre + half <= n - 0.5 + 1e-9)
    return m, centre, whole


@pytest.mark.parametrize("profile", ["boxcar", (1.0, 3.0, 1.0)])
@pytest.mark.parametrize("case", list(RAMP_CASES), ids=list(RAMP_CASES))
def test_ramp_keeps_its_value_at_slice_centres(case, profile):
    axis, n, d, thickness, spacing = RAMP_CASES[case]
    shape = volume_shape(axis, n)
    a = make_affine(spacing_with(axis, d))
    hr = ramp(grid_world(a, [np.arange(k, dtype=np.float64) for k in shape]))
    out = SliceThickness(axis, thickness, spacing, profile)(image(hr, a))

    m, centre, whole = expected_slices(n, d, thickness, spacing)
    out_shape = list(shape)
    out_shape[axis] = m
    assert tuple(out.shape[1:]) == tuple(out_shape)
    # world position of every output centre, from the input grid and the slice-centre formula
    index_axes = [np.arange(k, dtype=np.float64) for k in shape]
    index_axes[axis] = centre
    truth_pos = grid_world(a, index_axes)
    assert np.allclose(grid_world(out.affine.numpy(), [np.arange(k) for k in out_shape]), truth_pos)

    assert whole.sum() >= m - 2
    got = np.moveaxis(out.as_tensor()[0].numpy(), axis, 0)[whole]
    want = np.moveaxis(ramp(truth_pos), axis, 0)[whole]
    assert np.allclose(got, want, atol=2e-5)


@pytest.mark.parametrize(("n", "thickness"), [(40, 4.0), (40, 2.5), (41, 3.2)])
def test_gaussian_profile_keeps_a_ramp_away_from_the_edges(n, thickness):
    shape = (3, n, 2)
    a = make_affine((1.1, 1.0, 1.3))
    hr = ramp(grid_world(a, [np.arange(k, dtype=np.float64) for k in shape]))
    out = SliceThickness(1, thickness, profile="gaussian")(image(hr, a))
    m = round(n / thickness)
    centre = (np.arange(m) + 0.5) * n / m - 0.5
    far = (centre - 3 * thickness >= -0.5) & (centre + 3 * thickness <= n - 0.5)  # +-7 sigma inside
    assert far.sum() >= 3
    truth = ramp(grid_world(a, [np.arange(3.0), centre, np.arange(2.0)]))
    got = out.as_tensor()[0].numpy()
    assert np.allclose(got[:, far], truth[:, far], atol=2e-5)


@pytest.mark.parametrize("profile", ["boxcar", "gaussian", (1.0, 2.0, 1.0)])
@pytest.mark.parametrize(
    ("thickness", "spacing"), [(2.0, None), (2.5, None), (3.5, 2.5), (1.5, 2.5), (7.0, 3.0)]
)
def test_constant_stays_constant_up_to_the_edges(profile, thickness, spacing):
    a = make_affine((1.0, 1.0, 1.0))
    out = SliceThickness(2, thickness, spacing, profile)(image(np.full((3, 2, 13), 7.25), a))
    assert torch.allclose(out.as_tensor(), torch.full_like(out.as_tensor(), 7.25))


# --- the matrix ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["boxcar", "gaussian", (0.5, 1.0, 2.0)])
@pytest.mark.parametrize(
    ("n_in", "n_out", "thickness"), [(12, 3, 4.0), (10, 4, 2.5), (20, 8, 3.5), (9, 18, 0.5)]
)
def test_profile_matrix_rows_sum_to_one(profile, n_in, n_out, thickness):
    w = slice_profile_matrix(n_in, n_out, thickness, profile)
    assert w.shape == (n_out, n_in)
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w >= 0).all()


@pytest.mark.parametrize("s", [2, 3, 4])
def test_boxcar_of_integer_factor_is_the_mean_of_s_voxels(s):
    w = slice_profile_matrix(4 * s, 4, float(s), "boxcar")
    for j, row in enumerate(w):
        nonzero = np.flatnonzero(row)
        assert nonzero.tolist() == list(range(s * j, s * j + s))
        assert np.allclose(row[nonzero], 1.0 / s, rtol=0, atol=1e-15)


def test_boxcar_row_for_non_integer_factor():
    # slab of slice 0 (step 2.5) covers [-0.5, 2.0]: voxels 0, 1 whole, half of voxel 2 whose centroid
    # 1.75 splits that half 3:1 between voxels 2 and 1 -> (1, 1 + 0.125, 0.375) / 2.5
    w = slice_profile_matrix(10, 4, 2.5, "boxcar")
    assert np.allclose(w[0, :3], [0.4, 0.45, 0.15])
    assert np.allclose(w[0, 3:], 0.0)
    assert np.allclose(w[1], w[2][::-1])  # mirror symmetry of the grid


@pytest.mark.parametrize("kernel", [[1.0], [2.0], [1.0, 1.0], [3.0, 3.0, 3.0]])
@pytest.mark.parametrize(
    ("n_in", "n_out", "thickness"), [(12, 3, 4.0), (10, 4, 2.5), (20, 8, 1.5), (20, 8, 3.5)]
)
def test_flat_kernel_equals_boxcar(kernel, n_in, n_out, thickness):
    box = slice_profile_matrix(n_in, n_out, thickness, "boxcar")
    assert np.allclose(slice_profile_matrix(n_in, n_out, thickness, kernel), box, atol=1e-14)


def test_peaked_kernel_is_not_a_boxcar():
    # (a slab touching only two voxels has its weights fixed by the centroid, so use a wide one)
    box = slice_profile_matrix(12, 3, 4.0, "boxcar")
    peaked = slice_profile_matrix(12, 3, 4.0, [1.0, 4.0, 1.0])
    assert np.allclose(peaked.sum(axis=1), 1.0)
    assert np.allclose(peaked @ np.arange(12.0), box @ np.arange(12.0))  # same centres
    assert peaked[1, 5] > box[1, 5] > peaked[1, 4]  # but more weight in the middle


def test_custom_kernel_in_transform_equals_boxcar():
    a = make_affine((1.0, 0.9, 1.2))
    data = np.random.default_rng(3).random((3, 4, 15))
    box = SliceThickness(2, 3.0, profile="boxcar")(image(data, a))
    flat = SliceThickness(2, 3.0, profile=[1])(image(data, a))
    assert torch.allclose(box.as_tensor(), flat.as_tensor())
    assert flat.meta["degradation"][-1]["profile"] == [1.0]


# --- grid and metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["oblique", "lia", "sheared"])
@pytest.mark.parametrize(
    ("axis", "d", "thickness", "spacing"), [(2, 0.8, 2.3, None), (0, 1.2, 3.0, 4.0), (1, 0.9, 2.7, 2.1)]
)
def test_output_grid_keeps_fov_and_other_axes(kind, axis, d, thickness, spacing):
    shape = (9, 10, 20)
    a = make_affine(spacing_with(axis, d), kind)
    out = SliceThickness(axis, thickness, spacing)(image(np.zeros(shape), a))
    req = thickness if spacing is None else spacing
    n_in = shape[axis]
    n_out = round(n_in * d / req)
    out_shape = list(shape)
    out_shape[axis] = n_out
    assert tuple(out.shape[1:]) == tuple(out_shape)
    assert np.array_equal(np.asarray(out.meta["spatial_shape"]), out_shape)
    b = out.affine.numpy()
    col_len = np.linalg.norm(a[:3, axis])  # equals d except under shear
    assert np.linalg.norm(b[:3, axis]) == pytest.approx(col_len * n_in / n_out)
    if kind != "sheared":
        assert np.linalg.norm(b[:3, axis]) == pytest.approx(d * n_in / n_out)
    assert np.allclose(b[:3, axis] / np.linalg.norm(b[:3, axis]), a[:3, axis] / col_len)
    others = [k for k in range(3) if k != axis]
    assert np.allclose(b[:3, others], a[:3, others])
    for corner in itertools.product((0, 1), repeat=3):
        e_in = np.array([(-0.5, k - 0.5)[c] for k, c in zip(shape, corner, strict=True)])
        e_out = np.array([(-0.5, k - 0.5)[c] for k, c in zip(out_shape, corner, strict=True)])
        assert np.allclose(b[:3, :3] @ e_out + b[:3, 3], a[:3, :3] @ e_in + a[:3, 3])


def test_degradation_record_and_history():
    a = make_affine((1.0, 1.0, 1.0))
    img = image(np.zeros((8, 8, 8)), a)
    img.meta["filename_or_obj"] = "hr.nii.gz"
    once = SliceThickness(2, 2.0, spacing=4.0, profile="gaussian")(img)
    assert once.meta["degradation"] == [
        {"name": "slice_thickness", "axis": 2, "thickness_mm": 2.0, "spacing_mm": 4.0, "profile": "gaussian"}
    ]
    assert once.meta["filename_or_obj"] == "hr.nii.gz"
    twice = SliceThickness(0, 4.0)(once)
    assert [r["axis"] for r in twice.meta["degradation"]] == [2, 0]
    assert twice.meta["degradation"][1]["spacing_mm"] == 4.0  # spacing defaults to the thickness
    assert "degradation" not in img.meta  # the input keeps its metadata
    assert len(once.meta["degradation"]) == 1
    assert tuple(twice.shape) == (1, 2, 8, 2)


# --- random and dictionary variants -----------------------------------------------------------------


def small_image(seed: int = 0) -> MetaTensor:
    a = make_affine((0.7, 1.0, 1.4))
    return image(np.random.default_rng(seed).random((10, 8, 6)), a)


RAND_ARGS = {"axes": (0, 2), "factor": (1.5, 4.0), "profiles": ("boxcar", "gaussian"), "gap": (0.8, 1.6)}


def test_rand_is_reproducible_under_a_seed():
    img = small_image()
    t1 = RandSliceThickness(**RAND_ARGS).set_random_state(seed=42)
    t2 = RandSliceThickness(**RAND_ARGS).set_random_state(seed=42)
    outs1 = [t1(img) for _ in range(3)]
    outs2 = [t2(img) for _ in range(3)]
    for o1, o2 in zip(outs1, outs2, strict=True):
        assert o1.shape == o2.shape
        assert torch.equal(o1.as_tensor(), o2.as_tensor())
        assert np.allclose(o1.affine.numpy(), o2.affine.numpy())
        assert o1.meta["degradation"] == o2.meta["degradation"]
    # successive draws differ (otherwise the seed test above would be vacuous)
    records = [o.meta["degradation"][0] for o in outs1]
    assert len({(r["axis"], r["thickness_mm"]) for r in records}) == 3


def test_rand_draws_stay_in_their_ranges():
    img = small_image()
    spacing = np.array([0.7, 1.0, 1.4])
    t = RandSliceThickness(**RAND_ARGS).set_random_state(seed=0)
    seen_axes, seen_profiles = set(), set()
    for _ in range(24):
        rec = t(img).meta["degradation"][0]
        d = spacing[rec["axis"]]
        assert rec["axis"] in RAND_ARGS["axes"]
        assert 1.5 <= rec["thickness_mm"] / d <= 4.0
        assert 0.8 <= rec["spacing_mm"] / rec["thickness_mm"] <= 1.6
        assert rec["profile"] in RAND_ARGS["profiles"]
        seen_axes.add(rec["axis"])
        seen_profiles.add(rec["profile"])
    assert seen_axes == {0, 2}
    assert seen_profiles == {"boxcar", "gaussian"}


def test_rand_matches_deterministic_transform_with_drawn_parameters():
    img = small_image()
    out = RandSliceThickness(**RAND_ARGS).set_random_state(seed=5)(img)
    rec = out.meta["degradation"][0]
    ref = SliceThickness(rec["axis"], rec["thickness_mm"], rec["spacing_mm"], rec["profile"])(img)
    assert torch.equal(out.as_tensor(), ref.as_tensor())
    assert np.allclose(out.affine.numpy(), ref.affine.numpy())


def test_rand_with_prob_zero_is_identity():
    img = small_image()
    t = RandSliceThickness(prob=0.0, **RAND_ARGS).set_random_state(seed=1)
    for _ in range(3):
        out = t(img)
        assert out is img
    assert "degradation" not in img.meta
    td = RandSliceThicknessd(keys=["image"], prob=0.0).set_random_state(seed=1)
    assert td({"image": img})["image"] is img


def test_dict_variant_equals_array_variant():
    img, other = small_image(0), small_image(1)
    out = SliceThicknessd(keys=["image", "label"], axis=2, thickness=3.5, spacing=2.8, profile="gaussian")(
        {"image": img, "label": other, "untouched": 3}
    )
    t = SliceThickness(2, 3.5, 2.8, "gaussian")
    for key, src in (("image", img), ("label", other)):
        ref = t(src)
        assert torch.equal(out[key].as_tensor(), ref.as_tensor())
        assert np.allclose(out[key].affine.numpy(), ref.affine.numpy())
    assert out["untouched"] == 3


def test_rand_dict_variant_equals_rand_array_variant_and_shares_one_draw():
    img, other = small_image(0), small_image(1)
    ref = RandSliceThickness(**RAND_ARGS).set_random_state(seed=11)
    td = RandSliceThicknessd(keys=["a", "b", "c"], **RAND_ARGS).set_random_state(seed=11)
    for _ in range(3):
        out = td({"a": img, "b": img, "c": other})
        expected = ref(img)
        assert torch.equal(out["a"].as_tensor(), expected.as_tensor())
        assert out["a"].meta["degradation"] == expected.meta["degradation"]
        # one draw for all keys: identical inputs give identical outputs, others share the record
        assert torch.equal(out["a"].as_tensor(), out["b"].as_tensor())
        assert out["c"].meta["degradation"] == out["a"].meta["degradation"]
        assert out["c"].shape == out["a"].shape


# --- argument checking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name", "bad"),
    [
        (lambda: SliceThickness(axis=0, thickness=-1.0), "thickness", "-1.0"),
        (lambda: SliceThickness(axis=0, thickness=0.0), "thickness", "0.0"),
        (lambda: SliceThickness(axis=3, thickness=2.0), "axis", "3"),
        (lambda: SliceThickness(axis=-1, thickness=2.0), "axis", "-1"),
        (lambda: SliceThickness(axis=0, thickness=2.0, spacing=-2.0), "spacing", "-2.0"),
        (lambda: SliceThickness(axis=0, thickness=2.0, profile="lorentzian"), "profile", "lorentzian"),
        (lambda: SliceThickness(axis=0, thickness=2.0, profile=[1.0, -1.0]), "profile", "-1.0"),
        (lambda: SliceThicknessd(keys="image", axis=3, thickness=2.0), "axis", "3"),
        (lambda: RandSliceThickness(factor=0.5), "factor", "0.5"),
        (lambda: RandSliceThickness(factor=(3.0, 2.0)), "factor", "(3.0, 2.0)"),
        (lambda: RandSliceThickness(prob=1.5), "prob", "1.5"),
        (lambda: RandSliceThickness(prob=-0.1), "prob", "-0.1"),
        (lambda: RandSliceThickness(axes=(0, 3)), "axes", "3"),
        (lambda: RandSliceThickness(profiles=("boxcar", "sinc")), "profiles", "sinc"),
        (lambda: RandSliceThickness(gap=0.0), "gap", "0.0"),
        (lambda: RandSliceThicknessd(keys="image", prob=1.5), "prob", "1.5"),
        (lambda: RandSliceThicknessd(keys="image", factor=0.9), "factor", "0.9"),
        (lambda: slice_profile_matrix(10, 4, -2.5), "thickness", "-2.5"),
        (lambda: slice_profile_matrix(10, 4, 2.5, "triangle"), "profile", "triangle"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make, name, bad):
    with pytest.raises(ValueError, match=rf"^{name}\b") as err:
        make()
    assert bad in str(err.value)
