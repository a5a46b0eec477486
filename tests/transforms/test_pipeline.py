"""The degradation pipeline built from a dict, a YAML file or a JSON file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from monai.data import MetaTensor

from volsr.geometry.grids import fov_corners
from volsr.geometry.meta import affine_of
from volsr.transforms import build_degradation

CONFIG = {
    "slice_thickness": {
        "axis": [0, 1, 2],
        "factor": [2, 5],
        "profile": ["boxcar", "gaussian"],
        "gap": [1, 1],
        "prob": 1.0,
    },
    "kspace": {"fraction": [0.4, 0.7], "axes": [0, 1, 2], "window": ["none", "hamming"], "prob": 0.5},
    "noise": {"snr": [20, 60], "kind": ["rician"], "prob": 0.5},
}


def hr_image() -> MetaTensor:
    rng = np.random.default_rng(0)
    vol = rng.uniform(50, 100, size=(16, 16, 16)).astype(np.float32)
    affine = np.array([[0.0, 0.0, 1.2, -30.0], [-0.9, 0.0, 0.0, 12.0], [0.0, 1.1, 0.0, 4.5], [0, 0, 0, 1]])
    return MetaTensor(torch.as_tensor(vol)[None], affine=torch.as_tensor(affine))


def run(pipeline, hr=None):
    return pipeline({"hr": hr_image() if hr is None else hr})


def test_same_seed_same_lr():
    a, b = run(build_degradation(CONFIG, seed=3)), run(build_degradation(CONFIG, seed=3))
    assert torch.equal(a["lr"], b["lr"])
    assert a["lr"].meta["degradation"] == b["lr"].meta["degradation"]
    np.testing.assert_allclose(affine_of(a["lr"]), affine_of(b["lr"]))


def test_different_seeds_different_params():
    records = [str(run(build_degradation(CONFIG, seed=s))["lr"].meta["degradation"]) for s in range(4)]
    assert len(set(records)) == 4


def test_pipeline_state_advances_between_calls():
    pipeline = build_degradation(CONFIG, seed=0)
    first, second = run(pipeline)["lr"].meta["degradation"], run(pipeline)["lr"].meta["degradation"]
    assert first != second


def test_records_follow_stage_order():
    cfg = {
        "noise": {"snr": 30, "prob": 1.0},
        "kspace": {"fraction": 0.5, "prob": 1.0},
        "slice_thickness": {"axis": 2, "factor": 2, "prob": 1.0},
    }
    names = [r["name"] for r in run(build_degradation(cfg, seed=0))["lr"].meta["degradation"]]
    assert names == ["slice_thickness", "kspace_truncation", "noise"]


def test_yaml_and_json_files_match_dict(tmp_path):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "d.json").write_text(json.dumps(CONFIG))
    ref = run(build_degradation(CONFIG, seed=5))["lr"]
    for path in (tmp_path / "d.yaml", str(tmp_path / "d.json")):
        out = run(build_degradation(path, seed=5))["lr"]
        assert torch.equal(out, ref) and out.meta["degradation"] == ref.meta["degradation"]


def test_hr_untouched():
    hr = hr_image()
    values, affine = hr.clone(), affine_of(hr).copy()
    out = run(build_degradation(CONFIG, seed=1), hr)
    assert out["hr"] is hr and torch.equal(hr, values)
    np.testing.assert_array_equal(affine_of(hr), affine)
    assert "degradation" not in hr.meta


def test_lr_grid_keeps_fov_when_factor_divides():
    cfg = {
        "slice_thickness": {"axis": [1], "factor": 4},
        "kspace": {"fraction": 0.5, "axes": [0, 2], "reduce_matrix": True, "prob": 1.0},
    }
    out = run(build_degradation(cfg, seed=0))
    hr, lr = out["hr"], out["lr"]
    assert tuple(lr.shape[1:]) == (8, 4, 8)
    np.testing.assert_allclose(
        fov_corners(affine_of(lr), lr.shape[1:]), fov_corners(affine_of(hr), hr.shape[1:]), atol=1e-9
    )


def test_empty_config_copies_hr():
    out = run(build_degradation({}, seed=0))
    assert torch.equal(out["lr"], out["hr"]) and out["lr"] is not out["hr"]


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"blur": {}}, ["'blur'", "slice_thickness", "kspace", "noise"]),
        ({"kspace": {"fractions": [0.4, 0.6]}}, ["'fractions'", "fraction", "window"]),
        ({"noise": [20, 60]}, ["noise", "mapping"]),
        ({"noise": {"snr": [60, 20]}}, ["snr"]),
    ],
)
def test_bad_config_raises_naming_key(cfg, words):
    with pytest.raises(ValueError) as err:
        build_degradation(cfg)
    for word in words:
        assert word in str(err.value)


def test_bad_file_suffix(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("{}")
    with pytest.raises(ValueError, match="yaml"):
        build_degradation(path)


def test_a_mixture_degrades_each_sample_by_one_entry_in_proportion_to_its_weight():
    mixture = [
        {"weight": 3, "slice_thickness": {"axis": [2], "factor": 4}},
        {"weight": 1, "kspace": {"fraction": 0.5, "axes": [0, 1, 2], "reduce_matrix": True}},
    ]
    pipeline = build_degradation(mixture, seed=0)
    shapes = [tuple(run(pipeline)["lr"].shape[1:]) for _ in range(200)]
    assert set(shapes) == {(16, 16, 4), (8, 8, 8)}  # one entry per sample, never both
    assert 0.65 < shapes.count((16, 16, 4)) / len(shapes) < 0.85  # weight 3 of 4
    again = build_degradation(mixture, seed=0)
    assert [tuple(run(again)["lr"].shape[1:]) for _ in range(200)] == shapes  # seeded


@pytest.mark.parametrize(
    ("mixture", "words"),
    [([], "at least one entry"), ([{"weight": 0}], "weight must be a positive"), ([3], "must be a mapping")],
)
def test_bad_mixture_raises(mixture, words):
    with pytest.raises(ValueError, match=words):
        build_degradation(mixture)
