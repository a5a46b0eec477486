"""`volsr infer` over a cohort: bad scans skipped, the manifest, resuming, BIDS derivatives, shards."""

# ruff: noqa: F811 - the fixtures imported from cohort_data are the tests' arguments

import json
import os

import nibabel as nib
import numpy as np
from cohort_data import cohort, tiny_bundle  # noqa: F401 - fixtures
from typer.testing import CliRunner

from volsr.api import SuperResolver
from volsr.api.cohort.inputs import Job
from volsr.api.cohort.manifest import MANIFEST, read_manifest
from volsr.api.cohort.runner import run_jobs
from volsr.api.request import InferRequest
from volsr.cli import app

runner = CliRunner()
OUTPUTS = ["a_sr.nii.gz", "c_sr.nii.gz", "e_sr.nii.gz", "site2/d_sr.nii.gz", "site2/f_sr.nii.gz"]


def _infer(*args):
    return runner.invoke(app, ["infer", *[str(a) for a in args], "--device", "cpu", "--no-progress"])


def _records(folder):
    return [json.loads(line) for line in (folder / MANIFEST).read_text().splitlines()]


def test_a_bad_scan_is_skipped_the_rest_written_and_the_manifest_says_which(tiny_bundle, cohort, tmp_path):
    out = tmp_path / "out"
    r = _infer(cohort, "-o", out, "--bundle", tiny_bundle)
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("volsr: error:")]
    assert len(errors) == 1 and "bad.nii.gz: cannot be read" in errors[0]
    assert "1 of 6 scans failed" in r.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == OUTPUTS
    records = _records(out)
    status = {os.path.relpath(r["input"], cohort): r["status"] for r in records}
    assert status == {"a.nii.gz": "done", "bad.nii.gz": "failed", "c.nii.gz": "done", "e.nii.gz": "done",
                      "site2/d.nii.gz": "done", "site2/f.nii.gz": "done"}  # fmt: skip
    failed = next(r for r in records if r["status"] == "failed")
    assert "cannot be read" in failed["error"] and failed["output"] == str(out / "bad_sr.nii.gz")
    assert all(r["seconds"] > 0 for r in records if r["status"] == "done")
    assert nib.load(out / "site2" / "d_sr.nii.gz").shape == (12, 10, 8)


def test_rerun_skips_what_is_done_and_redoes_it_when_an_option_changes(tiny_bundle, cohort, tmp_path):
    out = tmp_path / "out"
    (cohort / "bad.nii.gz").unlink()
    assert _infer(cohort, "-o", out, "--bundle", tiny_bundle).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*_sr.nii.gz")}

    again = _infer(cohort, "-o", out, "--bundle", tiny_bundle)
    assert again.exit_code == 0, again.output
    assert again.stdout.count("was made with the same bundle and options") == 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_sr.nii.gz")} == stamps  # nothing rewritten
    assert [r["status"] for r in _records(out)][5:] == ["skipped"] * 5

    # a different option makes different outputs: they are redone (replacing volsr's own outputs)
    changed = _infer(cohort, "-o", out, "--bundle", tiny_bundle, "--dtype", "float32")
    assert changed.exit_code == 0, changed.output
    assert [r["status"] for r in _records(out)][10:] == ["done"] * 5
    assert nib.load(out / "a_sr.nii.gz").get_data_dtype() == np.float32
    # so is an output whose sidecar says another network made it
    sidecar = out / "c_sr.json"
    info = json.loads(sidecar.read_text())
    info["GeneratedBy"]["CheckpointStep"] = 999
    sidecar.write_text(json.dumps(info))
    last = _infer(cohort, "-o", out, "--bundle", tiny_bundle, "--dtype", "float32")
    assert [
        (os.path.basename(r["output"]), r["status"]) for r in _records(out)[15:] if r["status"] == "done"
    ] == [("c_sr.nii.gz", "done")]
    assert last.exit_code == 0


def test_the_cohort_runner_writes_what_predict_file_writes(tiny_bundle, cohort, tmp_path):
    sr = SuperResolver.from_bundle(tiny_bundle, device="cpu")
    scans = [cohort / "a.nii.gz", cohort / "site2" / "d.nii.gz", cohort / "e.nii.gz"]
    jobs = [Job(s, tmp_path / "cohort_out" / f"{s.name[:-7]}_sr.nii.gz") for s in scans]
    counts = run_jobs(sr, jobs, request=InferRequest(), echo=lambda line: None, prefetch=2)
    assert counts["done"] == 3
    for scan, job in zip(scans, jobs, strict=True):
        alone = sr.predict_file(scan, tmp_path / "alone" / job.dst.name)
        assert job.dst.read_bytes() != b"" and np.array_equal(
            nib.load(job.dst).dataobj, nib.load(alone).dataobj
        )
        np.testing.assert_array_equal(nib.load(job.dst).affine, nib.load(alone).affine)
        assert json.loads(job.dst.with_name(job.dst.name[:-7] + ".json").read_text()) == json.loads(
            alone.with_name(alone.name[:-7] + ".json").read_text()
        )


def test_a_bids_root_goes_to_its_derivatives_folder(tiny_bundle, cohort, tmp_path):
    root = tmp_path / "bids"
    anat = root / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}')
    (anat / "sub-01_ses-1_T1w.nii.gz").write_bytes((cohort / "a.nii.gz").read_bytes())
    r = _infer(root, "--bundle", tiny_bundle)
    assert r.exit_code == 0, r.output
    derivatives = root / "derivatives" / "volsr"
    out = derivatives / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_desc-sr_T1w.nii.gz"
    assert nib.load(out).shape == (12, 10, 8)
    sidecar = json.loads(out.with_name("sub-01_ses-1_desc-sr_T1w.json").read_text())
    assert sidecar["Sources"] == [str(anat / "sub-01_ses-1_T1w.nii.gz")]
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "volsr"
    assert [r["status"] for r in read_manifest(derivatives)] == ["done"]


def test_shards_split_the_cohort_and_their_manifest_parts_read_as_one(tiny_bundle, cohort, tmp_path):
    out = tmp_path / "out"
    codes = [
        _infer(cohort, "-o", out, "--bundle", tiny_bundle, "--shard", f"{i}/2").exit_code for i in (0, 1)
    ]
    assert sorted(codes) == [0, 2]  # bad.nii.gz is in one of the two parts
    parts = sorted(p.name for p in out.glob("manifest*.jsonl"))
    assert parts == ["manifest.shard0-of-2.jsonl", "manifest.shard1-of-2.jsonl"]
    records = read_manifest(out)
    assert sorted(os.path.relpath(r["input"], cohort) for r in records) == sorted(
        ["bad.nii.gz", "a.nii.gz", "c.nii.gz", "e.nii.gz", "site2/d.nii.gz", "site2/f.nii.gz"]
    )  # every scan once, in one part or the other
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == OUTPUTS
    bad = _infer(cohort, "-o", out, "--bundle", tiny_bundle, "--shard", "2/2")
    assert bad.exit_code == 2 and "0 <= I < N" in bad.stderr


def test_a_cohort_with_uncertainty_writes_each_map_beside_its_output(tiny_bundle, cohort, tmp_path):
    sr = SuperResolver.from_bundle(tiny_bundle, device="cpu", uncertainty=True)
    scans = [cohort / "a.nii.gz", cohort / "site2" / "d.nii.gz"]
    jobs = [Job(s, tmp_path / "out" / f"{s.name[:-7]}_sr.nii.gz") for s in scans]
    assert run_jobs(sr, jobs, request=InferRequest(), echo=lambda line: None, prefetch=2)["done"] == 2
    for job in jobs:
        umap = job.dst.with_name(job.dst.name[:-7] + "_uncertainty.nii.gz")
        assert nib.load(umap).shape == nib.load(job.dst).shape
        np.testing.assert_array_equal(nib.load(umap).affine, nib.load(job.dst).affine)
        sidecar = json.loads(job.dst.with_name(job.dst.name[:-7] + ".json").read_text())
        assert sidecar["Uncertainty"]["File"] == umap.name
