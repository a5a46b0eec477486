"""Signals and imports that only a fresh process shows: SIGTERM / SIGINT in the middle of a write
leave no temporary file (exit 143, as SIGINT's 130); ITK's own warnings never reach the terminal; importing
the API does not load SimpleITK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, oblique_affine, smooth_volume

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import save_checkpoint

#: runs the CLI with the writer stalled half-way (the temporary file or folder already on disk)
STALLED = """
import sys, time
import nibabel as nib
from volsr.data import dicom_writer
real_save, real_slice = nib.save, dicom_writer._write_slice
def save(image, filename):
    real_save(image, filename)
    time.sleep(60)
def write_slice(plane, tags, path):
    real_slice(plane, tags, path)
    if path.name == "IM_00002.dcm":
        time.sleep(60)
nib.save, dicom_writer._write_slice = save, write_slice
from volsr.cli import main
sys.argv = ["volsr"] + sys.argv[1:]
main()
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def setup(tmp_path):
    bundle = tmp_path / "bundle"
    save_checkpoint(
        bundle / "models" / "model.pt", ResidualSR3D(features=4, num_blocks=1), PercentileNormalizer(), 1
    )
    (bundle / "configs").mkdir()
    (bundle / "configs" / "metadata.json").write_text('{"version": "0"}')
    scan = tmp_path / "thick.nii.gz"
    nib.save(
        nib.Nifti1Image(smooth_volume((16, 12, 5)).astype(np.int16), oblique_affine((1.0, 1.0, 2.0))), scan
    )
    return bundle, scan


def test_a_signal_mid_write_removes_the_temporaries(setup, tmp_path):
    """Two runs at once, each stalled inside its write and then signalled; none leaves a file."""
    bundle, scan = setup
    runs = {
        "sigterm-nifti": (signal.SIGTERM, [], 143),
        "sigterm-dicom": (signal.SIGTERM, ["--dicom"], 143),
    }
    procs = {}
    for name, (_, extra, _) in runs.items():
        out = tmp_path / name
        out.mkdir()
        args = ["infer", str(scan), "-o", str(out / "sr"), "--bundle", str(bundle), "--device", "cpu",
                "--no-progress", "--no-sidecar", *extra]  # fmt: skip
        if not extra:
            args[3] += ".nii.gz"
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", STALLED, *args], cwd=tmp_path, env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    pending = set(runs)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            if any(p.name.endswith(".tmp") or ".tmp." in p.name for p in (tmp_path / name).iterdir()):
                time.sleep(0.2)  # well inside the stalled write
                procs[name].send_signal(runs[name][0])
                pending.discard(name)
            assert procs[name].poll() is None, procs[name].communicate()
        time.sleep(0.05)
    assert not pending, "the writes never started"
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == runs[name][2], err
        assert "Traceback" not in err, err
        assert list((tmp_path / name).iterdir()) == [], f"{name} left debris"


def test_itk_warnings_never_reach_the_terminal(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "volsr.cli", "info", str(tmp_path / "empty")],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    problem = "is a folder without a DICOM series; give an image file or a DICOM folder"
    assert r.stderr.splitlines() == [f"volsr: error: {tmp_path / 'empty'}: {problem}"]


def test_the_api_and_the_nifti_reader_do_not_import_simpleitk():
    code = "import sys, volsr.api, volsr.data.io; print('SimpleITK' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
