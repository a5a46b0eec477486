"""The command line's errors name its options (``--overwrite``, ``--spacing / --scale``), never Python's
arguments; tests/api/test_error_wording.py checks the same refusals raised to Python."""

import nibabel as nib
import numpy as np
import pytest
from conftest import make_tiny_bundle, smooth_volume
from typer.testing import CliRunner

from volsr.cli import app

runner = CliRunner()
PYTHON_WORDS = ("=True", "spacing=", "volume=", "roi (", "device=")


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "tiny")


def _nifti(path, shape, affine):
    volume = smooth_volume(shape[:3]).astype(np.float32)
    data = volume if len(shape) == 3 else np.stack([volume] * shape[3], axis=-1)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _refusal(*args) -> str:
    r = runner.invoke(app, [*map(str, args), "--device", "cpu", "--no-progress"])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.splitlines()
    assert line.startswith("volsr: error: ") and not any(w in line for w in PYTHON_WORDS), line
    return line


def test_an_existing_output_asks_for_the_overwrite_option(bundle, tmp_path):
    scan = _nifti(tmp_path / "thick.nii.gz", (12, 10, 4), np.diag([1.0, 1.0, 2.0, 1.0]))
    (tmp_path / "out.nii.gz").write_bytes(b"keep")
    line = _refusal("infer", scan, "-o", tmp_path / "out.nii.gz", "--bundle", bundle)
    assert line.endswith("out.nii.gz: already exists; pass --overwrite to replace it"), line


def test_the_requested_grid_asks_for_the_spacing_or_scale_option(bundle, tmp_path):
    iso = _nifti(tmp_path / "iso.nii.gz", (8, 8, 8), np.eye(4))
    line = _refusal("infer", iso, "-o", tmp_path / "o.nii.gz", "--bundle", bundle)
    assert line.endswith("ask for a finer one with --spacing / --scale"), line


def test_option_values_are_named_as_options(bundle, tmp_path):
    scan = _nifti(tmp_path / "thick.nii.gz", (12, 10, 4), np.diag([1.0, 1.0, 2.0, 1.0]))
    line = _refusal("infer", scan, "--bundle", bundle, "--roi", "0", "8", "8")
    assert line == "volsr: error: --roi must be a whole number >= 1, got 0", line
    r = runner.invoke(app, ["infer", str(scan), "--bundle", str(bundle), "--device", "foo"])
    assert r.exit_code == 2 and r.stderr.startswith("volsr: error: --device 'foo' is not a device"), r.stderr


def test_a_4d_image_asks_for_the_volume_option(bundle, tmp_path):
    bold = _nifti(tmp_path / "bold.nii.gz", (6, 6, 4, 3), np.eye(4))
    line = _refusal("infer", bold, "-o", tmp_path / "o.nii.gz", "--bundle", bundle)
    assert line.endswith("is 4-D with 3 volumes; pick one with --volume in 0..2"), line
