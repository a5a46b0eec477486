"""benchmarks/uncertainty.py's scoring of a cached case, on a synthetic one (nothing is timed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import import_benchmark

uncertainty = import_benchmark("uncertainty")


def _case(offsets: list[float], shape=(20, 20, 24), protocol=None) -> dict:
    """A reference in units 0..500 (range 500) and views that are the reference plus constant offsets,
    normalised on an input scale of lo = 0, hi = 1000."""
    ref = np.zeros(shape, np.float32)
    ref[4:16, 4:16, 4:20] = 400.0
    views = np.stack([(ref + o) / 1000.0 for o in offsets]).astype(np.float32)
    return {
        "views": views,
        "reference": ref,
        "lo": np.float64(0.0),
        "hi": np.float64(1000.0),
        "ref_lo": np.float64(0.0),
        "ref_hi": np.float64(500.0),
        "protocol": json.dumps(protocol or {"kind": "thickness", "axis": 2, "factor": 4.0}),
        "scan": "val/synthetic",
    }


def test_scored_error_and_map_are_on_the_references_scale_inside_its_foreground():
    offsets = [10.0, 30.0] * 8  # views differ by +-10 units around a mean 20 units too high
    d = uncertainty.scored(_case(offsets), list(range(16)), consistency=False)
    # the foreground, 12 x 12 x 16 voxels, stops where the 4-voxel rim at the crop's faces starts
    assert d["error"].size == 12 * 12 * 16
    np.testing.assert_allclose(d["error"], 20.0 / 500.0, rtol=1e-4)
    np.testing.assert_allclose(d["map"], 10.0 / 500.0, rtol=1e-3)  # the spread, in reference units
    assert d["family"] == "slices" and d["factor"] == 4.0
    assert d["noise"] == pytest.approx(0.0, abs=1e-6)


def test_views_that_agree_leave_a_zero_map():
    d = uncertainty.scored(_case([5.0] * 16), list(range(16)), consistency=False)
    assert float(np.abs(d["map"]).max()) < 1e-6
    np.testing.assert_allclose(d["error"], 5.0 / 500.0, rtol=1e-4)


@pytest.mark.parametrize(
    "protocol, family, factor",
    [
        ({"kind": "thickness", "axis": 2, "factor": 4.0}, "slices", 4.0),
        ({"kind": "kspace", "fraction": 0.5}, "kspace", 2.0),
    ],
)
def test_the_error_is_the_projected_outputs_as_inference_writes_it(protocol, family, factor):
    # an output off by a constant everywhere re-degrades to the input plus that constant: the
    # projection of either model takes it all away, the raw output keeps it
    case = _case([20.0] * 16, protocol=protocol)
    raw = uncertainty.scored(case, list(range(16)), consistency=False)
    np.testing.assert_allclose(raw["error"], 20.0 / 500.0, rtol=1e-4)
    d = uncertainty.scored(case, list(range(16)))
    assert d["family"] == family and d["factor"] == pytest.approx(factor)
    assert float(d["error"].max()) < 1e-4 * 400.0 / 500.0
