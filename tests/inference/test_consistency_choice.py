"""The consistency model a scan gets: from its header when it says, else from the grid's factors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import make_image, oblique_affine, smooth_volume

from volsr.data.acquisition import acquisition_record
from volsr.data.io import load_image
from volsr.inference.consistency_choice import (
    SIMILAR_FACTORS,
    ConsistencyChoice,
    choose_consistency_model,
    decide_consistency,
)
from volsr.inference.sliding_window import output_grid
from volsr.transforms.protocol import KSpace, ThickSlices


def _nifti(tmp_path, sidecar: dict | None = None, spacing=(1.0, 1.0, 1.0)):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((12, 10, 8)).astype(np.float32), oblique_affine(spacing)), path)
    if sidecar is not None:
        (tmp_path / "scan.json").write_text(json.dumps(sidecar))
    return path


@pytest.mark.parametrize("factors", [(1.0, 1.0, 4.0), (2.0, 2.0, 2.0)])
def test_sidecar_3d_means_kspace_whatever_the_grid(tmp_path, factors):
    scan = load_image(_nifti(tmp_path, {"MRAcquisitionType": "3D"}))
    choice = choose_consistency_model(scan, factors)
    assert (choice.model, choice.source) == ("kspace", "header")
    assert choice.reason == "the sidecar states a 3D acquisition"
    assert choice.summary() == "consistency: k-space (the sidecar states a 3D acquisition)"
    record = {"model": "kspace", "reason": "the sidecar states a 3D acquisition", "source": "header"}
    assert choice.record() == record
    assert ConsistencyChoice.from_record(record) == choice  # the sidecar's record reads back


def test_sidecar_2d_means_slices_even_for_a_reduced_looking_grid(tmp_path):
    scan = load_image(_nifti(tmp_path, {"MRAcquisitionType": "2D"}))
    choice = choose_consistency_model(scan, (2.0, 2.0, 2.0))
    assert (choice.model, choice.reason) == ("slices", "the sidecar states a 2D acquisition")


def test_dicom_header_2d(shared_data):
    scan = load_image(shared_data / "dicom" / "epi_sagittal")
    choice = choose_consistency_model(scan, (2.0, 2.0, 2.0))
    assert (choice.model, choice.source) == ("slices", "header")
    assert choice.reason == "the DICOM header states a 2D acquisition"


def test_stated_gap_means_slices(tmp_path):
    scan = load_image(_nifti(tmp_path, {"SliceThickness": 0.5}, spacing=(1.0, 1.0, 1.0)))  # 0.5 mm every 1 mm
    choice = choose_consistency_model(scan, (2.0, 2.0, 2.0))
    assert (choice.model, choice.source) == ("slices", "header")
    assert "0.5 mm slices every 1 mm along axis 2 (0.5 mm gaps)" in choice.reason


def test_unstated_nifti_falls_back_to_the_geometry(tmp_path):
    scan = load_image(_nifti(tmp_path))  # no sidecar
    assert "acquisition_type" not in scan.meta
    choice = choose_consistency_model(scan, (2.0, 2.0, 1.875))
    assert (choice.model, choice.source) == ("kspace", "geometry")
    assert choice.reason == (
        "no acquisition type stated; all axes up-sampled alike (x2, x2, x1.88): a reduced 3D matrix"
    )


@pytest.mark.parametrize(
    ("factors", "model", "words"),
    [
        ((2.0, 2.0, 2.0), "kspace", "up-sampled alike"),
        ((2.0, 2.0, 2.0 * SIMILAR_FACTORS), "kspace", "up-sampled alike"),  # at the bound: still similar
        ((2.0, 2.0, 2.0 * SIMILAR_FACTORS * 1.01), "slices", "different factors"),
        ((1.0, 1.0, 4.0), "slices", "one axis up-sampled"),
        ((1.003, 1.0, 2.8), "slices", "one axis up-sampled"),  # a grid rounded to whole voxels
        ((1.1, 1.1, 3.3), "slices", "different factors"),
        ((2.0, 2.0, 1.0), "slices", "different factors"),
        ((1.0, 1.0, 1.0), "slices", "no axis up-sampled"),
    ],
)
def test_geometry_rules(factors, model, words):
    scan = make_image(np.ones((4, 4, 4)), np.eye(4))
    choice = choose_consistency_model(scan, factors)
    assert (choice.model, choice.source) == (model, "geometry")
    assert words in choice.reason


def test_protocols_through_the_output_grid_infer_their_own_model():
    hr = make_image(smooth_volume((24, 20, 16)), oblique_affine((1.0, 1.0, 1.0)))
    reduced = KSpace(0.5).transform()(hr)  # 12 x 10 x 8 voxels of 2 mm
    _, _, factors = output_grid(reduced, scale=(2.0, 2.0, 2.0))
    assert choose_consistency_model(reduced, factors).model == "kspace"
    thick = ThickSlices(axis=2, factor=4.0).transform()(hr)  # 24 x 20 x 4, 1 x 1 x 4 mm
    _, _, factors = output_grid(thick)  # default: isotropic at the finest spacing
    assert choose_consistency_model(thick, factors).model == "slices"


@pytest.mark.parametrize("factors", [(2.0, 2.0), (2.0, 0.0, 2.0), (2.0, -1.0, 2.0)])
def test_bad_factors_are_refused(factors):
    with pytest.raises(ValueError, match="factors"):
        choose_consistency_model(make_image(np.ones((4, 4, 4)), np.eye(4)), factors)


def test_record_from_a_degraded_scan_is_contiguous_and_decides_nothing():
    # contiguous slices stated (thickness = spacing) say nothing a 3D matrix could not: geometry decides
    scan = make_image(np.ones((4, 4, 4)), np.eye(4))
    scan.meta["slice_acquisition"] = acquisition_record(1.0, np.eye(4))
    assert choose_consistency_model(scan, (2.0, 2.0, 2.0)).source == "geometry"


@pytest.mark.parametrize("asked", ["auto", True])
def test_auto_is_the_choice_from_header_then_grid(tmp_path, asked):
    stated = load_image(_nifti(tmp_path, {"MRAcquisitionType": "3D"}))
    assert decide_consistency(stated, (1.0, 1.0, 4.0), asked) == choose_consistency_model(
        stated, (1.0, 1.0, 4.0)
    )
    bare = make_image(np.ones((4, 4, 4)), np.eye(4))
    assert decide_consistency(bare, (2.0, 2.0, 2.0), asked).model == "kspace"
    assert decide_consistency(bare, (1.0, 1.0, 2.8), asked).model == "slices"


@pytest.mark.parametrize("factors", [(2.0, 2.0, 0.5), (1.0, 0.75, 3.0)])
def test_auto_on_a_grid_coarser_than_the_input_projects_nothing_and_says_why(factors):
    choice = decide_consistency(make_image(np.ones((4, 4, 4)), np.eye(4)), factors, "auto")
    assert (choice.model, choice.source, choice.label) == (None, "fallback", "off")
    down = [i for i, f in enumerate(factors) if f < 1]
    assert all(f"axis {i} x{factors[i]:.3g}" in choice.reason for i in down)
    assert choice.summary().startswith("consistency: off (not projected: down-sampled on axis")


@pytest.mark.parametrize("model", ["slices", "kspace"])
def test_a_model_asked_for_is_kept_whatever_the_header_or_grid(tmp_path, model):
    stated = load_image(_nifti(tmp_path, {"MRAcquisitionType": "2D" if model == "kspace" else "3D"}))
    for factors in ((2.0, 2.0, 2.0), (1.0, 1.0, 4.0), (2.0, 2.0, 0.5)):
        choice = decide_consistency(stated, factors, model)
        assert (choice.model, choice.source) == (model, "request")
        # the record is read by Python and command-line users alike: it names the option both ways
        assert choice.reason == f"asked for (consistency={model!r} / --consistency-model {model})"


def test_off_is_off_and_unknown_requests_are_refused():
    image = make_image(np.ones((4, 4, 4)), np.eye(4))
    choice = decide_consistency(image, (2.0, 2.0, 2.0), False)
    assert choice.record() == {
        "model": None,
        "reason": "turned off (consistency=False / --no-consistency)",
        "source": "request",
    }
    for bad in ("wavelets", 1, 0, None, "Auto"):
        with pytest.raises(ValueError, match="consistency must be"):
            decide_consistency(image, (2.0, 2.0, 2.0), bad)
