"""Smoke test of benchmarks/consistency.py on a tiny volume and network (its logic; nothing is timed)."""

from __future__ import annotations

import pytest
from conftest import import_benchmark

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D

consistency = import_benchmark("consistency")


def test_cases_parse_and_bad_models_are_refused():
    case = consistency.parse_case("thick:191,256,54:1,1,2.8:slices")
    assert case == {"name": "thick", "shape": (191, 256, 54), "scale": (1.0, 1.0, 2.8), "model": "slices"}
    assert [consistency.parse_case(c)["model"] for c in consistency.CASES] == ["slices", "kspace"]
    with pytest.raises(ValueError, match="slices or kspace"):
        consistency.parse_case("x:4,4,4:2,2,2:wavelets")


@pytest.mark.parametrize("text", consistency.QUICK_CASES)
def test_measure_reports_both_grids_and_the_ratio(text):
    case = consistency.parse_case(text)
    row = consistency.measure(case, ResidualSR3D(features=4, num_blocks=1), PercentileNormalizer(), "cpu", 1)
    assert row["input"] == list(case["shape"])
    assert row["output"] == [round(n * f) for n, f in zip(case["shape"], case["scale"], strict=True)]
    assert row["network_s"] > 0 and row["projection_s"] > 0
    assert row["ratio"] == pytest.approx(row["projection_s"] / row["network_s"], rel=0.05, abs=1e-4)
    table = consistency.markdown([row]).splitlines()
    assert table[2].startswith(f"| {case['name']} | {case['model']} | ")
