"""volsr.transforms.torchio: TorchIO subjects get the MONAI transforms' voxels and affines."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, make_image, oblique_affine, smooth_volume

import volsr.transforms as monai_side
from volsr.geometry.grids import voxel_spacing

tio = pytest.importorskip("torchio")
adapters = pytest.importorskip("volsr.transforms.torchio")


def hr_image():
    return make_image(smooth_volume((20, 18, 16)).astype(np.float32), oblique_affine((1.0, 1.0, 1.0)))


def subject(hr) -> tio.Subject:
    affine = hr.affine.numpy()
    return tio.Subject(
        t1=tio.ScalarImage(tensor=hr.as_tensor().clone(), affine=affine),
        t2=tio.ScalarImage(tensor=hr.as_tensor().clone() * 2, affine=affine),
        mask=tio.LabelMap(tensor=(hr.as_tensor() > 50).to(torch.uint8), affine=affine),
    )


def assert_same(image, expected) -> None:
    np.testing.assert_allclose(image.data.numpy(), expected.as_tensor().numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(image.affine, expected.affine.numpy(), atol=1e-9)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: adapters.SliceThickness(2, 4.0), lambda: monai_side.SliceThickness(2, 4.0)),
        (
            lambda: adapters.KSpaceTruncation(0.5, axes=(0, 1), window="hamming", reduce_matrix=True),
            lambda: monai_side.KSpaceTruncation(0.5, axes=(0, 1), window="hamming", reduce_matrix=True),
        ),
        (lambda: adapters.Noise(30.0, seed=4), lambda: monai_side.Noise(30.0, seed=4)),
    ],
    ids=["slice_thickness", "kspace", "noise"],
)
def test_deterministic_transforms_give_the_monai_voxels_and_affine(ours, theirs):
    hr = hr_image()
    out = ours()(subject(hr))
    expected = theirs()(hr)
    assert_same(out["t1"], expected)
    np.testing.assert_array_equal(out["mask"].data.numpy(), (hr.as_tensor() > 50).numpy())  # labels left


def test_thick_subject_has_the_thick_spacing():
    out = adapters.SliceThickness(2, 4.0)(subject(hr_image()))
    assert out["t1"].shape == (1, 20, 18, 4)
    np.testing.assert_allclose(voxel_spacing(out["t1"].affine), (1.0, 1.0, 4.0), atol=1e-9)
    np.testing.assert_allclose(out["t1"].spacing, (1.0, 1.0, 4.0), atol=1e-9)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (adapters.RandSliceThickness, monai_side.RandSliceThickness),
        (adapters.RandKSpaceTruncation, monai_side.RandKSpaceTruncation),
        (adapters.RandNoise, monai_side.RandNoise),
    ],
    ids=["slice_thickness", "kspace", "noise"],
)
def test_random_transforms_match_monai_for_the_same_seed_and_draw_once_per_subject(ours, theirs):
    hr = hr_image()
    out = ours(seed=7)(subject(hr))
    monai_transform = theirs()
    monai_transform.set_random_state(seed=7)
    expected = monai_transform(hr)
    assert_same(out["t1"], expected)
    assert out["t2"].shape == out["t1"].shape  # one draw for every image of the subject
    np.testing.assert_allclose(out["t2"].affine, out["t1"].affine)


def test_volsr_transforms_do_not_import_torchio():
    code = "import sys, volsr.transforms; assert 'torchio' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
