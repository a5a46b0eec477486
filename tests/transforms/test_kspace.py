"""K-space truncation: analytic checks in the Fourier domain and in world coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from volsr.geometry.grids import fov_corners, scaled_grid, voxel_spacing
from volsr.geometry.meta import affine_of
from volsr.transforms import (
    KSpaceTruncation,
    KSpaceTruncationd,
    RandKSpaceTruncation,
    RandKSpaceTruncationd,
    fourier_resample,
)


def oblique(spacing=(1.2, 0.9, 2.5), origin=(-20.0, 31.5, 4.0)) -> np.ndarray:
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([-1.0, 1.0, 1.0]) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def image(array: np.ndarray, affine: np.ndarray | None = None, dtype=torch.float64) -> MetaTensor:
    aff = np.eye(4) if affine is None else affine
    return MetaTensor(torch.as_tensor(array, dtype=dtype)[None], affine=torch.as_tensor(aff))


def random_image(shape=(16, 15, 14), seed=0, affine=None) -> MetaTensor:
    return image(np.random.default_rng(seed).normal(size=shape) + 3.0, affine)


def labels(n: int) -> np.ndarray:
    return np.rint(np.fft.fftfreq(n) * n)


def acquired_lines(n: int, n_keep: int) -> np.ndarray:
    """1 on the lines a scanner acquires, k = -(n_keep // 2) ... (n_keep - 1) // 2, 0 elsewhere."""
    k = labels(n)
    return ((k >= -(n_keep // 2)) & (k <= (n_keep - 1) // 2)).astype(float)


def separable(*vectors: np.ndarray) -> np.ndarray:
    return vectors[0][:, None, None] * vectors[1][None, :, None] * vectors[2][None, None, :]


def seen_weight(shape, lines) -> np.ndarray:
    """The weights the real image sees: (B(k) + B(-k)) / 2 of the acquired box B; along one axis 1/2
    on both edges +-n_keep/2 of an even band, at a corner of two even bands 1/2 on (-,-) and (+,+)."""
    box = separable(*[acquired_lines(n, m) for n, m in zip(shape, lines, strict=True)])
    mirrored = np.roll(np.flip(box), 1, axis=(0, 1, 2))  # bin of -k: index (-i) mod n
    return 0.5 * (box + mirrored)


@pytest.mark.parametrize("window", ["none", "hamming", "tukey"])
@pytest.mark.parametrize("fraction", [(0.5, 0.4, 0.6), (0.3, 0.7, 0.45)])
def test_no_energy_outside_kept_band(window, fraction):
    x = random_image()
    t = KSpaceTruncation(fraction, window=window)
    y = t(x)[0].numpy()
    spec = np.abs(np.fft.fftn(y)) ** 2
    inside = separable(
        *[(np.abs(labels(n)) <= m / 2).astype(float) for n, m in zip(y.shape, t.lines(y.shape), strict=True)]
    )
    assert spec[inside == 0].sum() < 1e-20 * spec.sum()
    assert spec[inside == 1].sum() > 0.1 * spec.sum()


@pytest.mark.parametrize("fraction", [(7 / 16, 0.6, 0.5), (0.5, 0.4, 0.3)])  # odd lines, then even lines
def test_parseval_energy_equals_kept_band(fraction):
    x = random_image()
    t = KSpaceTruncation(fraction)
    y = t(x)[0].numpy()
    spec = np.fft.fftn(x[0].numpy())
    w = seen_weight(y.shape, t.lines(y.shape))
    assert set(w.ravel()) <= {0.0, 0.5, 1.0}
    expected = (np.abs(w * spec) ** 2).sum() / y.size  # Parseval: sum |y|^2 = sum |Y|^2 / N
    assert np.sum(y**2) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n", [32, 33])
def test_sinusoid_below_cutoff_survives_above_vanishes(n):
    i = np.arange(n)[:, None, None] * np.ones((1, 6, 5))
    fraction = 0.5  # 16 or 17 lines: cut-off ~ 8 cycles per field of view
    low = np.cos(2 * np.pi * 5 * i / n + 0.4)
    high = np.sin(2 * np.pi * 11 * i / n + 0.1)
    t = KSpaceTruncation(fraction, axes=0)
    out_low = t(image(low, dtype=torch.float32))[0].numpy()
    out_high = t(image(high, dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(out_low, low, atol=1e-5)
    assert np.abs(out_high).max() < 1e-5


def test_sinusoid_on_reduced_grid_in_world_coordinates():
    n, affine = 30, oblique()
    idx = np.arange(n, dtype=float)
    wave = lambda u: 5.0 + np.cos(2 * np.pi * 4 * u / n + 0.7)  # noqa: E731  (u: input index, axis 0)
    x = image(wave(idx)[:, None, None] * np.ones((n, 4, 3)), affine)
    for fraction in (0.5, 0.4, 11 / 30):  # 15, 12 and 11 lines
        y = KSpaceTruncation(fraction, axes=(0,), reduce_matrix=True)(x)
        m = y.shape[1]
        # world position of each output centre, mapped back to input index coordinates
        centres = np.stack([np.arange(m), np.zeros(m), np.zeros(m), np.ones(m)])
        u = (np.linalg.inv(affine) @ affine_of(y) @ centres)[0]
        np.testing.assert_allclose(y[0, :, 0, 0].numpy(), wave(u), atol=1e-10)


def test_fraction_one_is_identity():
    x = random_image((12, 11, 10), affine=oblique())
    for t in (KSpaceTruncation(1.0), KSpaceTruncation([1.0, 1.0], axes=(0, 2), reduce_matrix=True)):
        y = t(x)
        np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-12)
        np.testing.assert_allclose(affine_of(y), affine_of(x))


def test_on_original_grid_affine_and_record():
    x = random_image(affine=oblique())
    y = KSpaceTruncation((0.5, 0.5), axes=(1, 2), window="hamming")(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(affine_of(y), affine_of(x))
    rec = y.meta["degradation"][-1]
    assert rec["name"] == "kspace_truncation" and rec["lines"] == [8, 7] and rec["window"] == "hamming"


@pytest.mark.parametrize("fraction", [0.5, (0.4, 0.35, 0.6)])
def test_reduced_matrix_keeps_fov_and_mean(fraction):
    affine = oblique()
    x = image(np.random.default_rng(1).uniform(0, 100, size=(20, 17, 14)), affine)
    t = KSpaceTruncation(fraction, window="tukey", reduce_matrix=True)
    y = t(x)
    lines = t.lines(x.shape[1:])
    assert tuple(y.shape[1:]) == lines
    np.testing.assert_allclose(
        fov_corners(affine_of(y), y.shape[1:]), fov_corners(affine, x.shape[1:]), atol=1e-9
    )
    expected_spacing = voxel_spacing(affine) * np.array(x.shape[1:]) / np.array(lines)
    np.testing.assert_allclose(voxel_spacing(affine_of(y)), expected_spacing)
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=1e-12)


def test_window_reduces_ringing():
    n = 64
    step = (np.arange(n) >= n // 2).astype(float)[:, None, None] * np.ones((1, 3, 3))
    x = image(step)
    overshoot = {}
    for window in ("none", "hamming", "tukey"):
        y = KSpaceTruncation(0.3, axes=0, window=window)(x)[0, :, 1, 1].numpy()
        overshoot[window] = y.max() - 1.0
    assert overshoot["none"] > 0.05  # Gibbs: ~9 % of the jump
    assert overshoot["hamming"] < 0.01 < overshoot["none"]
    assert overshoot["tukey"] < overshoot["none"]


def test_partial_fourier_is_non_negative_magnitude():
    x = random_image(affine=oblique())
    full = KSpaceTruncation(0.5, axes=(0, 1))(x)
    pf = KSpaceTruncation(0.5, axes=(0, 1), partial_fourier=0.6)(x)
    assert pf.min() >= 0 and pf.shape == x.shape
    assert not torch.allclose(pf, full)
    np.testing.assert_allclose(
        KSpaceTruncation(0.5, axes=(0, 1), partial_fourier=1.0)(x).numpy(), full.numpy()
    )
    reduced = KSpaceTruncation(0.5, axes=(0, 1), partial_fourier=0.6, reduce_matrix=True)(x)
    assert tuple(reduced.shape[1:]) == (8, 8, 14) and reduced.min() >= 0


def test_fourier_resample_up_and_down():
    n, affine = 12, oblique()
    wave = lambda u: 2.0 + np.sin(2 * np.pi * 3 * u / n + 0.2)  # noqa: E731
    x = image(wave(np.arange(n, dtype=float))[:, None, None] * np.ones((n, 5, 4)), affine)
    up = fourier_resample(x, (48, 5, 4))
    expected_affine, _ = scaled_grid(affine, x.shape[1:], (4.0, 1.0, 1.0))
    np.testing.assert_allclose(affine_of(up), expected_affine)
    u = (np.arange(48) + 0.5) * n / 48 - 0.5
    np.testing.assert_allclose(up[0, :, 2, 2].numpy(), wave(u), atol=1e-10)
    down = fourier_resample(random_image(affine=affine), (8, 15, 7))
    ref = KSpaceTruncation((0.5, 0.5), axes=(0, 2), reduce_matrix=True)(random_image(affine=affine))
    np.testing.assert_allclose(down.numpy(), ref.numpy(), atol=1e-12)
    np.testing.assert_allclose(affine_of(down), affine_of(ref))


def test_rand_seed_reproduces_and_draws():
    x = random_image((12, 12, 12))
    a = RandKSpaceTruncation(fraction=(0.3, 0.8), windows=("none", "hamming"), reduce_matrix=True)
    b = RandKSpaceTruncation(fraction=(0.3, 0.8), windows=("none", "hamming"), reduce_matrix=True)
    a.set_random_state(7)
    b.set_random_state(7)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb) and a.params == b.params
    assert len(set(a.params["fraction"])) == 1 and 0.3 <= a.params["fraction"][0] <= 0.8
    per = RandKSpaceTruncation(fraction=(0.3, 0.8), per_axis=True).set_random_state(0)
    per.randomize()
    assert len(set(per.params["fraction"])) == 3
    seen = set()
    for seed in range(5):
        r = RandKSpaceTruncation().set_random_state(seed)
        r.randomize()
        seen.add(r.params["fraction"][0])
    assert len(seen) == 5
    assert RandKSpaceTruncation(prob=0.0)(x) is x


def test_dict_equals_array():
    x = random_image(affine=oblique())
    t = KSpaceTruncation((0.5, 0.7), axes=(0, 2), window="hamming", reduce_matrix=True)
    d = KSpaceTruncationd(["a", "b"], (0.5, 0.7), axes=(0, 2), window="hamming", reduce_matrix=True)(
        {"a": x, "b": x}
    )
    assert torch.equal(d["a"], t(x)) and torch.equal(d["b"], t(x))
    rd = RandKSpaceTruncationd(["a", "b"], fraction=(0.3, 0.9), reduce_matrix=True).set_random_state(3)
    ra = RandKSpaceTruncation(fraction=(0.3, 0.9), reduce_matrix=True).set_random_state(3)
    out = rd({"a": x, "b": x})
    ref = ra(x)
    assert torch.equal(out["a"], ref) and torch.equal(out["b"], ref)
    np.testing.assert_allclose(affine_of(out["a"]), affine_of(ref))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": (0.5, 0.5)}, "fraction"),  # two values for three axes
        ({"fraction": 0.5, "axes": (0, 3)}, "axes"),
        ({"fraction": 0.5, "window": "hann"}, "window"),
        ({"fraction": 0.5, "partial_fourier": 0.4}, "partial_fourier"),
        ({"fraction": 0.5, "reduce_matrix": "yes"}, "reduce_matrix"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KSpaceTruncation(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"prob": 1.2}, "prob"),
        ({"fraction": (0.0, 0.5)}, "fraction"),
        ({"fraction": (0.5, 1.2)}, "fraction"),
        ({"windows": ["none", "kaiser"]}, "windows"),
        ({"partial_fourier": (0.3, 1.0)}, "partial_fourier"),
        ({"per_axis": 1}, "per_axis"),
    ],
)
def test_rand_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RandKSpaceTruncation(**kwargs)


def test_fourier_resample_bad_shape():
    with pytest.raises(ValueError, match="new_shape"):
        fourier_resample(random_image(), (8, 8))
