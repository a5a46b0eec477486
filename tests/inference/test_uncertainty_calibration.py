"""The uncertainty map's calibration to an error bar, and the cheap map's views."""

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from volsr.errors import VolsrInputError
from volsr.inference.uncertainty import (
    ALL_VIEWS,
    CALIBRATION_FILE,
    CHEAP_VIEWS,
    COVERAGE_TARGET,
    SCHEMA,
    Z_95,
    CalibrationSample,
    FamilyTable,
    UncertaintyCalibration,
    calibration_factor,
    calibration_family,
    fit_calibration,
    load_calibration,
    read_calibration_file,
    scan_noise,
)


def test_all_views_are_the_16_distinct_symmetries():
    assert len(ALL_VIEWS) == 16 and len(set(ALL_VIEWS)) == 16
    assert ALL_VIEWS[0] == ((), False)  # the plain view first: its moments anchor the spread


def test_cheap_views_flip_every_axis_and_swap_in_half_of_them():
    assert len(CHEAP_VIEWS) == 4 and set(CHEAP_VIEWS) <= set(ALL_VIEWS)
    for dim in (2, 3, 4):
        assert sum(dim in flips for flips, _ in CHEAP_VIEWS) == 2
    assert sum(swap for _, swap in CHEAP_VIEWS) == 2
    codes = [np.array([d in f for d in (2, 3, 4)] + [s], dtype=int) for f, s in CHEAP_VIEWS]
    assert min(int(np.abs(a - b).sum()) for i, a in enumerate(codes) for b in codes[i + 1 :]) >= 2


def _heteroscedastic(rng, n, slope, floor, noise):
    spread = rng.uniform(0.0, 0.05, n)
    return spread, np.abs(noise(rng, n) * (slope * spread + floor))


def test_gaussian_errors_give_back_their_line_and_95_percent_coverage():
    rng = np.random.default_rng(0)
    spread, error = _heteroscedastic(rng, 400_000, 3.0, 0.01, lambda r, n: r.standard_normal(n))
    cal = fit_calibration([CalibrationSample(spread, error, "slices", 4.0)], views=16)
    slope, floor, _ = cal.coefficients("slices", 4.0)
    assert slope == pytest.approx(3.0, rel=0.03)
    assert floor == pytest.approx(0.01, rel=0.05)
    fresh_spread, fresh_error = _heteroscedastic(rng, 200_000, 3.0, 0.01, lambda r, n: r.standard_normal(n))
    covered = np.mean(fresh_error <= Z_95 * cal.sigma(fresh_spread, "slices", 4.0))
    assert covered == pytest.approx(COVERAGE_TARGET, abs=0.004)


def test_heavy_tailed_errors_are_covered_at_the_target_not_at_the_gaussian_share():
    # Laplace errors with standard deviation s: |e| <= 1.96 s for 1 - exp(-1.96 sqrt 2) = 93.7 %
    rng = np.random.default_rng(1)

    def laplace(r, n):
        return r.laplace(scale=1 / np.sqrt(2), size=n)

    spread, error = _heteroscedastic(rng, 400_000, 2.0, 0.02, laplace)
    cal = fit_calibration([CalibrationSample(spread, error, "slices", 3.0)], views=4)
    scale = cal.fit["families"]["slices"]["per_factor"][0]["coverage_scale"]
    assert scale > 1.0  # widened beyond the RMS line
    fresh_spread, fresh_error = _heteroscedastic(rng, 200_000, 2.0, 0.02, laplace)
    sigma = cal.sigma(fresh_spread, "slices", 3.0)
    assert np.mean(fresh_error <= Z_95 * sigma) == pytest.approx(COVERAGE_TARGET, abs=0.004)
    unscaled = sigma / scale
    assert np.mean(fresh_error <= Z_95 * unscaled) == pytest.approx(1 - np.exp(-Z_95 * np.sqrt(2)), abs=0.005)


def test_errors_that_ignore_the_spread_give_a_flat_error_bar():
    rng = np.random.default_rng(2)
    spread = rng.uniform(0, 0.05, 200_000)
    error = np.abs(rng.standard_normal(spread.size) * 0.03)
    cal = fit_calibration([CalibrationSample(spread, error, "kspace", 2.0)], views=16)
    slope, floor, _ = cal.coefficients("kspace", 2.0)
    assert slope * 0.05 < 0.05 * floor  # across the spread's range the slope adds under 5 %
    assert floor == pytest.approx(0.03, rel=0.05)
    assert set(cal.families) == {"kspace"}  # no table for a family it was not fitted on
    with pytest.raises(ValueError, match="no table for 'slices'"):
        cal.sigma(spread, "slices", 2.0)


def test_calibration_refuses_mismatched_or_all_zero_inputs():
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.ones(100), np.ones(99), "slices", 2.0)], views=16)
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.linspace(0, 1, 100), np.zeros(100), "slices", 2.0)], views=16)
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.ones(100), np.ones(100), "spiral", 2.0)], views=16)
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.ones(100), np.ones(100), "matrix", 2.0)], views=16)
    with pytest.raises(ValueError):
        fit_calibration([], views=16)


def _table_calibration(views=4):
    return UncertaintyCalibration(
        views,
        {
            "slices": FamilyTable((2.0, 4.0), (2.0, 4.0), (0.002, 0.004), (0.5, 0.7)),
            "kspace": FamilyTable((2.0,), (3.0,), (0.001,), (0.25,)),
        },
        {"voxels": 10},
    )


def test_a_family_table_is_read_linearly_in_log_factor_and_held_at_its_ends():
    table = _table_calibration().families["slices"]
    assert table.at(2.0) == pytest.approx((2.0, 0.002, 0.5))
    assert table.at(4.0) == pytest.approx((4.0, 0.004, 0.7))
    assert table.at(2.0 * np.sqrt(2.0)) == pytest.approx((3.0, 0.003, 0.6))  # halfway in log-factor
    assert table.at(3.0)[0] == pytest.approx(2.0 + 2.0 * np.log(1.5) / np.log(2.0))
    assert table.at(1.2) == pytest.approx(table.at(2.0))  # not extrapolated below what was fitted
    assert table.at(8.0) == pytest.approx(table.at(4.0))
    with pytest.raises(ValueError):
        FamilyTable((4.0, 2.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0))  # factors out of order
    with pytest.raises(ValueError):
        FamilyTable((2.0, 4.0), (1.0,), (0.0, 0.0), (0.0, 0.0))  # one slope short


def test_sigma_takes_the_coefficients_of_its_family_and_factor():
    cal = _table_calibration()
    spread = np.array([0.0, 0.01])
    np.testing.assert_allclose(cal.sigma(spread, "slices", 2.0), [0.002, 0.022])
    np.testing.assert_allclose(cal.sigma(spread, "slices", 4.0, noise=0.01), [0.011, 0.051])
    np.testing.assert_allclose(cal.sigma(spread, "kspace", 3.0, noise=0.02), [0.006, 0.036])


def test_calibration_round_trips_through_the_bundle_file(tmp_path):
    cal = _table_calibration()
    (tmp_path / "models").mkdir()
    record = {"schema": SCHEMA, "views": {"4": cal.to_dict()}}
    (tmp_path / "models" / CALIBRATION_FILE).write_text(json.dumps(record))
    loaded = load_calibration(tmp_path, 4)
    assert loaded == cal and loaded.fit == {"voxels": 10}
    assert loaded.families["slices"].factors == (2.0, 4.0)
    assert load_calibration(tmp_path, 16) is None  # no entry for that map: stays raw
    assert load_calibration(tmp_path / "elsewhere", 4) is None


#: a schema-1 entry, as volsr_cnn3d shipped it: one line for all factors, families "slices" and "matrix"
_SCHEMA1 = {
    "form": "sigma = slope x spread + floor + noise_weight[family] x noise",
    "views": {
        "4": {"slope": 4.8, "floor": 0.001, "noise_weight": {"slices": 0.68, "matrix": 0.25}, "views": 4},
    },
}


def test_a_schema_1_file_still_loads_as_one_line_for_every_factor(tmp_path):
    path = tmp_path / CALIBRATION_FILE
    path.write_text(json.dumps(_SCHEMA1))
    cal = read_calibration_file(path)[4]
    assert set(cal.families) == {"slices", "kspace"}  # "matrix" is the k-space family
    for factor in (2.0, 3.5, 5.0):
        assert cal.coefficients("slices", factor) == pytest.approx((4.8, 0.001, 0.68))
        assert cal.coefficients("kspace", factor) == pytest.approx((4.8, 0.001, 0.25))
    np.testing.assert_allclose(
        cal.sigma(np.array([0.01]), "kspace", 2.0, noise=0.02), [0.048 + 0.001 + 0.005]
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        (json.dumps({"schema": 3, "views": {}}), "schema 3; this volsr reads schemas 1 and 2"),
        (json.dumps({"schema": 2, "views": {"4": {"views": 4}}}), "missing 'families'"),
        (json.dumps({"views": {"4": {"slope": 1.0}}}), "schema 1 missing"),
        ("{not json", "is not a readable uncertainty calibration"),
    ],
)
def test_a_calibration_file_volsr_cannot_read_is_refused_naming_it(tmp_path, text, problem):
    path = tmp_path / CALIBRATION_FILE
    path.write_text(text)
    with pytest.raises(VolsrInputError, match=problem) as caught:
        read_calibration_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_per_factor_fit_gives_each_factor_its_own_line_and_the_families_their_own_tables():
    rng = np.random.default_rng(6)
    truth = {("slices", 2.0): 2.0, ("slices", 4.0): 5.0, ("kspace", 2.0): 3.0}
    samples = []
    for (family, factor), slope in truth.items():
        for _ in range(2):
            spread = rng.uniform(0.0, 0.05, 100_000)
            error = np.abs(rng.standard_normal(spread.size) * (slope * spread + 0.005))
            samples.append(CalibrationSample(spread, error, family, factor))
    cal = fit_calibration(samples, views=4)
    assert cal.families["slices"].factors == (2.0, 4.0) and cal.families["kspace"].factors == (2.0,)
    for (family, factor), slope in truth.items():
        assert cal.coefficients(family, factor)[0] == pytest.approx(slope, rel=0.05)
        assert cal.coefficients(family, factor)[1] == pytest.approx(0.005, rel=0.1)
    pooled = fit_calibration(samples, views=4, per_factor=False)
    assert pooled.families["slices"].factors == (1.0,)  # one line for every factor
    assert 2.0 < pooled.coefficients("slices", 2.0)[0] < 5.0


def test_noise_weights_separate_scans_by_their_noise_and_family():
    # two families of scans whose error floor is their noise, at different weights, and a spread term
    rng = np.random.default_rng(3)
    samples, truth = [], {"slices": 0.8, "kspace": 0.3}
    for family in ("slices", "kspace"):
        for noise in (0.01, 0.03, 0.05):
            spread = rng.uniform(0.0, 0.03, 100_000)
            sd = 2.0 * spread + truth[family] * noise
            error = np.abs(rng.standard_normal(spread.size) * sd)
            samples.append(CalibrationSample(spread, error, family, 3.0, noise))
    cal = fit_calibration(samples, views=16)
    for family, weight in truth.items():
        slope, floor, noise_weight = cal.coefficients(family, 3.0)
        assert slope == pytest.approx(2.0, rel=0.05)
        assert floor == pytest.approx(0.0, abs=5e-4)
        assert noise_weight == pytest.approx(weight, rel=0.05)


def test_scan_noise_finds_white_noise_under_a_smooth_image_and_scales_to_the_full_resolution():
    rng = np.random.default_rng(4)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, n) for n in (80, 80, 12)], indexing="ij")
    smooth = 0.5 + 0.3 * np.sin(3 * x) * np.cos(2 * y) + 0.1 * z  # curved: a plane fit would not do
    noisy = torch.from_numpy(smooth + 0.02 * rng.standard_normal(smooth.shape)).float()[None]
    assert scan_noise(noisy, (1.0, 1.0, 4.0)) == pytest.approx(0.02 * 2.0, rel=0.08)  # sqrt(4) x
    assert scan_noise(noisy, (2.0, 2.0, 2.0)) == pytest.approx(0.02 * np.sqrt(8.0), rel=0.08)
    assert scan_noise(torch.zeros(1, 20, 20, 5), (1.0, 1.0, 4.0)) == 0.0  # no foreground: nothing to measure


def test_family_is_the_consistency_model_and_the_factor_the_largest():
    assert calibration_family((1.0, 1.0, 4.0)) == "slices"
    assert calibration_family((2.0, 2.0, 2.0)) == "kspace"  # all axes alike: a smaller matrix
    assert calibration_family((1.0, 2.0, 4.0)) == "slices"
    stated = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"acquisition_type": "3D"})
    assert calibration_family((1.0, 1.0, 3.0), stated) == "kspace"  # the header decides first
    assert calibration_factor((1.0, 1.0, 4.0)) == 4.0 and calibration_factor((2.0, 2.5, 2.0)) == 2.5


def test_error_bar_is_in_the_scans_units_with_the_noise_floor_of_its_family():
    cal = _table_calibration()
    rng = np.random.default_rng(5)
    x_lr = torch.from_numpy(0.6 + 0.01 * rng.standard_normal((1, 64, 64, 10))).float()
    spread_map = torch.full((1, 64, 64, 40), 20.0)  # already in the scan's units (range 1000)
    bar = cal.error_bar(spread_map, x_lr, (1.0, 1.0, 4.0), intensity_range=1000.0)
    noise = 0.01 * 2.0  # the input's noise, at the full resolution (sqrt(4) x)
    expected = 4.0 * 20.0 + (0.004 + 0.7 * noise) * 1000.0  # thick slices at x4
    torch.testing.assert_close(bar, torch.full_like(bar, expected), rtol=0.02, atol=0)
    assert float(spread_map[0, 0, 0, 0]) == 20.0  # the spread map is left as it was
    as_kspace = cal.error_bar(spread_map, x_lr, (1.0, 1.0, 4.0), intensity_range=1000.0, family="kspace")
    expected = 3.0 * 20.0 + (0.001 + 0.25 * noise) * 1000.0  # the projection's model, as inference says
    torch.testing.assert_close(as_kspace, torch.full_like(bar, expected), rtol=0.02, atol=0)


def test_the_map_uses_4_views_unless_the_output_averages_all_16():
    from volsr.inference.uncertainty import map_views

    assert map_views(tta=False) == CHEAP_VIEWS and map_views(tta=True) == ALL_VIEWS
