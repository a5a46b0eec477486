"""Hostile data and headers through `volsr info / infer / degrade`: complex voxels, values a type
cannot hold, values past float32, NaN made by scaling, headers without coordinate codes, headers
nibabel repairs. Each is refused in one `volsr: error: <file>: ...` line (exit 2, nothing written),
or used with volsr's own one-line warning; numpy and nibabel never print."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_tiny_bundle, oblique_affine, smooth_volume
from test_cli_refusals import THICK, _nifti, refused, runner, says

from volsr.cli import app
from volsr.geometry.grids import fov_corners

SHAPE = (16, 12, 5)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    return inputs, out_dir


def _infer(scan: Path, out: Path, bundle: Path, *extra: str) -> list[str]:
    return ["infer", str(scan), "-o", str(out), "--bundle", str(bundle), "--device", "cpu", "--no-progress",
            *extra]  # fmt: skip


def _clean_stderr(stderr: str) -> None:
    """Nothing but volsr's own lines: no numpy warning, no nibabel log line."""
    for line in stderr.splitlines():
        assert line.startswith(("volsr: error: ", "volsr: warning: ")), line


# ---- complex voxels --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("command", ["info", "infer", "degrade"])
def test_complex_voxels_are_refused_with_their_type_named(dtype, command, bundle, tmp_path):
    inputs, out_dir = _folders(tmp_path)
    data = smooth_volume(SHAPE) + 1j * smooth_volume(SHAPE, seed=1)
    scan = _nifti(inputs / "complex.nii.gz", data.astype(dtype))
    args = {
        "info": ["info", str(scan)],
        "infer": _infer(scan, out_dir / "sr.nii.gz", bundle, "--dtype", "float32"),
        "degrade": ["degrade", str(scan), "-o", str(out_dir / "low.nii.gz"), "--kspace", "0.5"],
    }[command]
    run = refused(args, inputs, out_dir, scan)
    assert says(run, f"stores complex voxels ({np.dtype(dtype).name})"), run.error
    assert "imaginary" in run.error and "magnitude" in run.error  # how to convert it
    assert "ComplexWarning" not in run.stderr


# ---- a stored type that cannot hold the values --------------------------------------------------------


def test_an_output_type_too_small_is_refused_with_the_share_it_would_clip(bundle, tmp_path):
    inputs, out_dir = _folders(tmp_path)
    values = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) * 10  # 0 .. 9590, evenly spread
    scan = _nifti(inputs / "wide.nii.gz", values)
    above = np.count_nonzero(values > 255) / values.size  # what uint8 would clip
    run = refused(_infer(scan, out_dir / "sr.nii.gz", bundle, "--dtype", "uint8"), inputs, out_dir, scan)
    assert says(run, f"would clip {above:.1%} of its voxels"), run.error
    assert "0 .. 255" in run.error
    args = ["degrade", str(scan), "-o", str(out_dir / "low.nii.gz"), "--kspace", "0.5", "--dtype", "int8"]
    run = refused(args, inputs, out_dir, scan)
    assert says(run, f"would clip {np.count_nonzero(values > 127) / values.size:.1%} of its voxels")


def test_an_output_that_overshoots_a_named_type_is_written_with_the_share_clipped(tmp_path):
    """The input fits uint8 (250 everywhere); an output that overshoots at an edge (300 on a quarter of
    the voxels) is clipped to what the type holds, and the share is said, never silently."""
    from volsr.data.io import load_image, save_image

    inputs, _ = _folders(tmp_path)
    scan = _nifti(inputs / "fits.nii.gz", np.full(SHAPE, 250, np.uint8))
    image = load_image(scan)
    image[0, :4] = 300.0  # an output that overshoots at an edge: 4 of 16 rows
    with pytest.warns(UserWarning, match=r"25\.00% of the voxels lie outside uint8's range"):
        written = save_image(image, tmp_path / "out.nii.gz", dtype="uint8")
    assert np.asarray(nib.load(written).dataobj).max() == 255


def test_dtype_choices_are_listed_in_help_and_a_bad_one_is_one_line(tmp_path):
    r = runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "250"})  # the choices on one line
    for name in ("input", "float32", "uint8", "int16"):
        assert name in r.output
    inputs, out_dir = _folders(tmp_path)
    scan = _nifti(inputs / "scan.nii.gz", smooth_volume(SHAPE).astype(np.int16))
    r = runner.invoke(app, ["infer", str(scan), "-o", str(out_dir / "sr.nii.gz"), "--dtype", "foo"])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("volsr: error: Invalid value for '--dtype'")
    assert "'foo' is not one of" in r.stderr and "╭" not in r.stderr


# ---- values past float32, NaN or Inf made by the header's scaling --------------------------------------


def _scaled(slope: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        img = nib.Nifti1Image(smooth_volume(SHAPE).astype(np.int16), oblique_affine(THICK))
        img.header.set_slope_inter(slope, 0.0)
        nib.save(img, folder / "scaled.nii.gz")
        return folder / "scaled.nii.gz"

    return make


def _float64(value: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        data = smooth_volume(SHAPE)
        data[2, 3, 1] = value
        return _nifti(folder / "wide64.nii.gz", data)

    return make


def _float32_scaled(folder: Path) -> Path:
    """float32 voxels up to 3e38 with scl_slope 10: the scaled values are past float32."""
    data = smooth_volume(SHAPE).astype(np.float32)
    data[1, 1, 1] = 3e38
    img = nib.Nifti1Image(data, oblique_affine(THICK))
    img.header.set_slope_inter(10.0, 0.0)
    nib.save(img, folder / "scaled32.nii.gz")
    return folder / "scaled32.nii.gz"


VALUE_FAMILIES = {
    "float64 past float32": (_float64(1e300), "1 voxel(s) past float32's range (largest magnitude 1e+300"),
    "scaling past float32": (_scaled(1e37), "past float32's range"),
    "float32 scaled past float32": (_float32_scaled, "past float32's range | after the header's scaling"),
}


@pytest.mark.parametrize("command", ["info", "infer"])
@pytest.mark.parametrize("name", list(VALUE_FAMILIES))
def test_values_float32_cannot_hold_are_one_line_and_no_numpy_warning(name, command, bundle, tmp_path):
    inputs, out_dir = _folders(tmp_path)
    scan = VALUE_FAMILIES[name][0](inputs)
    args = ["info", str(scan)] if command == "info" else _infer(scan, out_dir / "sr.nii.gz", bundle)
    with np.errstate(all="warn"):  # numpy's default: a warning volsr must not let through
        run = refused(args, inputs, out_dir, scan)
    assert says(run, VALUE_FAMILIES[name][1]), run.error
    assert "RuntimeWarning" not in run.stderr and "overflow" not in run.stderr


# ---- headers: no coordinate codes, repairs --------------------------------------------------------------


def _no_codes(folder: Path) -> Path:
    img = nib.Nifti1Image(smooth_volume(SHAPE).astype(np.int16), oblique_affine(THICK))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, folder / "nocodes.nii.gz")
    return folder / "nocodes.nii.gz"


def test_a_header_without_coordinate_codes_gives_an_output_without_them(bundle, tmp_path):
    inputs, out_dir = _folders(tmp_path)
    scan = _no_codes(inputs)
    r = runner.invoke(app, _infer(scan, out_dir / "sr.nii.gz", bundle))
    assert r.exit_code == 0, r.output
    _clean_stderr(r.stderr)
    assert f"volsr: warning: {scan}: the input header states no coordinate system" in r.stderr
    out = nib.load(out_dir / "sr.nii.gz")
    assert int(out.header["qform_code"]) == 0 and int(out.header["sform_code"]) == 0  # not scanner (1)
    # read back from pixdim alone, the output's field of view is the input's, to the micrometre
    src = nib.load(scan)
    corners_in = fov_corners(src.affine, src.shape)
    corners_out = fov_corners(out.affine, out.shape)
    np.testing.assert_allclose(corners_out, corners_in, atol=1e-4)
    sidecar = json.loads((out_dir / "sr.json").read_text())
    assert any("qform_code = sform_code = 0" in a for a in sidecar["Assumptions"])


def test_a_header_with_codes_states_no_assumption(bundle, tmp_path):
    inputs, out_dir = _folders(tmp_path)
    scan = _nifti(inputs / "coded.nii.gz", smooth_volume(SHAPE).astype(np.int16))
    r = runner.invoke(app, _infer(scan, out_dir / "sr.nii.gz", bundle))
    assert r.exit_code == 0 and r.stderr == ""
    assert "Assumptions" not in json.loads((out_dir / "sr.json").read_text())
    codes = [(int(h["qform_code"]), int(h["sform_code"])) for h in (nib.load(out_dir / "sr.nii.gz").header,
                                                                   nib.load(scan).header)]  # fmt: skip
    assert codes[0] == codes[1] == (0, 2)  # nibabel's own: an affine aligned to an unnamed space


def _negative_pixdim(folder: Path) -> Path:
    path = folder / "negpix.nii"
    img = nib.Nifti1Image(smooth_volume(SHAPE).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    img.set_sform(None, code=0)
    img.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    raw[80:84] = struct.pack("<f", -1.0)  # pixdim[2]
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("repeat", [1, 2])  # nibabel's logger must stay quiet on every read, not the first
def test_negative_pixdim_is_volsrs_warning_never_nibabels(repeat, tmp_path):
    inputs, _ = _folders(tmp_path)
    scan = _negative_pixdim(inputs)
    for _ in range(repeat):
        r = runner.invoke(app, ["info", str(scan)])
        assert r.exit_code == 0, r.output
        assert r.stderr.splitlines() == [
            f"volsr: warning: {scan}: states a negative voxel size in pixdim; read as its absolute value "
            "(the axis directions come from the qform/sform, not from the sign)"
        ]
        assert "spacing:       1 x 1 x 2 mm" in r.output
