"""Data consistency is on by default: the model is chosen per scan (header, else grid), recorded in the
output's meta and sidecar, and left out, with the reason said, where no projection applies."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_image, oblique_affine, smooth_volume

from volsr.api import SuperResolver
from volsr.data.io import load_image
from volsr.data.normalization import PercentileNormalizer
from volsr.evaluation.comparison import degrade
from volsr.inference.consistency import consistency_error
from volsr.inference.sliding_window import super_resolve
from volsr.networks import ResidualSR3D
from volsr.transforms.protocol import ThickSlices

PROTOCOL = ThickSlices(axis=2, factor=4.0)


@pytest.fixture
def network():
    """A tiny network that changes its spline input, so the projection has something to do."""
    torch.manual_seed(0)
    net = ResidualSR3D(features=4, num_blocks=1)
    torch.nn.init.normal_(net.out.weight, std=0.05)
    return net


@pytest.fixture
def thick():
    """24 x 20 x 8 voxels of 1 x 1 x 4 mm: boxcar thick slices of a 1 mm volume, nothing else stated."""
    return degrade(make_image(smooth_volume((24, 20, 32)) * 300.0, oblique_affine((1.0, 1.0, 1.0))), PROTOCOL)


def _resolver(network, **options) -> SuperResolver:
    return SuperResolver(network, PercentileNormalizer(), device="cpu", amp=False, **options)


def test_default_is_the_chosen_projection_and_re_degrades_to_the_input(network, thick):
    default = _resolver(network)(thick)
    assert default.shape[1:] == (24, 20, 32)
    assert torch.equal(default.as_tensor(), _resolver(network, consistency="slices")(thick).as_tensor())
    again = degrade(default, PROTOCOL)  # the acquisition that made the input, applied to the output
    assert float((again - thick).abs().max()) < 1e-5 * float(thick.abs().max())
    assert default.meta["consistency"]["model"] == "slices"
    assert default.meta["consistency"]["source"] == "geometry"
    assert "one axis up-sampled (x1, x1, x4)" in default.meta["consistency"]["reason"]


def test_off_is_the_network_output_as_super_resolve_gives_it(network, thick):
    off = _resolver(network, consistency=False)(thick)
    plain = super_resolve(thick, network, PercentileNormalizer(), device="cpu", precision=torch.float32)
    assert torch.equal(off.as_tensor(), plain.as_tensor())
    assert consistency_error(off, thick) > 1e-3  # what the projection then removes
    assert off.meta["consistency"] == {
        "model": None,
        "reason": "turned off (consistency=False / --no-consistency)",
        "source": "request",
    }


def test_default_with_uncertainty_projects_the_mean_and_keeps_the_map(network, thick):
    out, error_bar = _resolver(network, uncertainty=True)(thick)
    assert consistency_error(out, thick) < 1e-5
    off, off_bar = _resolver(network, uncertainty=True, consistency=False)(thick)
    torch.testing.assert_close(
        error_bar.as_tensor(), off_bar.as_tensor(), rtol=0, atol=0
    )  # the views' spread
    assert not torch.allclose(out.as_tensor(), off.as_tensor(), atol=1e-3)


def _scan(tmp_path, spacing, shape, sidecar=None):
    path = tmp_path / "in" / "scan.nii.gz"
    path.parent.mkdir(exist_ok=True)
    volume = smooth_volume(shape).astype(np.float32) * 300.0
    nib.save(nib.Nifti1Image(volume, oblique_affine(spacing)), path)
    if sidecar is not None:
        (tmp_path / "in" / "scan.json").write_text(json.dumps(sidecar))
    return path


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


@pytest.mark.parametrize(
    ("spacing", "shape", "sidecar", "model", "source"),
    [
        ((1.0, 1.0, 3.0), (16, 12, 5), None, "slices", "geometry"),  # one coarse axis
        ((2.0, 2.0, 2.0), (12, 10, 8), None, "kspace", "geometry"),  # every axis x2 alike
        ((2.0, 2.0, 2.0), (12, 10, 8), {"MRAcquisitionType": "2D"}, "slices", "header"),
        ((1.0, 1.0, 3.0), (16, 12, 5), {"MRAcquisitionType": "3D"}, "kspace", "header"),
    ],
)
def test_sidecar_records_the_model_and_why(network, tmp_path, spacing, shape, sidecar, model, source):
    src = _scan(tmp_path, spacing, shape, sidecar)
    dst = _resolver(network).predict_file(
        src, tmp_path / "out" / "scan_sr.nii.gz", spacing=1.0, dtype="float32"
    )
    record = _sidecar(dst)["Consistency"]
    assert (record["model"], record["source"]) == (model, source)
    assert _sidecar(dst)["GeneratedBy"]["Options"]["consistency"] == "auto"
    # the output is what that model's projection gives, asked for by name
    named = _resolver(network, consistency=model).predict_file(
        src, tmp_path / "named" / "scan_sr.nii.gz", spacing=1.0, dtype="float32"
    )
    assert np.array_equal(nib.load(dst).get_fdata(), nib.load(named).get_fdata())


def test_a_grid_coarser_than_the_input_on_one_axis_falls_back_to_no_projection(network, tmp_path):
    src = _scan(tmp_path, (1.0, 1.0, 3.0), (16, 12, 5))
    spacing = (2.0, 1.0, 1.0)  # axis 0 down-sampled x0.5, axis 2 up-sampled x3
    dst = _resolver(network).predict_file(src, tmp_path / "a" / "scan_sr.nii.gz", spacing=spacing)
    record = _sidecar(dst)["Consistency"]
    assert (record["model"], record["source"]) == (None, "fallback")
    assert "down-sampled on axis 0 x0.5" in record["reason"]
    off = _resolver(network, consistency=False).predict_file(
        src, tmp_path / "b" / "scan_sr.nii.gz", spacing=spacing
    )
    assert nib.load(dst).get_fdata().shape == (8, 12, 15)
    assert np.array_equal(nib.load(dst).get_fdata(), nib.load(off).get_fdata())
    # asked for by name, the projection still runs there (its least-squares fit on the coarser axis)
    named = _resolver(network, consistency="slices")(load_image(src), spacing=spacing)
    assert named.meta["consistency"]["model"] == "slices"
