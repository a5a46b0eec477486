"""Slice thickness from the header (DICOM, dcm2niix sidecar): read, kept with its grid, and modelled
by data consistency and per-scan adaptation; slices with gaps are flagged."""

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import REPO, make_image, oblique_affine, smooth_volume
from scans import write_dicom_series, write_nifti
from typer.testing import CliRunner

from volsr.api import SuperResolver
from volsr.cli import app
from volsr.data.acquisition import SliceAcquisition, slice_acquisition, thickness_ratios
from volsr.data.io import load_image
from volsr.data.normalization import PercentileNormalizer
from volsr.errors import VolsrInputWarning
from volsr.evaluation.comparison import degrade, evaluate
from volsr.geometry.interpolation import resample
from volsr.inference.consistency import consistency_error, project_consistent
from volsr.inference.sliding_window import super_resolve
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import save_checkpoint
from volsr.training.adaptation import adaptation_sampler
from volsr.transforms import SliceThickness
from volsr.transforms.protocol import ThickSlices


def _gapped_scan(tmp_path, sidecar: object = {"SliceThickness": 5, "SpacingBetweenSlices": 6.5}):
    path = write_nifti(
        tmp_path / "gapped.nii.gz", smooth_volume((16, 12, 6)), oblique_affine((1.0, 1.0, 6.5))
    )
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
        (tmp_path / "gapped.json").write_text(text)
    return path


def test_a_dcm2niix_sidecar_states_the_thickness_and_the_gap(tmp_path):
    acquisition = slice_acquisition(load_image(_gapped_scan(tmp_path)))
    assert acquisition == SliceAcquisition(axis=2, thickness_mm=5.0, spacing_mm=pytest.approx(6.5))
    assert acquisition.gap_mm == pytest.approx(1.5)
    assert not acquisition.contiguous
    assert acquisition.describe() == "5 mm slices every 6.5 mm along axis 2 (1.5 mm gaps)"
    assert thickness_ratios(load_image(tmp_path / "gapped.nii.gz")) == (1.0, 1.0, pytest.approx(5 / 6.5))


@pytest.mark.parametrize("sidecar", [None, "{not json", {"SliceThickness": "n/a"}, {"EchoTime": 0.1}, [5]])
def test_no_usable_sidecar_means_thickness_unknown_and_the_scan_still_loads(tmp_path, sidecar):
    image = load_image(_gapped_scan(tmp_path, sidecar))
    assert slice_acquisition(image) is None
    assert thickness_ratios(image) == (1.0, 1.0, 1.0)


def test_dicom_slice_thickness_tag_is_read_along_the_stacking_axis(tmp_path):
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    arr = (smooth_volume((10, 12, 5)) * 100).astype(np.int16)
    write_dicom_series(
        tmp_path, arr, affine, "1.2.826.0.1.3680043.2.1125.7.9", "overlap", {"0018|0050": "4.5"}
    )
    acquisition = slice_acquisition(load_image(tmp_path))
    assert (acquisition.axis, acquisition.thickness_mm) == (2, 4.5)
    assert acquisition.spacing_mm == pytest.approx(3.0)
    assert acquisition.describe().endswith("(1.5 mm overlap)")


def test_the_record_describes_its_own_grid_only(tmp_path):
    image = load_image(_gapped_scan(tmp_path))
    assert slice_acquisition(resample(image, scale=(1.0, 1.0, 2.0))) is None  # re-gridded: no longer true
    assert slice_acquisition(resample(image, scale=(2.0, 2.0, 1.0))) is not None  # slices unchanged


def test_simulated_thick_slices_state_their_thickness_on_the_grid_they_produce():
    hr = make_image(smooth_volume((12, 10, 32)), oblique_affine((1.0, 1.0, 1.0)))
    lr = SliceThickness(axis=2, thickness=2.0, spacing=4.0)(hr)
    assert slice_acquisition(lr) == SliceAcquisition(2, 2.0, pytest.approx(4.0))
    contiguous = SliceThickness(axis=1, thickness=2.5)(hr)
    assert slice_acquisition(contiguous).contiguous and thickness_ratios(contiguous) == (1.0, 1.0, 1.0)


def test_consistency_with_gaps_is_exact_and_leaves_the_unseen_voxels_alone():
    # 2 mm slabs every 4 mm on 1 mm voxels: slab j covers voxels 4j+1 and 4j+2 exactly (centre 4j+1.5)
    hr = make_image(smooth_volume((6, 5, 32)), oblique_affine((1.0, 1.0, 1.0)))
    lr = SliceThickness(axis=2, thickness=2.0, spacing=4.0)(hr)
    sr = hr.as_tensor() + 0.1 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    ratios = thickness_ratios(lr)
    assert ratios == (1.0, 1.0, pytest.approx(0.5))
    fixed = project_consistent(sr, lr.as_tensor(), thickness_ratio=ratios)
    assert consistency_error(fixed, lr, thickness_ratio=ratios) < 1e-6
    np.testing.assert_allclose(
        SliceThickness(2, 2.0, 4.0)(make_image(fixed.numpy()[0], hr.affine)), lr, atol=1e-5
    )
    unseen = [k for k in range(32) if k % 4 in (0, 3)]  # in the gaps: no slab sees them
    np.testing.assert_allclose(fixed[..., unseen], sr[..., unseen], atol=1e-6)
    # the contiguous model puts the wrong mean into each slab
    assert consistency_error(project_consistent(sr, lr.as_tensor()), lr, thickness_ratio=ratios) > 1e-3


def test_super_resolve_consistency_follows_the_stated_gaps():
    torch.manual_seed(0)
    hr = make_image(100 * smooth_volume((12, 10, 32)), oblique_affine((1.0, 1.0, 1.0)))
    lr = SliceThickness(axis=2, thickness=2.0, spacing=4.0)(hr)
    network = ResidualSR3D(features=4, num_blocks=1)
    out = super_resolve(lr, network, scale=(1.0, 1.0, 4.0), device="cpu", consistency=True)
    assert consistency_error(out, lr, thickness_ratio=(1.0, 1.0, 0.5)) < 1e-5
    assert consistency_error(out, lr) > 1e-3  # not the contiguous model


def test_adaptation_pairs_reproduce_the_stated_thickness_and_spacing():
    hr = make_image(smooth_volume((32, 28, 24)), oblique_affine((0.5, 0.5, 1.0)))
    lr = SliceThickness(axis=2, thickness=3.0, spacing=4.0)(hr)  # 0.5 x 0.5 x 4 mm grid, 3 mm slices
    sampler = adaptation_sampler(lr, spacing=1.0, patch_size=8, seed=1)
    for _ in range(4):
        record = sampler.sample()[2]["degradation"][-1]
        assert record["axis"] in (0, 1)
        assert (record["thickness_mm"], record["spacing_mm"]) == (pytest.approx(3.0), pytest.approx(4.0))


def test_resolver_warns_about_gaps_and_not_about_contiguous_slices(tmp_path):
    sr = SuperResolver(ResidualSR3D(features=4, num_blocks=1), device="cpu")
    with pytest.warns(VolsrInputWarning) as gapped:
        sr(_gapped_scan(tmp_path))
    messages = [str(w.message) for w in gapped if issubclass(w.category, VolsrInputWarning)]
    assert len(messages) == 1
    assert re.search(r"gapped.nii.gz: 5 mm slices every 6.5 mm .*1.5 mm gaps", messages[0])
    contiguous = tmp_path / "c"
    contiguous.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sr(_gapped_scan(contiguous, {"SliceThickness": 6.4}))  # within the 10 % tolerance
    assert not [w for w in caught if issubclass(w.category, VolsrInputWarning)]


def test_cli_info_states_the_slices_and_infer_warns_in_one_line(tmp_path):
    scan = _gapped_scan(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["info", str(scan)])
    assert r.exit_code == 0, r.output
    assert "slices:        5 mm slices every 6.5 mm along axis 2 (1.5 mm gaps)" in r.output
    root = tmp_path / "tiny"  # the default bundle's configs with a tiny network
    shutil.copytree(REPO / "bundles" / "volsr_cnn3d" / "configs", root / "configs")
    save_checkpoint(
        root / "models" / "model.pt", ResidualSR3D(features=4, num_blocks=1), PercentileNormalizer(), 1
    )
    out = tmp_path / "out.nii.gz"
    r = runner.invoke(app, ["infer", str(scan), "-o", str(out), "--bundle", str(root), "--no-progress"])
    assert r.exit_code == 0, r.output
    warning_lines = [line for line in r.stderr.splitlines() if line.startswith("volsr: warning:")]
    assert len(warning_lines) == 1 and "1.5 mm gaps" in warning_lines[0]


def test_evaluate_with_gaps_scores_consistency_under_the_gap_model():
    hr = make_image(100 * smooth_volume((12, 10, 36)), oblique_affine((1.0, 1.0, 1.0)))
    protocol = ThickSlices(axis=2, factor=2.0, spacing_factor=1.5)  # 2 mm every 3 mm
    assert protocol.name == "thick x2 axis 2 boxcar spacing x1.5"
    lr = degrade(hr, protocol)
    assert lr.shape[-1] == 12 and slice_acquisition(lr).gap_mm == pytest.approx(1.0)
    sr = SuperResolver(ResidualSR3D(features=4, num_blocks=1), device="cpu")
    with pytest.warns(VolsrInputWarning, match="1 mm gaps"):
        report = evaluate(hr, protocol, {"net": sr}, consistency=True)
    methods = report["methods"]
    assert methods["net+dc"]["consistency"] < 1e-5  # exact under the stated 2 mm slabs
    assert methods["cubic"]["consistency"] > 1e-3
    # the reference itself is consistent with its own degradation: the gap model is the right one
    assert consistency_error(hr, lr, thickness_ratio=thickness_ratios(lr)) < 1e-5


def test_a_3d_acquisition_points_consistency_to_k_space_and_2d_or_nothing_to_slices(tmp_path):
    import nibabel as nib

    from volsr.data.io import load_image
    from volsr.inference.consistency_choice import choose_consistency_model

    for name, sidecar, expected in (
        ("mprage", {"MRAcquisitionType": "3D"}, "kspace"),
        ("tse", {"MRAcquisitionType": "2D", "SliceThickness": 4}, "slices"),
        ("bare", None, "slices"),
    ):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((6, 6, 4), np.float32), np.diag([1.0, 1.0, 4.0, 1.0])), path)
        if sidecar is not None:
            (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
        assert choose_consistency_model(load_image(path), (1.0, 1.0, 4.0)).model == expected, name
