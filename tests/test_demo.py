"""`volsr demo`: the shipped default bundle on the shipped sample scan, end to end."""

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from volsr.cli import app
from volsr.demo import sample_scan
from volsr.geometry.grids import fov_corners, voxel_spacing


@pytest.mark.slow
def test_demo_runs_offline_and_writes_an_isotropic_volume_in_place(tmp_path):
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "sample_pd_thick_sr.nii.gz")
    src = nib.load(sample_scan())
    spacing = voxel_spacing(out.affine)
    assert np.allclose(spacing, spacing.min(), rtol=2e-2)  # isotropic at the finest input spacing
    assert np.allclose(fov_corners(out.affine, out.shape), fov_corners(src.affine, src.shape), atol=1e-3)
    assert (tmp_path / "sample_pd_thick_sr.png").stat().st_size > 10_000
    # run in a clone, the demo leaves nothing that `git status` would show as untracked
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["sample_pd_thick_sr.json", "sample_pd_thick_sr.nii.gz", "sample_pd_thick_sr.png"]
    announced = sorted(
        Path(line.split(" ", 1)[1]).name for line in result.output.splitlines() if line.startswith("wrote ")
    )
    assert announced == written  # every file written is named, the sidecar included
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") and (repo / ".git").exists():
        ignored = subprocess.run(
            ["git", "-C", str(repo), "check-ignore", *written], capture_output=True, text=True, check=False
        )
        assert ignored.stdout.split() == written
