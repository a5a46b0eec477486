"""A tiny bundle and a small cohort of synthetic thick-slice scans, so cohort runs take seconds
(``from cohort_data import cohort, tiny_bundle`` in a test module makes them its fixtures)."""

import nibabel as nib
import numpy as np
import pytest
from conftest import make_tiny_bundle, oblique_affine, smooth_volume


@pytest.fixture
def tiny_bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "tiny_bundle")


@pytest.fixture
def cohort(tmp_path):
    """``cohort/{a,b,c}.nii.gz`` and ``cohort/site2/{d,e}.nii.gz`` (12 x 10 x 4 voxels of 1 x 1 x 2 mm),
    and ``cohort/bad.nii.gz``, which is not an image."""
    root = tmp_path / "cohort"
    for i, rel in enumerate(["a.nii.gz", "c.nii.gz", "e.nii.gz", "site2/d.nii.gz", "site2/f.nii.gz"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = smooth_volume((12, 10, 4), seed=i).astype(np.float32)
        nib.save(nib.Nifti1Image(data, oblique_affine((1.0, 1.0, 2.0))), root / rel)
    (root / "bad.nii.gz").write_bytes(b"not a NIfTI file")
    return root
