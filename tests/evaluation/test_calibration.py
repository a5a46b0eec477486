"""Coverage and the reliability table of an error bar against a reference."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from volsr.evaluation.calibration import (
    coverage_of,
    error_bar_scores,
    reliability_table,
    save_reliability_diagram,
)
from volsr.inference.uncertainty import Z_95


def test_coverage_counts_errors_inside_the_bar():
    sigma = np.array([1.0, 1.0, 1.0, 1.0])
    error = np.array([0.0, -1.9, 1.97, 5.0])  # inside, inside (|e|), outside, outside
    assert coverage_of(sigma, error) == 0.5
    with pytest.raises(ValueError):
        coverage_of(np.ones(3), np.ones(2))


def test_reliability_of_a_calibrated_gaussian_bar_lies_on_the_diagonal():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.01, 0.1, 500_000)
    error = rng.standard_normal(sigma.size) * sigma
    table = reliability_table(sigma, error)
    assert len(table) == 10 and sum(r["voxels"] for r in table) == sigma.size
    for row in table:
        assert row["observed"] == pytest.approx(row["expected"], rel=0.02)
        assert row["coverage"] == pytest.approx(0.95, abs=0.01)
    assert [r["expected"] for r in table] == sorted(r["expected"] for r in table)


def test_error_bar_scores_are_in_the_scans_units(tmp_path):
    # a reference in scanner units 0..1000 and an output off by 30 units inside the object
    ref = torch.zeros(1, 20, 20, 20)
    ref[:, 4:16, 4:16, 4:16] = torch.linspace(400, 1000, 12)[None, None, None, :]
    pred = ref.clone()
    pred[:, 4:16, 4:16, 4:16] += 30.0
    affine = torch.eye(4, dtype=torch.float64)
    ref, pred = MetaTensor(ref, affine=affine), MetaTensor(pred, affine=affine)
    wide = torch.full_like(ref.as_tensor(), 30.0 / Z_95 * 1.01)  # the bar just holds the error
    narrow = torch.full_like(ref.as_tensor(), 30.0 / Z_95 * 0.99)
    assert error_bar_scores(wide, pred, ref)["coverage"] == 1.0
    assert error_bar_scores(narrow, pred, ref)["coverage"] == 0.0
    table = error_bar_scores(wide, pred, ref)["reliability"]
    scale = float(np.percentile(ref.numpy(), 99.5) - np.percentile(ref.numpy(), 0.5))
    assert table[0]["observed"] == pytest.approx(30.0 / scale, rel=1e-4)  # on the reference's scale
    assert table[0]["expected"] == pytest.approx(30.0 / Z_95 * 1.01 / scale, rel=1e-4)
    png = save_reliability_diagram(table, tmp_path / "reliability.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
