"""torchrun with 2 CPU processes (gloo): the ranks split the cohort, no scan twice or missed."""

# ruff: noqa: F811 - the fixtures imported from cohort_data are the tests' arguments

import json
import os
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
from cohort_data import cohort, tiny_bundle  # noqa: F401 - fixtures
from conftest import REPO
from typer.testing import CliRunner

from volsr.api.cohort.manifest import MANIFEST
from volsr.cli import app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_write_every_scan_once_as_one_process_does(tiny_bundle, cohort, tmp_path):
    options = ["--bundle", str(tiny_bundle), "--device", "cpu", "--no-progress", "--dtype", "float32"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port()), "-m", "volsr.cli", "infer"]  # fmt: skip
    out = tmp_path / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*torchrun, str(cohort), "-o", str(out), *options], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode != 0  # bad.nii.gz failed on rank 1, which went on; rank 0 counts it and exits 2
    assert run.stderr.count("volsr: error:") == 1 and "bad.nii.gz: cannot be read" in run.stderr

    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert not list(out.glob("manifest.rank*.jsonl"))  # merged by rank 0 after the barrier
    inputs = [os.path.relpath(r["input"], cohort) for r in records]
    assert sorted(inputs) == ["a.nii.gz", "bad.nii.gz", "c.nii.gz", "e.nii.gz", "site2/d.nii.gz",
                              "site2/f.nii.gz"]  # fmt: skip
    assert {r["rank"] for r in records} == {0, 1}
    by_rank = {os.path.relpath(r["input"], cohort): r["rank"] for r in records}
    assert by_rank == {"a.nii.gz": 0, "bad.nii.gz": 1, "c.nii.gz": 0, "e.nii.gz": 1, "site2/d.nii.gz": 0,
                       "site2/f.nii.gz": 1}  # fmt: skip  # scan i of the sorted cohort -> rank i mod 2

    single = tmp_path / "single"
    r = CliRunner().invoke(app, ["infer", str(cohort), "-o", str(single), *options])
    assert r.exit_code == 2
    outputs = sorted(p.relative_to(out) for p in out.rglob("*_sr.nii.gz"))
    assert outputs == sorted(p.relative_to(single) for p in single.rglob("*_sr.nii.gz")) and len(outputs) == 5
    for rel in outputs:
        a, b = nib.load(out / rel), nib.load(single / rel)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))  # bit for bit
        np.testing.assert_array_equal(a.affine, b.affine)
