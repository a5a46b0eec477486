"""Degradation protocols: the names reports are keyed by, the JSON and checkpoint forms, argument
checks, and the transforms they build against the transforms built by hand."""

from dataclasses import asdict

import pytest
import torch
from conftest import oblique_affine, smooth_volume
from monai.data import MetaTensor

from volsr.transforms import KSpaceTruncation, SliceThickness
from volsr.transforms.protocol import QUALITY_BAR, KSpace, ThickSlices, as_protocol, protocol_from_dict
from volsr.transforms.slice_thickness import thickness_for_factor

#: (dict form as bundle JSON, reports and the CLI wrote it, the name the reports in docs/ are keyed by)
NAMES = [
    ({"kind": "thickness", "axis": 2, "factor": 4.0, "profile": "boxcar"}, "thick x4 axis 2 boxcar"),
    ({"kind": "thickness", "axis": 0, "factor": 2.0, "profile": "boxcar"}, "thick x2 axis 0 boxcar"),
    ({"kind": "thickness", "axis": 1, "factor": 6, "profile": "gaussian"}, "thick x6 axis 1 gaussian"),
    (
        {"kind": "thickness", "axis": 2, "factor": 3.0, "spacing_factor": 4 / 3, "profile": "boxcar"},
        "thick x3 axis 2 boxcar spacing x1.33333",
    ),
    (
        {"kind": "thickness", "axis": 2, "factor": 2.0, "spacing_factor": 1.5},
        "thick x2 axis 2 boxcar spacing x1.5",
    ),
    ({"kind": "kspace", "fraction": 0.5, "axes": [0, 1, 2], "window": "none"}, "k-space 0.5 axes 012"),
    ({"kind": "kspace", "fraction": 1 / 3, "axes": [0, 1, 2], "window": "none"}, "k-space 0.33 axes 012"),
    ({"kind": "kspace", "fraction": 0.25, "axes": [0, 1], "window": "hamming"}, "k-space 0.25 axes 01"),
]


@pytest.mark.parametrize(("form", "name"), NAMES)
def test_names_are_the_keys_of_existing_reports_and_the_dict_form_round_trips(form, name):
    protocol = protocol_from_dict(form)
    assert protocol.name == name
    again = protocol_from_dict(protocol.to_dict())
    assert again == protocol and again.name == name
    assert protocol_from_dict(asdict(protocol)) == protocol  # the form a checkpoint's config stores
    # to_dict gives back the form it was read from (numbers as floats, the default profile stated)
    given = {
        k: list(v) if k == "axes" else float(v) if k in ("factor", "fraction") else v for k, v in form.items()
    }
    defaults = {"profile": "boxcar"} if form["kind"] == "thickness" else {}
    assert protocol.to_dict() == {**defaults, **given}


def test_a_thickness_in_mm_names_itself_in_mm():
    assert ThickSlices(axis=0, thickness=3).name == "thick 3 mm axis 0 boxcar"
    assert ThickSlices(axis=0, thickness=3).to_dict() == {
        "kind": "thickness", "axis": 0, "thickness": 3.0, "profile": "boxcar",
    }  # fmt: skip


def test_the_checkpoint_forms_load():
    # stored by TrainConfig before protocols were typed (no kind), and as dataclasses.asdict stores it now
    assert protocol_from_dict({"axis": 2, "factor": 4.0, "profile": "boxcar"}) == QUALITY_BAR
    assert protocol_from_dict({"axis": 1}) == ThickSlices(axis=1, factor=4.0)
    stored = asdict(KSpace(0.5, axes=(0, 1), window="tukey"))
    assert protocol_from_dict(stored) == KSpace(0.5, axes=(0, 1), window="tukey")
    assert as_protocol(QUALITY_BAR) is QUALITY_BAR


def test_the_shipped_checkpoints_state_the_quality_bar(shared_data):
    from conftest import REPO

    shipped = sorted((REPO / "bundles").glob("*/models/checkpoint.pt"))
    assert shipped  # the default bundle ships its resume state
    validated_on = {"volsr_kspace3d": KSpace(0.5)}  # the reduced-matrix bundle: x2 on every axis
    for path in shipped:
        state = torch.load(path, weights_only=False)
        expected = validated_on.get(path.parent.parent.name, QUALITY_BAR)
        assert protocol_from_dict(state["config"]["val_protocol"]) == expected


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: ThickSlices(axis=3, factor=2), "axis"),
        (lambda: ThickSlices(axis=(0, 1), factor=2), "axis"),
        (lambda: ThickSlices(axis=2, factor=0), "factor"),
        (lambda: ThickSlices(axis=2, thickness=-1), "thickness"),
        (lambda: ThickSlices(axis=2), "factor"),
        (lambda: ThickSlices(axis=2, factor=2, thickness=3), "thickness"),
        (lambda: ThickSlices(axis=2, factor=2, profile="sinc"), "profile"),
        (lambda: ThickSlices(axis=2, factor=2, spacing_factor=0), "spacing_factor"),
        (lambda: KSpace(1.5), "fraction"),
        (lambda: KSpace(0), "fraction"),
        (lambda: KSpace(0.5, axes=(0, 0)), "axes"),
        (lambda: KSpace(0.5, window="hann"), "window"),
        (lambda: KSpace(0.5, reduce_matrix="yes"), "reduce_matrix"),
        (lambda: protocol_from_dict({"kind": "blur"}), "kind"),
        (lambda: protocol_from_dict({"kind": "kspace", "fraction": 0.5, "factor": 2}), "factor"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_protocols_are_frozen_values():
    with pytest.raises(AttributeError):
        QUALITY_BAR.axis = 0
    assert ThickSlices(axis=2, factor=4) == QUALITY_BAR and hash(ThickSlices(axis=2, factor=4)) == hash(
        QUALITY_BAR
    )


def _volume() -> MetaTensor:
    return MetaTensor(
        torch.as_tensor(smooth_volume((12, 10, 16)))[None].float(), affine=oblique_affine((1.0, 1.5, 0.8))
    )


def test_thick_slices_apply_what_slice_thickness_did():
    hr = _volume()
    protocol = ThickSlices(axis=2, factor=4.0, profile="gaussian", spacing_factor=1.25)
    thickness = thickness_for_factor(hr, 2, 4.0)  # 3.2 mm
    expected = SliceThickness(2, thickness, 1.25 * thickness, profile="gaussian")(hr)
    out = protocol.transform()(hr)
    assert out.shape == expected.shape and torch.equal(out.as_tensor(), expected.as_tensor())
    assert torch.allclose(out.affine, expected.affine)
    mm = ThickSlices(axis=0, thickness=2.0).transform()(hr)
    assert torch.equal(mm.as_tensor(), SliceThickness(0, 2.0)(hr).as_tensor())


def test_kspace_applies_what_kspace_truncation_did():
    hr = _volume()
    out = KSpace(0.5, axes=(0, 1), window="hamming").transform()(hr)
    expected = KSpaceTruncation(0.5, axes=(0, 1), window="hamming", reduce_matrix=True)(hr)
    assert out.shape == expected.shape == (1, 6, 5, 16)
    assert torch.equal(out.as_tensor(), expected.as_tensor()) and torch.allclose(out.affine, expected.affine)
    same_grid = KSpace(0.5, reduce_matrix=False).transform()(hr)
    assert same_grid.shape == hr.shape
