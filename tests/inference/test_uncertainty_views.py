"""The cheap map (4 views) and the calibrated map as super_resolve and SuperResolver make them."""

import json

import numpy as np
import pytest
import torch
from conftest import oblique_affine, smooth_volume
from monai.data import MetaTensor

from volsr.inference.sliding_window import _Predictor, super_resolve
from volsr.inference.uncertainty import CALIBRATION_FILE, CHEAP_VIEWS, SCHEMA, UncertaintyCalibration


class Shift(torch.nn.Module):
    """Output voxel i = input voxel i+1 along the first spatial axis (circular): not flip-symmetric."""

    def forward(self, x):
        return torch.roll(x, shifts=-1, dims=2)


def test_four_views_give_the_moments_of_their_own_answers():
    # mapped back, the shift runs along dim 3 in a swapped view, and the other way where that dim is flipped
    x = torch.rand(1, 1, 6, 6, 5)
    out = _Predictor(Shift(), torch.device("cpu"), torch.float32, spread=True, views=CHEAP_VIEWS)(x)
    answers = []
    for flips, swap in CHEAP_VIEWS:
        dim = 3 if swap else 2
        answers.append(torch.roll(x, shifts=1 if dim in flips else -1, dims=dim))
    answers = torch.stack(answers)
    torch.testing.assert_close(out[:, :1], answers.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 1:], answers.std(0, correction=0), atol=1e-6, rtol=0)


def _image():
    aff = oblique_affine((1.0, 1.0, 3.0))
    return MetaTensor(torch.as_tensor(smooth_volume((12, 10, 5)))[None] * 300.0, affine=torch.as_tensor(aff))


def test_calibration_turns_the_spread_into_the_error_bar_in_the_scans_units():
    image = _image()
    kwargs = dict(device="cpu", precision=torch.float32, uncertainty=True, roi=(12, 10, 15))
    out, raw = super_resolve(image, Shift(), **kwargs)
    calibration = UncertaintyCalibration.constant(3.0, 0.01, {"slices": 0.0, "kspace": 0.0}, 4)
    out2, bar = super_resolve(image, Shift(), calibration=calibration, **kwargs)
    torch.testing.assert_close(out2.as_tensor(), out.as_tensor())  # the output does not change
    data = image.as_tensor()
    lo, hi = np.percentile(data.numpy(), [0.5, 99.5])
    expected = 3.0 * raw.as_tensor() + 0.01 * float(hi - lo)
    torch.testing.assert_close(bar.as_tensor(), expected, rtol=1e-4, atol=1e-3)


def test_a_bundle_resolver_applies_its_stored_calibration(tmp_path):
    import shutil

    from volsr.api import SuperResolver
    from volsr.api.resolver import find_bundle

    root = tmp_path / "bundle"
    shutil.copytree(
        find_bundle("volsr_cnn3d"), root, ignore=shutil.ignore_patterns("checkpoint.pt", "*.jsonl")
    )
    image = _image()
    doubling = UncertaintyCalibration.constant(2.0, 0.0, {"slices": 0.0, "kspace": 0.0}, 4)
    record = {"schema": SCHEMA, "views": {"4": doubling.to_dict()}}
    (root / "models" / CALIBRATION_FILE).write_text(json.dumps(record))
    _, doubled = SuperResolver.from_bundle(root, device="cpu", uncertainty=True)(image, scale=(1, 1, 3))
    (root / "models" / CALIBRATION_FILE).unlink()
    _, raw = SuperResolver.from_bundle(root, device="cpu", uncertainty=True)(image, scale=(1, 1, 3))
    assert float(raw.max()) > 0
    torch.testing.assert_close(doubled.as_tensor(), 2.0 * raw.as_tensor(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bundle, maps", [("volsr_cnn3d", (4, 16)), ("volsr_gan3d", (4,))])
def test_the_shipped_bundles_calibrate_their_maps_for_both_families(bundle, maps):
    from volsr.api.resolver import find_bundle
    from volsr.inference.uncertainty import FAMILIES, load_calibration

    for views in (4, 16):
        cal = load_calibration(find_bundle(bundle), views)
        if views not in maps:  # the GAN's 16-view map is not calibrated: it stays the raw spread
            assert cal is None
            continue
        assert cal is not None and cal.views == views and set(cal.families) == set(FAMILIES)
        for family in FAMILIES:
            assert min(cal.families[family].slope) > 1.0  # errors outgrow the spread between views
            for factor in cal.fit["families"][family]["per_factor"]:
                assert factor["cases"] >= 2 and 0.5 < factor["coverage_scale"] < 2.0
        assert cal.families["slices"].factors[0] <= 2.0 and cal.families["slices"].factors[-1] >= 5.0


@pytest.mark.parametrize("tta", [False, True])
def test_provenance_states_how_many_views_made_the_map(tta):
    from volsr.api import SuperResolver

    sr = SuperResolver.from_bundle("volsr_cnn3d", device="cpu", uncertainty=True, tta=tta)
    options = sr.provenance("scan.nii.gz", _image(), _image())["GeneratedBy"]["Options"]
    assert options["views"] == (16 if tta else 4)  # the output is the mean of the same views
    assert options["uncertainty_calibrated"] is True  # the shipped bundle has both calibrations
    plain = SuperResolver(sr.network, sr.normalizer, device="cpu", uncertainty=True)  # no bundle
    assert (
        plain.provenance("scan.nii.gz", _image(), _image())["GeneratedBy"]["Options"][
            "uncertainty_calibrated"
        ]
        is False
    )
