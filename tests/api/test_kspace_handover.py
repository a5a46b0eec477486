"""A bundle that names a k-space bundle hands it the scans acquired with a smaller k-space matrix, and
every record (sidecar, summary line, cohort key) names the bundle whose weights made the output."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_tiny_bundle, oblique_affine, smooth_volume, write_thick_scan
from typer.testing import CliRunner

from volsr.api import SuperResolver
from volsr.api.cohort.runner import run_key
from volsr.api.request import InferRequest
from volsr.cli import app
from volsr.data.io import load_image
from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import save_model
from volsr.transforms.kspace import fourier_resample


@pytest.fixture
def bundles(tmp_path):
    """``thick``: a cubic identity network that names ``kspace``, a zero-filled Fourier identity network."""
    kspace = make_tiny_bundle(tmp_path / "kspace")
    net = ResidualSR3D(features=4, num_blocks=1, input_interpolation="fourier")
    save_model(kspace / "models" / "model.pt", net, PercentileNormalizer(), step=7)
    thick = make_tiny_bundle(tmp_path / "thick")
    inference = thick / "configs" / "inference.json"
    inference.write_text(json.dumps(json.loads(inference.read_text()) | {"kspace_bundle": "../kspace"}))
    return thick, kspace


@pytest.fixture
def reduced(tmp_path):
    """A NIfTI scan that states nothing of its acquisition, to be up-sampled alike on every axis; odd
    sizes: no Nyquist line, which zero-filled Fourier splits over +-n/2 and a scanner acquires at -n/2."""
    path = tmp_path / "reduced.nii.gz"
    data = (100 * smooth_volume((9, 7, 5))).astype(np.float32)
    nib.save(nib.Nifti1Image(data, oblique_affine((2.0, 2.0, 2.0))), path)
    return path


def test_a_reduced_matrix_goes_to_the_kspace_bundle_and_its_sidecar_says_so(bundles, reduced, tmp_path):
    thick, kspace = bundles
    sr = SuperResolver.from_bundle(thick, device="cpu", amp=False)
    assert sr.kspace_resolver is not None and sr.kspace_resolver.kspace_resolver is None
    image = load_image(reduced)
    out = sr(image, scale=2)
    direct = SuperResolver.from_bundle(kspace, device="cpu", amp=False)(image, scale=2)
    assert torch.equal(out.as_tensor(), direct.as_tensor())
    # an untrained Fourier network: the zero-filled Fourier interpolation, with its acquired band kept
    fourier = fourier_resample(image, (18, 14, 10)).as_tensor()
    torch.testing.assert_close(out.as_tensor(), fourier, atol=1e-3 * float(fourier.abs().max()), rtol=0)
    dst = sr.predict_file(reduced, tmp_path / "o.nii.gz", scale=2, sidecar=True)
    record = json.loads(dst.with_name("o.json").read_text())
    assert record["GeneratedBy"]["Bundle"] == str(kspace.resolve())
    assert record["GeneratedBy"]["CheckpointStep"] == 7
    assert record["Consistency"]["model"] == "kspace"


def test_thick_slices_and_a_stated_model_stay_with_the_bundle_asked_for(bundles, reduced, tmp_path):
    thick, _ = bundles
    sr = SuperResolver.from_bundle(thick, device="cpu", amp=False)
    scan = load_image(write_thick_scan(tmp_path))
    assert sr.for_scan(scan) is sr  # one axis up-sampled: thick slices
    image = load_image(reduced)
    assert sr.for_scan(image, scale=2) is sr.kspace_resolver
    assert sr.with_options(consistency="slices").for_scan(image, scale=2).info["bundle"] == str(
        thick.resolve()
    )
    tta = sr.with_options(tta=True)
    assert tta.for_scan(image, scale=2).tta  # options reach the bundle handed the scan
    # outputs of either bundle change what a cohort run makes: both sets of weights are in its key
    before = run_key(sr, InferRequest(), thick / "models" / "model.pt")
    net = ResidualSR3D(features=4, num_blocks=1, input_interpolation="fourier")
    torch.nn.init.constant_(net.out.bias, 0.1)
    save_model(bundles[1] / "models" / "model.pt", net, PercentileNormalizer(), step=7)
    again = SuperResolver.from_bundle(thick, device="cpu", amp=False)
    assert run_key(again, InferRequest(), thick / "models" / "model.pt") != before


def test_the_summary_line_names_the_bundle_that_made_the_output(bundles, reduced, tmp_path):
    thick, kspace = bundles
    out = tmp_path / "out.nii.gz"
    args = ["infer", str(reduced), "-o", str(out), "--bundle", str(thick), "--scale", "2", "2", "2"]
    r = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    bundle_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("bundle:"))
    version = json.loads((kspace / "configs" / "metadata.json").read_text())["version"]
    handed = f"handed a reduced k-space matrix by the bundle asked for: {kspace.resolve()}"
    assert bundle_line.strip() == f"bundle: kspace {version} ({handed})"
