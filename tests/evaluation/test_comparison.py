"""evaluate() scores a resolver's uncertainty map by how well it ranks the resolver's actual error."""

import math

import numpy as np
import torch
from conftest import make_image, smooth_volume

from volsr.evaluation.comparison import evaluate, restore_baseline
from volsr.evaluation.report import write_report
from volsr.transforms.protocol import KSpace, ThickSlices


def test_a_map_that_is_the_actual_error_scores_one_and_is_drawn(tmp_path):
    hr = make_image((1000 * smooth_volume((20, 18, 24))).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))

    def oracle(lr, scale):  # cubic B-spline, with its own |error| as the map
        out = restore_baseline(lr, hr.shape[1:], "cubic")
        return out, (out - hr).abs() + 0.0

    def plain(lr, scale):
        return restore_baseline(lr, hr.shape[1:], "linear")

    report = evaluate(hr, ThickSlices(axis=2, factor=4.0), {"oracle": oracle, "plain": plain})
    assert math.isclose(report["methods"]["oracle"]["uncertainty_spearman"], 1.0, abs_tol=1e-6)
    assert "uncertainty_spearman" not in report["methods"]["plain"]
    torch.testing.assert_close(report["methods"]["oracle"]["psnr"], report["methods"]["cubic"]["psnr"])
    files = write_report(report, tmp_path, "scan")
    # a map that is the |error| itself holds every error within 1.96 x map
    assert "oracle: Spearman 1.000, coverage 100.0%" in files["markdown"].read_text()
    assert files["reliability oracle"].read_bytes()[:4] == b"\x89PNG"
    assert "uncertainty" not in files["json"].read_text().split('"methods"')[0]  # no tensors in the JSON


def _band_limited(shape: tuple[int, ...], keep: int) -> np.ndarray:
    """A positive periodic volume whose spectrum lies within ``keep`` lines of DC on every axis."""
    rng = np.random.default_rng(3)
    grids = np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij")
    vol = np.full(shape, 10.0)
    for _ in range(6):
        k = rng.integers(-keep, keep + 1, size=3)
        phase = 2 * np.pi * sum(ki * g for ki, g in zip(k, grids, strict=True)) + rng.uniform(0, 6)
        vol += rng.uniform(0.5, 1.0) * np.cos(phase)
    return vol.astype(np.float32)


def test_a_reduced_matrix_is_scored_against_zero_filled_fourier_by_default():
    # band-limited within the kept band: zero-filled Fourier restores it exactly, the spline does not
    hr = make_image(_band_limited((24, 20, 16), keep=3), np.eye(4))
    report = evaluate(hr, KSpace(0.5))
    assert set(report["methods"]) == {"cubic", "fourier"}
    assert report["methods"]["fourier"]["psnr"] > 100.0
    assert report["methods"]["cubic"]["psnr"] < 60.0


def test_thick_slices_keep_the_spline_baselines_and_a_list_replaces_the_default():
    hr = make_image((1000 * smooth_volume((20, 18, 24))).astype(np.float32), np.eye(4))
    assert set(evaluate(hr, ThickSlices(axis=2, factor=2.0))["methods"]) == {"linear", "cubic"}
    assert set(evaluate(hr, KSpace(0.5), baselines=["nearest"])["methods"]) == {"nearest"}


def test_a_reduced_matrix_states_a_3d_acquisition_so_one_axis_gets_the_kspace_model():
    from volsr.evaluation.comparison import degrade
    from volsr.inference.consistency_choice import decide_consistency

    hr = make_image((1000 * smooth_volume((20, 18, 24))).astype(np.float32), np.eye(4))
    lr = degrade(hr, KSpace(0.5, axes=(2,)))
    choice = decide_consistency(lr, (1.0, 1.0, 2.0))  # one coarse axis: by its grid alone, thick slices
    assert (choice.model, choice.source) == ("kspace", "header")
    assert choice.reason == "the evaluation protocol states a 3D acquisition"
    assert "acquisition_type" not in degrade(hr, ThickSlices(axis=2, factor=2.0)).meta
