"""dcm2niix's QA series (``../shared/data/dicom_qa``: four vendors, mosaics, classic and lossless-JPEG
storage, 3-D and 4-D) placed where dcm2niix places them: the eight world corners of the field of view
within 0.01 mm and the three axes within 0.1 degrees of its NIfTI, for the input as read and for the
super-resolved output's grid; the voxel values of volume 0 at the same world points; ``volsr info``
agreeing on shape and spacing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA, make_tiny_bundle
from typer.testing import CliRunner

from volsr.cli import app
from volsr.data.io import load_image
from volsr.geometry.grids import fov_corners, voxel_spacing, voxel_to_world
from volsr.inference.sliding_window import output_grid

pytestmark = pytest.mark.integration

CORPUS = SHARED_DATA / "dicom_qa"
MANIFEST = json.loads((CORPUS / "ref" / "manifest.json").read_text()) if CORPUS.is_dir() else {}
CORNER_MM, AXIS_DEG = 0.01, 0.1
runner = CliRunner()


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} not present")
    return CORPUS


def reference(name: str) -> nib.Nifti1Image:
    return nib.load(str(CORPUS / "ref" / f"{name}.nii.gz"))


def corner_distance(affine: np.ndarray, shape, ref_affine: np.ndarray, ref_shape) -> float:
    """The largest distance (mm) from a corner of one field of view to the nearest corner of the other,
    both ways: voxel order may differ, the box may not."""
    a, b = fov_corners(affine, shape), fov_corners(ref_affine, ref_shape)
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def axis_angles(affine: np.ndarray, ref_affine: np.ndarray) -> np.ndarray:
    """For each reference axis, the angle (degrees) to the nearest axis of ``affine``, sign ignored;
    the three must be distinct axes."""
    u = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    r = ref_affine[:3, :3] / np.linalg.norm(ref_affine[:3, :3], axis=0)
    cos = np.abs(r.T @ u)
    assert sorted(np.argmax(cos, axis=1)) == [0, 1, 2], cos
    return np.degrees(np.arccos(np.clip(cos.max(axis=1), -1.0, 1.0)))


def reference_values_at(img, ref: nib.Nifti1Image, stored: bool = False) -> np.ndarray:
    """The reference's volume 0 (``stored``: as stored, before its scl_slope) at the world position of
    every voxel of ``img``, in the index order of ``img``."""
    data = np.asarray(ref.dataobj.get_unscaled(), dtype=np.float64) if stored else ref.get_fdata()
    data = data[..., 0] if data.ndim == 4 else data
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = tuple(img.shape[1:])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    t = (voxel_to_world(affine, ijk) - ref.affine[:3, 3]) @ np.linalg.inv(ref.affine[:3, :3]).T
    np.testing.assert_allclose(t, np.rint(t), atol=1e-3)  # every voxel centre on a reference voxel centre
    t = np.rint(t).astype(int)
    return data[t[:, 0], t[:, 1], t[:, 2]].reshape(shape)


@pytest.mark.parametrize("name", sorted(MANIFEST) or ["(corpus absent)"])
def test_series_is_placed_where_dcm2niix_places_it(corpus, name):
    ref, facts = reference(name), MANIFEST[name]
    img = load_image(corpus / name, volume=0)
    affine, shape = img.affine.numpy(), tuple(img.shape[1:])
    assert sorted(shape) == sorted(facts["shape"])
    assert img.meta["dicom_volumes"] == facts["ref_volumes"]
    assert corner_distance(affine, shape, ref.affine, ref.shape[:3]) < CORNER_MM
    assert axis_angles(affine, ref.affine).max() < AXIS_DEG
    # the super-resolved output keeps the field of view and the axes
    out_affine, out_shape, _ = output_grid(img)
    assert corner_distance(out_affine, out_shape, ref.affine, ref.shape[:3]) < CORNER_MM
    assert axis_angles(out_affine, ref.affine).max() < AXIS_DEG
    # the same values at the same world points: nothing flipped or shifted inside the box
    ours = img[0].numpy().astype(np.float64)
    if name.startswith("philips"):
        # dcm2niix scales Philips' values to their floating-point meaning and stores them rounded to
        # the full int16 range, volsr (as ITK) to the displayed ones: one linear map, within one step
        # of the reference's rounding
        stored = reference_values_at(img, ref, stored=True)
        slope, intercept = np.polyfit(stored.ravel(), ours.ravel(), 1)
        np.testing.assert_allclose(ours, slope * stored + intercept, rtol=0, atol=abs(slope))
    else:
        np.testing.assert_array_equal(ours, reference_values_at(img, ref))


def _info(args: list[str]) -> dict[str, str]:
    result = runner.invoke(app, ["info", *args])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return dict(re.findall(r"^(\w[\w ]*):\s+(.*)$", result.stdout, flags=re.M))


@pytest.mark.parametrize("name", sorted(MANIFEST) or ["(corpus absent)"])
def test_info_states_the_reference_shape_and_spacing(corpus, name):
    facts = MANIFEST[name]
    args = [str(corpus / name)] + (["--volume", "0"] if facts["ref_volumes"] > 1 else [])
    info = _info(args)
    shape = [int(n) for n in info["shape"].removesuffix(" voxels").split(" x ")]
    spacing = [float(s) for s in info["spacing"].removesuffix(" mm").split(" x ")]
    order = np.argsort(shape, kind="stable")
    ref_order = np.argsort(facts["shape"], kind="stable")
    assert [shape[i] for i in order] == [facts["shape"][i] for i in ref_order]
    np.testing.assert_allclose(sorted(spacing), sorted(facts["zooms"]), rtol=1e-3)
    if facts["ref_volumes"] > 1:  # without --volume, a 4-D series is refused with its volume count
        result = runner.invoke(app, ["info", str(corpus / name)])
        assert result.exit_code == 2
        assert f"is 4-D with {facts['ref_volumes']} volumes; pick one" in result.stderr


def test_volsr_infer_writes_the_reference_field_of_view(corpus, tmp_path):
    name = "siemens_epi_ax_mosaic"  # the smallest series: two mosaic files
    ref = reference(name)
    bundle = make_tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "sr.nii.gz"
    args = ["infer", str(corpus / name), "--volume", "0", "-o", str(out), "--bundle", str(bundle)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    written = nib.load(str(out))
    assert corner_distance(written.affine, written.shape[:3], ref.affine, ref.shape[:3]) < CORNER_MM
    assert axis_angles(written.affine, ref.affine).max() < AXIS_DEG
    # about isotropic at the finest spacing: 35 slices 3.6 mm apart become 39, 126 / 39 mm apart
    assert written.shape == (64, 64, 39)
    np.testing.assert_allclose(voxel_spacing(written.affine), [3.25, 3.25, 35 * 3.6 / 39], rtol=1e-6)
