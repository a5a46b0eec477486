"""Errors raised to Python name settings as Python writes them (``overwrite=True``, ``spacing=``), never
as the command line does; tests/cli/test_cli_error_wording.py checks the command line's words."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_tiny_bundle, smooth_volume

from volsr.api import SuperResolver
from volsr.api.request import ResolverOptions
from volsr.data.io import load_image
from volsr.errors import OVERWRITE, Option, VolsrInputError, VolsrOptionError, one_line


@pytest.fixture
def sr(tmp_path):
    return SuperResolver.from_bundle(make_tiny_bundle(tmp_path / "tiny"), device="cpu", amp=False)


@pytest.fixture
def thick(tmp_path):
    path = tmp_path / "thick.nii.gz"
    nib.save(
        nib.Nifti1Image(smooth_volume((12, 10, 4)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), path
    )
    return path


def test_an_existing_output_asks_for_overwrite_true(sr, thick, tmp_path):
    dst = tmp_path / "out.nii.gz"
    dst.write_bytes(b"keep")
    with pytest.raises(
        VolsrInputError, match=r"out\.nii\.gz: already exists; pass overwrite=True to replace it$"
    ):
        sr.predict_file(thick, dst)
    assert dst.read_bytes() == b"keep"


def test_the_requested_grid_asks_for_spacing_or_scale(sr, tmp_path):
    iso = tmp_path / "iso.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((8, 8, 8)).astype(np.float32), np.eye(4)), iso)
    with pytest.raises(VolsrInputError, match=r"ask for a finer one with spacing= / scale=$"):
        sr.predict_file(iso, tmp_path / "o.nii.gz")


def test_option_values_are_named_as_arguments():
    with pytest.raises(VolsrOptionError, match=r"^roi must be a whole number >= 1, got 0$"):
        ResolverOptions(roi=(0, 8, 8))
    with pytest.raises(VolsrOptionError, match=r"^device='foo' is not a device"):
        SuperResolver(torch.nn.Identity(), device="foo")


def test_a_4d_image_asks_for_volume(tmp_path):
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 4, 3), np.float32), np.eye(4)), path)
    with pytest.raises(VolsrInputError, match=r"pick one with volume= in 0\.\.2$"):
        load_image(path)


def test_one_error_holds_both_wordings_also_across_processes():
    error = VolsrInputError("o.nii.gz", "exists; pass {overwrite} (not {other})", overwrite=OVERWRITE)
    assert str(error) == "o.nii.gz: exists; pass overwrite=True (not {other})"  # other braces are left
    assert one_line(error, cli=True) == "o.nii.gz: exists; pass --overwrite (not {other})"
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), one_line(again, cli=True), again.path) == (
        str(error),
        one_line(error, cli=True),
        "o.nii.gz",
    )
    option = VolsrOptionError("{roi} is wrong", roi=Option("roi", "--roi"))
    assert one_line(pickle.loads(pickle.dumps(option)), cli=True) == "--roi is wrong"
