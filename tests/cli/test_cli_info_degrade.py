"""`volsr info` and `volsr degrade`: exit codes, one-line errors, and outputs checked in world coordinates."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import oblique_affine, smooth_volume
from scans import lia_affine, volume, write_dicom_series, write_nifti
from typer.testing import CliRunner

from volsr.cli import app, main
from volsr.data.acquisition import SliceAcquisition, slice_acquisition
from volsr.data.io import load_image
from volsr.geometry.grids import fov_corners, voxel_spacing

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def scan(tmp_path):
    """16 x 12 x 16 voxels of 1 mm on an oblique, flipped grid, stored as int16."""
    arr = np.rint(smooth_volume((16, 12, 16))).astype(np.int16)
    return write_nifti(tmp_path / "scan.nii.gz", arr, oblique_affine((1.0, 1.0, 1.0)))


def test_help_is_instant_because_heavy_modules_load_lazily():
    code = "import sys, volsr.cli; sys.exit(any(m in sys.modules for m in ('torch', 'monai', 'nibabel')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    result = invoke("--help")
    assert result.exit_code == 0 and "info" in result.stdout and "degrade" in result.stdout


def test_info_prints_shape_spacing_orientation_dtype_and_range(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", volume(), lia_affine(angle_deg=0.0))
    result = invoke("info", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "7 x 6 x 5 voxels" in out and "1 x 1.5 x 2 mm" in out
    assert "LIA" in out and "int16" in out and "-40 .. 169" in out


def test_info_picks_a_dicom_series(tmp_path):
    write_dicom_series(tmp_path, volume(), lia_affine(), "1.2.826.0.1.3680043.2.1125.7.1", "one")
    write_dicom_series(tmp_path, volume(), lia_affine(), "1.2.826.0.1.3680043.2.1125.7.2", "two")
    assert invoke("info", tmp_path).exit_code == 2
    result = invoke("info", tmp_path, "--series", "1.2.826.0.1.3680043.2.1125.7.2")
    assert result.exit_code == 0 and "7 x 6 x 5 voxels" in result.stdout


BAD_INPUTS = {
    "missing.nii.gz": (None, "no such file"),
    "text.nii.gz": (lambda p: p.write_text("hello\n"), "cannot be read"),
    "flat.nii.gz": (lambda p: write_nifti(p, np.ones((8, 9), np.float32), np.eye(4)), "is 2-D"),
    "bold.nii.gz": (lambda p: write_nifti(p, np.ones((4, 4, 4, 3), np.float32), np.eye(4)), "--volume"),
    "nan.nii.gz": (lambda p: write_nifti(p, np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), "NaN"),
}


@pytest.mark.parametrize("command", ["info", "degrade"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path, command, name):
    make, problem = BAD_INPUTS[name]
    path = tmp_path / name
    if make is not None:
        make(path)
    extra = ["-o", tmp_path / "out.nii.gz", "--thickness", "4", "--axis", "2"] if command == "degrade" else []
    result = invoke(command, path, *extra)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"volsr: error: {path}: ") and problem in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out.nii.gz").exists()


def test_main_reports_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "text.nii.gz"
    path.write_text("hello\n")
    monkeypatch.setattr(sys, "argv", ["volsr", "info", str(path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"volsr: error: {path}: cannot be read") and err.count("\n") == 1


def test_4d_input_with_volume(tmp_path):
    arr = np.stack([volume(), volume() + 1], axis=-1)
    path = write_nifti(tmp_path / "bold.nii.gz", arr, lia_affine())
    result = invoke("info", path, "--volume", "1")
    assert result.exit_code == 0 and "-39 .. 170" in result.stdout


def test_degrade_thickness_gives_thick_slices_on_the_same_field_of_view(tmp_path, scan):
    out = tmp_path / "thick.nii.gz"
    result = invoke("degrade", scan, "-o", out, "--thickness", "4", "--axis", "2")
    assert result.exit_code == 0, result.output
    hr, lr = load_image(scan), load_image(out)
    assert lr.shape == (1, 16, 12, 4)
    np.testing.assert_allclose(voxel_spacing(lr.affine), [1.0, 1.0, 4.0], atol=1e-5)
    np.testing.assert_allclose(
        fov_corners(lr.affine, lr.shape[1:]), fov_corners(hr.affine, hr.shape[1:]), atol=1e-4
    )
    # contiguous boxcar over whole voxels: each thick slice is the mean of its four thin ones
    expected = hr[0].numpy().reshape(16, 12, 4, 4).mean(-1)
    np.testing.assert_allclose(lr[0].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert nib.load(str(out)).get_data_dtype() == np.float32


def test_degrade_factor_equals_thickness_in_voxels(tmp_path, scan):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    gaussian = ["--axis", "0", "--profile", "gaussian"]
    assert invoke("degrade", scan, "-o", a, "--thickness", "3", *gaussian).exit_code == 0
    assert invoke("degrade", scan, "-o", b, "--factor", "3", *gaussian).exit_code == 0
    # the stored voxel size is 1 mm up to float32 rounding of the oblique affine
    np.testing.assert_allclose(nib.load(str(a)).get_fdata(), nib.load(str(b)).get_fdata(), rtol=1e-6)


def test_degrade_spacing_factor_leaves_gaps(tmp_path, scan):
    out = tmp_path / "gap.nii.gz"
    result = invoke("degrade", scan, "-o", out, "--thickness", "2", "--axis", "2", "--spacing-factor", "2")
    assert result.exit_code == 0, result.output
    lr = load_image(out)
    np.testing.assert_allclose(voxel_spacing(lr.affine)[2], 4.0, atol=1e-5)
    assert lr.meta["source_dtype"] == "float32"
    # the sidecar states the 2 mm slices, so reading the file back knows the 2 mm gaps
    assert f"wrote {tmp_path / 'gap.json'}: 2 mm slices every 4 mm along axis 2 (2 mm gaps)" in result.stdout
    assert slice_acquisition(lr) == SliceAcquisition(2, 2.0, pytest.approx(4.0))
    again = invoke("degrade", scan, "-o", tmp_path / "gap.nii", "--thickness", "2", "--axis", "2")
    assert again.exit_code == 2 and "gap.json: (the sidecar of the output) exists" in again.stderr
    assert not (tmp_path / "gap.nii").exists()  # refused before any work
    assert (
        invoke("degrade", scan, "-o", tmp_path / "side.nii.gz", "--factor", "2", "--axis", "0").exit_code == 0
    )
    assert not (tmp_path / "side.json").exists()  # a sidecar cannot say slices lie along axis 0


@pytest.mark.parametrize("axes", [["--axes", "0,1"], ["--axes", "0", "--axes", "1"]])
def test_degrade_kspace_reduced_matrix_keeps_the_field_of_view(tmp_path, scan, axes):
    out = tmp_path / "k.nii.gz"
    result = invoke(
        "degrade", scan, "-o", out, "--kspace", "0.5", *axes, "--window", "hamming", "--reduce-matrix"
    )
    assert result.exit_code == 0, result.output
    hr, lr = load_image(scan), load_image(out)
    assert lr.shape == (1, 8, 6, 16)
    np.testing.assert_allclose(voxel_spacing(lr.affine), [2.0, 2.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(
        fov_corners(lr.affine, lr.shape[1:]), fov_corners(hr.affine, hr.shape[1:]), atol=1e-4
    )
    np.testing.assert_allclose(lr[0].numpy().mean(), hr[0].numpy().mean(), rtol=1e-4)


def test_degrade_kspace_default_keeps_the_grid(tmp_path, scan):
    out = tmp_path / "k.nii.gz"
    assert invoke("degrade", scan, "-o", out, "--kspace", "0.5").exit_code == 0
    lr = load_image(out)
    assert lr.shape == (1, 16, 12, 16)
    np.testing.assert_allclose(lr.affine.numpy(), load_image(scan).affine.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--thickness", "4", "--factor", "2", "--axis", "2"], "mutually exclusive"),
        ([], "give either --thickness/--factor"),
        (["--thickness", "4", "--kspace", "0.5", "--axis", "2"], "give either"),
        (["--thickness", "4"], "--axis is required"),
        (["--thickness", "4", "--axis", "3"], "--axis"),
        (["--thickness", "-1", "--axis", "2"], "thickness must be > 0"),
        (["--factor", "0", "--axis", "2"], "--factor must be > 0"),
        (["--kspace", "0.5", "--profile", "gaussian"], "--profile"),
        (["--thickness", "4", "--axis", "2", "--window", "tukey"], "--window"),
        (["--kspace", "1.5"], "--kspace must be in (0, 1]"),
        (["--kspace", "0.5", "--axes", "0,x"], "--axes takes axis numbers"),
        (["--kspace", "0.5", "--axes", "0,0"], "repeated"),
        (["--thickness", "4", "--axis", "2", "--dtype", "complex64"], "dtype"),
    ],
)
def test_degrade_bad_options_exit_2_in_one_line(tmp_path, scan, options, problem):
    result = invoke("degrade", scan, "-o", tmp_path / "out.nii.gz", *options)
    assert result.exit_code == 2
    assert result.stderr.startswith("volsr: error: ") and problem in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "out.nii.gz").exists()


def test_degrade_dtype_input_overwrite_and_never_the_input(tmp_path, scan):
    out = tmp_path / "thick.nii.gz"
    args = ["degrade", scan, "-o", out, "--factor", "2", "--axis", "1", "--dtype", "input"]
    assert invoke(*args).exit_code == 0
    assert nib.load(str(out)).get_data_dtype() == np.int16
    again = invoke(*args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert invoke(*args, "--overwrite").exit_code == 0
    before = scan.read_bytes()
    result = invoke("degrade", scan, "-o", scan, "--factor", "2", "--axis", "1", "--overwrite")
    assert result.exit_code == 2 and "is the input image" in result.stderr
    assert scan.read_bytes() == before


def test_version_prints_the_package_version_and_exits_0():
    import tomllib
    from conftest import REPO

    result = invoke("--version")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert result.exit_code == 0 and result.output == f"volsr {version}\n"


def test_info_shows_the_stored_type_its_scaling_and_the_scaled_range(tmp_path):
    stored = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 200).astype(np.uint8)
    img = nib.Nifti1Image(stored, np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header.set_slope_inter(10.0, -1024.0)
    nib.save(img, tmp_path / "ct.nii.gz")
    r = CliRunner().invoke(app, ["info", str(tmp_path / "ct.nii.gz")])
    assert r.exit_code == 0, r.output
    fields = dict(line.split(":", 1) for line in r.output.splitlines())
    assert fields["stored type"].strip() == "uint8"
    assert fields["scaling"].strip() == "value = stored x 10 - 1024"
    low, high = 10.0 * stored.min() - 1024, 10.0 * stored.max() - 1024
    assert fields["scaled range"].split("(")[0].split() == [f"{low:.6g}", "..", f"{high:.6g}"]
