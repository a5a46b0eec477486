"""The uncertainty map's calibration to an error bar, and the cheap map's views."""

import json

import numpy as np
import pytest
import torch

from volsr.inference.uncertainty import (
    ALL_VIEWS,
    CALIBRATION_FILE,
    CHEAP_VIEWS,
    COVERAGE_TARGET,
    Z_95,
    CalibrationSample,
    UncertaintyCalibration,
    acquisition_family,
    fit_calibration,
    load_calibration,
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
    cal = fit_calibration([CalibrationSample(spread, error)], views=16)
    assert cal.slope == pytest.approx(3.0, rel=0.03)
    assert cal.floor == pytest.approx(0.01, rel=0.05)
    fresh_spread, fresh_error = _heteroscedastic(rng, 200_000, 3.0, 0.01, lambda r, n: r.standard_normal(n))
    covered = np.mean(fresh_error <= Z_95 * cal.sigma(fresh_spread))
    assert covered == pytest.approx(COVERAGE_TARGET, abs=0.004)


def test_heavy_tailed_errors_are_covered_at_the_target_not_at_the_gaussian_share():
    # Laplace errors with standard deviation s: |e| <= 1.96 s for 1 - exp(-1.96 sqrt 2) = 93.7 %
    rng = np.random.default_rng(1)

    def laplace(r, n):
        return r.laplace(scale=1 / np.sqrt(2), size=n)

    spread, error = _heteroscedastic(rng, 400_000, 2.0, 0.02, laplace)
    cal = fit_calibration([CalibrationSample(spread, error)], views=4)
    assert cal.fit["coverage_scale"] > 1.0  # widened beyond the RMS line
    fresh_spread, fresh_error = _heteroscedastic(rng, 200_000, 2.0, 0.02, laplace)
    assert np.mean(fresh_error <= Z_95 * cal.sigma(fresh_spread)) == pytest.approx(COVERAGE_TARGET, abs=0.004)
    unscaled = cal.sigma(fresh_spread) / cal.fit["coverage_scale"]
    assert np.mean(fresh_error <= Z_95 * unscaled) == pytest.approx(1 - np.exp(-Z_95 * np.sqrt(2)), abs=0.005)


def test_errors_that_ignore_the_spread_give_a_flat_error_bar():
    rng = np.random.default_rng(2)
    spread = rng.uniform(0, 0.05, 200_000)
    error = np.abs(rng.standard_normal(spread.size) * 0.03)
    cal = fit_calibration([CalibrationSample(spread, error)], views=16)
    assert cal.slope * 0.05 < 0.05 * cal.floor  # across the spread's range the slope adds under 5 %
    assert cal.floor == pytest.approx(0.03, rel=0.05)


def test_calibration_refuses_mismatched_or_all_zero_inputs():
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.ones(100), np.ones(99))], views=16)
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.linspace(0, 1, 100), np.zeros(100))], views=16)
    with pytest.raises(ValueError):
        fit_calibration([CalibrationSample(np.ones(100), np.ones(100), family="spiral")], views=16)


def test_calibration_round_trips_through_the_bundle_file(tmp_path):
    cal = UncertaintyCalibration(2.5, 0.004, {"slices": 0.5, "matrix": 0.2}, 4, {"voxels": 10})
    (tmp_path / "models").mkdir()
    record = {"views": {"4": cal.to_dict()}}
    (tmp_path / "models" / CALIBRATION_FILE).write_text(json.dumps(record))
    assert load_calibration(tmp_path, 4) == cal
    assert load_calibration(tmp_path, 16) is None  # no entry for that map: stays raw
    assert load_calibration(tmp_path / "elsewhere", 4) is None
    np.testing.assert_allclose(cal.sigma(np.array([0.0, 0.01])), [0.004, 0.029])
    np.testing.assert_allclose(cal.sigma(np.array([0.0, 0.01]), noise=0.01, family="matrix"), [0.006, 0.031])


def test_noise_weights_separate_scans_by_their_noise_and_family():
    # two families of scans whose error floor is their noise, at different weights, and a spread term
    rng = np.random.default_rng(3)
    samples, truth = [], {"slices": 0.8, "matrix": 0.3}
    for family in ("slices", "matrix"):
        for noise in (0.01, 0.03, 0.05):
            spread = rng.uniform(0.0, 0.03, 100_000)
            sd = 2.0 * spread + truth[family] * noise
            samples.append(
                CalibrationSample(spread, np.abs(rng.standard_normal(spread.size) * sd), noise, family)
            )
    cal = fit_calibration(samples, views=16)
    assert cal.slope == pytest.approx(2.0, rel=0.05)
    assert cal.floor == pytest.approx(0.0, abs=5e-4)
    for family, weight in truth.items():
        assert cal.noise_weight[family] == pytest.approx(weight, rel=0.05)


def test_scan_noise_finds_white_noise_under_a_smooth_image_and_scales_to_the_full_resolution():
    rng = np.random.default_rng(4)
    x, y, z = np.meshgrid(*[np.linspace(0, 1, n) for n in (80, 80, 12)], indexing="ij")
    smooth = 0.5 + 0.3 * np.sin(3 * x) * np.cos(2 * y) + 0.1 * z  # curved: a plane fit would not do
    noisy = torch.from_numpy(smooth + 0.02 * rng.standard_normal(smooth.shape)).float()[None]
    assert scan_noise(noisy, (1.0, 1.0, 4.0)) == pytest.approx(0.02 * 2.0, rel=0.08)  # sqrt(4) x
    assert scan_noise(noisy, (2.0, 2.0, 2.0)) == pytest.approx(0.02 * np.sqrt(8.0), rel=0.08)
    assert scan_noise(torch.zeros(1, 20, 20, 5), (1.0, 1.0, 4.0)) == 0.0  # no foreground: nothing to measure


def test_family_is_slices_for_one_coarse_axis_and_matrix_for_several():
    assert acquisition_family((1.0, 1.0, 4.0)) == "slices"
    assert acquisition_family((2.0, 2.0, 2.0)) == "matrix"
    assert acquisition_family((1.0, 1.0, 1.0)) == "slices"


def test_error_bar_is_in_the_scans_units_with_the_noise_floor_of_its_family():
    cal = UncertaintyCalibration(3.0, 0.001, {"slices": 0.5, "matrix": 0.25}, 4)
    rng = np.random.default_rng(5)
    x_lr = torch.from_numpy(0.6 + 0.01 * rng.standard_normal((1, 64, 64, 10))).float()
    spread_map = torch.full((1, 64, 64, 40), 20.0)  # already in the scan's units (range 1000)
    bar = cal.error_bar(spread_map, x_lr, (1.0, 1.0, 4.0), intensity_range=1000.0)
    noise = 0.01 * 2.0  # the input's noise, at the full resolution (sqrt(4) x)
    expected = 3.0 * 20.0 + (0.001 + 0.5 * noise) * 1000.0
    torch.testing.assert_close(bar, torch.full_like(bar, expected), rtol=0.02, atol=0)
    assert float(spread_map[0, 0, 0, 0]) == 20.0  # the spread map is left as it was


def test_the_map_uses_4_views_unless_the_output_averages_all_16():
    from volsr.inference.uncertainty import map_views

    assert map_views(tta=False) == CHEAP_VIEWS and map_views(tta=True) == ALL_VIEWS
