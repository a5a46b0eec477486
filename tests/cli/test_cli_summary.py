"""What `volsr infer` prints per scan: both grids, the time, device and precision, the bundle and where
it came from, the consistency model, every file written; the progress bar names what it counts; the
sidecar's paths are in one form whichever folder the run started in."""

import json
import re
from pathlib import Path

import pytest
from conftest import make_tiny_bundle, write_thick_scan
from typer.testing import CliRunner

from volsr.api.bundle_search import installed_bundles
from volsr.cli import app

runner = CliRunner()


@pytest.fixture
def bundle(tmp_path):
    return make_tiny_bundle(tmp_path / "tiny_bundle")


@pytest.fixture
def scan(tmp_path):
    return write_thick_scan(tmp_path)


def _infer(*args: str):
    return runner.invoke(app, ["infer", *map(str, args), "--device", "cpu", "--no-amp"])


def test_the_summary_names_grids_time_device_bundle_and_every_file(bundle, scan, tmp_path):
    out = tmp_path / "out" / "thick_sr.nii.gz"
    r = _infer(scan, "-o", out, "--bundle", bundle, "--uncertainty", "--no-progress")
    assert r.exit_code == 0, r.output
    sidecar = out.with_name("thick_sr.json")
    record = json.loads(sidecar.read_text())
    lines = r.stdout.splitlines()
    head = re.fullmatch(
        rf"{re.escape(str(scan))}: 16 x 12 x 5 voxels of 1 x 1 x 2 mm -> "
        r"16 x 12 x 10 voxels of 1 x 1 x 1 mm, (\d+\.\d) s on cpu float32",
        lines[0],
    )
    assert head is not None, lines[0]
    assert record["GeneratedBy"]["Options"]["precision"] == "float32"  # the line says what the sidecar says
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["version"]
    assert lines[1] == f"  bundle: tiny_bundle {version} (path given: {bundle.resolve()})"
    rest = lines[2:]
    if record.get("Consistency"):  # the data-consistency model the sidecar records, and why
        choice = record["Consistency"]
        assert rest.pop(0) == f"  consistency: {choice['model'] or 'none'} ({choice['reason']})"
    written = [out, out.with_name("thick_sr_uncertainty.nii.gz"), sidecar]
    assert rest == [f"  wrote {p}" for p in written]
    assert all(p.is_file() for p in written)


def test_a_dicom_output_names_its_series_folder_and_sidecar(bundle, scan, tmp_path):
    out = tmp_path / "series_sr"
    r = _infer(scan, "-o", out, "--bundle", bundle, "--dicom", "--no-progress")
    assert r.exit_code == 0, r.output
    wrote = [line for line in r.stdout.splitlines() if line.startswith("  wrote ")]
    assert wrote == [f"  wrote {out}", f"  wrote {tmp_path / 'series_sr.json'}"]
    assert out.is_dir() and any(out.iterdir())


def test_the_default_bundle_says_it_is_the_installed_copy(scan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_tiny_bundle(tmp_path / "bundles" / "volsr_cnn3d")  # a clone's own bundles/: not what a name runs
    r = _infer(scan, "-o", tmp_path / "o.nii.gz", "--no-progress", "--roi", "16", "16", "16")
    assert r.exit_code == 0, r.output
    installed = (installed_bundles() / "volsr_cnn3d").resolve()
    (line,) = [line for line in r.stdout.splitlines() if line.startswith("  bundle: ")]
    assert line.startswith("  bundle: volsr_cnn3d ") and line.endswith(f"(installed copy: {installed})")


def test_the_progress_bar_counts_the_windows_of_the_scan(bundle, scan, tmp_path):
    r = _infer(scan, "-o", tmp_path / "o.nii.gz", "--bundle", bundle, "--roi", "8", "8", "8", "--progress")
    assert r.exit_code == 0, r.output
    bars = re.findall(r"windows of thick\.nii\.gz: +100%\|[^|]*\| (\d+)/(\d+) ", r.stderr)
    assert bars and bars[-1][0] == bars[-1][1] and int(bars[-1][0]) > 1, r.stderr
    assert "window/s" in r.stderr or "s/window" in r.stderr


def test_sidecar_paths_are_absolute_and_resolved_from_any_folder(bundle, scan, tmp_path, monkeypatch):
    """Two runs naming the same scan and bundle relatively, from two folders (one through a link):
    both sidecars record the same resolved paths."""
    link = tmp_path / "link"
    link.symlink_to(scan.parent, target_is_directory=True)
    runs = [
        (scan.parent, Path("thick.nii.gz"), Path("..") / "tiny_bundle", Path("a.nii.gz")),
        (tmp_path, Path("link") / "thick.nii.gz", Path("tiny_bundle"), Path("out") / "b.nii.gz"),
    ]
    recorded = []
    for folder, src, bundle_path, out in runs:
        monkeypatch.chdir(folder)
        bundle_arg = f"./{bundle_path}" if bundle_path.parent == Path(".") else str(bundle_path)
        r = _infer(src, "-o", out, "--bundle", bundle_arg, "--no-progress")
        assert r.exit_code == 0, r.output
        info = json.loads((folder / out).with_name(out.name.replace(".nii.gz", ".json")).read_text())
        recorded.append((info["Sources"], info["GeneratedBy"]["Bundle"]))
    expected = ([str(scan.resolve())], str(bundle.resolve()))
    assert recorded == [expected, expected]


def test_a_cohort_manifest_records_resolved_paths(bundle, scan, tmp_path, monkeypatch):
    monkeypatch.chdir(scan.parent)
    r = _infer(".", "-o", "../cohort", "--bundle", bundle, "--no-progress")
    assert r.exit_code == 0, r.output
    (record,) = [
        json.loads(line) for line in (tmp_path / "cohort" / "manifest.jsonl").read_text().splitlines()
    ]
    assert record["input"] == str(scan.resolve())
    assert record["output"] == str((tmp_path / "cohort" / "thick_sr.nii.gz").resolve())


def test_infer_help_states_the_bundle_rule():
    from volsr.api.bundle_search import BUNDLE_RULE

    r = runner.invoke(app, ["infer", "--help"], terminal_width=80)
    assert r.exit_code == 0
    assert f"The bundle: {BUNDLE_RULE}." in " ".join(r.stdout.split())
