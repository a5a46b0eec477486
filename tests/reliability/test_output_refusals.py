"""Where `volsr infer / degrade` write: output names in any case, unknown endings and existing files
refused before the work (never made a folder), no input file ever written over (with `--overwrite`
too), names at the file system's limit, the same input twice in a cohort."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_tiny_bundle, smooth_volume
from test_cli_refusals import _nifti, refused, runner, says

from volsr.cli import app


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def scan_with_sidecar(tmp_path) -> tuple[Path, Path, Path]:
    """``in/scan.nii.gz`` with its dcm2niix sidecar ``in/scan.json``, and an empty ``out/``."""
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    scan = _nifti(inputs / "scan.nii.gz", smooth_volume((16, 12, 5)).astype(np.int16))
    (inputs / "scan.json").write_text(json.dumps({"SliceThickness": 2.0, "Manufacturer": "Siemens"}))
    return inputs, out_dir, scan


def _read_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI file by its bytes: nibabel opens a name by its lower-case ending (``Out.Nii``: ``Out.nii``)."""
    raw = path.read_bytes()
    return nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def _infer(scans, out: Path, bundle: Path, *extra: str) -> list[str]:
    scans = [scans] if isinstance(scans, Path) else scans
    return ["infer", *map(str, scans), "-o", str(out), "--bundle", str(bundle), "--device", "cpu",
            "--no-progress", *extra]  # fmt: skip


# ---- output names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["OUT.NII.GZ", "Out.Nii", "sr.nii.GZ"])
def test_output_endings_are_recognised_in_any_case(name, bundle, scan_with_sidecar):
    _, out_dir, scan = scan_with_sidecar
    r = runner.invoke(app, _infer(scan, out_dir / name, bundle))
    assert r.exit_code == 0, r.output
    assert _read_nifti(out_dir / name).shape[:2] == (16, 12)
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".gz") else name[: -len(".nii")]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([name, f"{stem}.json"])


@pytest.mark.parametrize("dicom", [False, True], ids=["nifti", "dicom"])
@pytest.mark.parametrize("name", ["out.png", "result.mgz", "scan.tif"])
def test_an_unknown_output_ending_is_refused_never_made_a_folder(name, dicom, bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    args = _infer(scan, out_dir / name, bundle, *(["--dicom"] if dicom else []))
    run = refused(args, inputs, out_dir, out_dir / name)
    assert says(run, "unknown output type"), run.error


def test_a_cohort_folder_with_a_file_ending_is_refused(bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    other = _nifti(inputs / "other.nii.gz", smooth_volume((16, 12, 5), seed=2).astype(np.int16))
    run = refused(
        _infer([scan, other], out_dir / "cohort.png", bundle), inputs, out_dir, out_dir / "cohort.png"
    )
    assert says(run, "unknown output type '.png'"), run.error


@pytest.mark.parametrize("dicom", [False, True], ids=["nifti", "dicom"])
@pytest.mark.parametrize("name", ["notes.txt", "results"])
def test_an_existing_file_volsr_cannot_write_is_refused_before_work(name, dicom, bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    (out_dir / name).write_text("keep me\n")
    args = _infer(scan, out_dir / name, bundle, *(["--dicom"] if dicom else []))
    run = refused(args, inputs, out_dir, out_dir / name, left=[name])
    assert says(run, "is an existing file that is not an output volsr can write"), run.error
    assert (out_dir / name).read_text() == "keep me\n"


def test_a_nifti_name_for_a_dicom_series_is_refused(bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    run = refused(
        _infer(scan, out_dir / "sr.nii.gz", bundle, "--dicom"), inputs, out_dir, out_dir / "sr.nii.gz"
    )
    assert says(run, "--dicom writes a series folder"), run.error


# ---- never an input ------------------------------------------------------------------------------


def test_the_input_sidecar_is_never_written_over_even_with_overwrite(bundle, scan_with_sidecar):
    """The reported case: `--dicom -o <input folder>/scan --overwrite` wrote the series' sidecar over
    the input's own dcm2niix sidecar `scan.json`."""
    inputs, out_dir, scan = scan_with_sidecar
    for extra in (["--dicom"], []):
        target = inputs / ("scan" if extra else "scan.nii")  # scan.nii's sidecar is scan.json too
        args = _infer(scan, target, bundle, *extra, "--overwrite")
        run = refused(args, inputs, inputs, inputs / "scan.json", left=["scan.json", "scan.nii.gz"])
        assert says(run, "would replace the input's sidecar"), run.error
        assert says(run, "also with --overwrite"), run.error


def test_the_input_itself_is_never_written_over(bundle, scan_with_sidecar):
    inputs, _, scan = scan_with_sidecar
    run = refused(_infer(scan, scan, bundle, "--overwrite"), inputs, inputs, scan,
                  left=["scan.json", "scan.nii.gz"])  # fmt: skip
    assert says(run, "is the input image"), run.error


def test_a_hard_link_to_the_input_is_the_input(bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    os.link(scan, out_dir / "link.nii.gz")
    args = _infer(scan, out_dir / "link.nii.gz", bundle, "--overwrite", "--no-sidecar")
    run = refused(args, inputs, out_dir, out_dir / "link.nii.gz", left=["link.nii.gz"])
    assert says(run, "is the input image"), run.error


def test_an_uncertainty_map_never_replaces_an_input(bundle, scan_with_sidecar):
    """Outputs into the input folder with --uncertainty: scan's map, scan_sr_uncertainty.nii.gz, would
    be the other input of the cohort."""
    inputs, _, scan = scan_with_sidecar
    victim = _nifti(
        inputs / "scan_sr_uncertainty.nii.gz", smooth_volume((16, 12, 5), seed=3).astype(np.int16)
    )
    args = _infer([scan, victim], inputs, bundle, "--uncertainty", "--overwrite")
    run = refused(args, inputs, inputs, victim, left=["scan.json", "scan.nii.gz", victim.name])
    assert says(run, "is the input image"), run.error


def test_one_cohort_output_never_replaces_another_input(bundle, tmp_path):
    """`a.nii.gz` and `a_sr.nii.gz` in one folder, outputs into that folder with --overwrite: a's output
    would be the other input. Refused before any scan runs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    a = _nifti(inputs / "a.nii.gz", smooth_volume((16, 12, 5)).astype(np.int16))
    a_sr = _nifti(inputs / "a_sr.nii.gz", smooth_volume((16, 12, 5), seed=1).astype(np.int16))
    run = refused(_infer([a, a_sr], inputs, bundle, "--overwrite"), inputs, inputs, inputs / "a_sr.nii.gz",
                  left=["a.nii.gz", "a_sr.nii.gz"])  # fmt: skip
    assert says(run, "is the input image"), run.error


def test_a_dicom_output_folder_never_holds_an_input(bundle, tmp_path):
    """A cohort into its own folder with --dicom --overwrite: a.nii.gz's series folder `a_sr` is the
    folder that holds the input a_sr/b.nii.gz (--overwrite replaces a series folder whole)."""
    inputs = tmp_path / "in"
    (inputs / "a_sr").mkdir(parents=True)
    _nifti(inputs / "a.nii.gz", smooth_volume((16, 12, 5)).astype(np.int16))
    _nifti(inputs / "a_sr" / "b.nii.gz", smooth_volume((16, 12, 5), seed=1).astype(np.int16))
    run = refused(_infer(inputs, inputs, bundle, "--dicom", "--overwrite"), inputs, inputs, inputs / "a_sr",
                  left=["a.nii.gz", "a_sr"])  # fmt: skip
    assert says(run, "holds the input"), run.error


# ---- names at the file system's limit ------------------------------------------------------------


def test_the_longest_legal_name_is_written_and_its_temporary_fits(bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    limit = os.pathconf(out_dir, "PC_NAME_MAX")
    name = "a" * (limit - len(".nii.gz")) + ".nii.gz"  # its temporary adds 21 bytes: shortened to fit
    r = runner.invoke(app, _infer(scan, out_dir / name, bundle))
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([name, name.replace(".nii.gz", ".json")])
    assert nib.load(out_dir / name).shape[:2] == (16, 12)


def test_the_longest_legal_dicom_folder_name_is_written(bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    name = "s" * (os.pathconf(out_dir, "PC_NAME_MAX") - len(".json"))  # its sidecar is at the limit
    r = runner.invoke(app, _infer(scan, out_dir / name, bundle, "--dicom"))
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([name, f"{name}.json"])
    assert len(list((out_dir / name).glob("IM_*.dcm"))) > 0


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda out, n: out / ("a" * (n - len(".nii.gz") + 1) + ".nii.gz"), "a name in it is 256 bytes"),
        (lambda out, n: out / ("d" * (n + 1)) / "sr.nii.gz", "a name in it is 256 bytes"),
        (lambda out, n: out / ("b" * (n - len(".nii.gz") - 3) + ".nii.gz"), "the file system allows 255"),
        (lambda out, n: out.joinpath(*["p" * 200] * 21, "sr.nii.gz"), "the path is"),
    ],
    ids=["name", "folder name", "uncertainty map name", "path"],
)
def test_a_name_past_the_limit_is_refused_in_one_line_before_work(make, problem, bundle, scan_with_sidecar):
    inputs, out_dir, scan = scan_with_sidecar
    limit = os.pathconf(out_dir, "PC_NAME_MAX")
    if limit != 255:
        pytest.skip(f"this file system allows {limit} bytes per name")
    target = make(out_dir, limit)
    extra = ["--uncertainty"] if "b" * 10 in target.name else []
    named = target.with_name(target.name.replace(".nii.gz", "_uncertainty.nii.gz")) if extra else target
    run = refused(_infer(scan, target, bundle, *extra), inputs, out_dir, named)
    assert says(run, problem), run.error


# ---- the same input twice --------------------------------------------------------------------------


def test_the_same_input_twice_in_a_cohort_is_processed_once(bundle, scan_with_sidecar, monkeypatch):
    inputs, out_dir, scan = scan_with_sidecar
    other = _nifti(inputs / "other.nii.gz", smooth_volume((16, 12, 5), seed=2).astype(np.int16))
    listed = inputs / "list.txt"
    listed.write_text("scan.nii.gz\nother.nii.gz\n")
    monkeypatch.chdir(inputs)
    r = runner.invoke(app, _infer([scan, Path("scan.nii.gz"), listed], out_dir, bundle))
    assert r.exit_code == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line]
    assert notes and all(line.startswith("volsr: warning: ") for line in notes), notes
    assert all("given more than once" in line and "processed once" in line for line in notes)
    records = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == ["other.nii.gz", "scan.nii.gz"]
    assert {r["status"] for r in records} == {"done"}
    assert "2 written, 0 skipped, 0 failed of 2" in r.output
    assert other.is_file()
