"""The rest of `volsr infer`'s surface: a bad bundle checkpoint, a device that is not here, bad
numbers in options, unreadable files, a grid too large for the memory. Each ends in one
`volsr: error:` line, exit status 2, no traceback, no usage box, nothing written, inputs unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_tiny_bundle, smooth_volume
from test_cli_refusals import _digest, _nifti, refused, runner, says

from volsr.cli import app


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path, Path]:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    return inputs, out_dir, _nifti(inputs / "scan.nii.gz", smooth_volume((16, 12, 5)).astype(np.int16))


def _infer(scan: Path, out_dir: Path, bundle: Path, *extra: str) -> list[str]:
    return ["infer", str(scan), "-o", str(out_dir / "sr.nii.gz"), "--bundle", str(bundle), "--no-progress",
            *extra]  # fmt: skip


def option_refused(args: list[str], inputs: Path, out_dir: Path, option: str) -> str:
    """Like :func:`test_cli_refusals.refused` for an error that names an option, not a file: status 2,
    one ``volsr: error:`` line naming ``option``, no traceback or usage box, nothing written."""
    before = _digest(inputs)
    r = runner.invoke(app, args)
    lines = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert len(lines) == 1 and lines[0].startswith("volsr: error: ") and option in lines[0], lines
    assert "Traceback" not in r.output and "╭" not in r.output and "Usage:" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert list(out_dir.iterdir()) == [] and _digest(inputs) == before
    return lines[0]


# ---- a bundle whose weights do not load --------------------------------------------------------------


def _bad_weights(how: str):
    def make(root: Path) -> Path:
        weights = root / "models" / "model.pt"
        raw = weights.read_bytes()
        if how == "truncated":
            weights.write_bytes(raw[: len(raw) // 2])
        elif how == "random bytes":
            weights.write_bytes(np.random.default_rng(0).bytes(4096))
        elif how == "empty":
            weights.write_bytes(b"")
        elif how == "another program's":
            torch.save({"encoder.weight": torch.zeros(3, 3), "epoch": 7}, weights)
        return weights

    return make


@pytest.mark.parametrize("how", ["truncated", "random bytes", "empty", "another program's"])
def test_a_bad_model_pt_is_one_line_naming_it(how, folders, tmp_path):
    inputs, out_dir, scan = folders
    root = make_tiny_bundle(tmp_path / "bad_bundle")
    weights = _bad_weights(how)(root)
    run = refused(_infer(scan, out_dir, root, "--device", "cpu"), inputs, out_dir, weights.resolve())
    assert says(run, "is not a volsr checkpoint that loads"), run.error


# ---- devices -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device, problem",
    [
        ("foo", "'foo' is not a device"),
        ("cuda:99", "cuda"),
        ("meta", "volsr runs on cpu or cuda"),
        pytest.param(
            "cuda",
            "no CUDA GPU is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_a_device_that_is_not_here_is_one_line(device, problem, folders, bundle):
    inputs, out_dir, scan = folders
    line = option_refused(_infer(scan, out_dir, bundle, "--device", device), inputs, out_dir, device)
    assert problem in line, line


# ---- bad numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--spacing", "0", "1", "1"], "--spacing"),
        (["--spacing", "-1", "1", "1"], "--spacing"),
        (["--spacing", "nan", "1", "1"], "--spacing"),
        (["--spacing", "inf", "1", "1"], "--spacing"),
        (["--scale", "0", "2", "2"], "--scale"),
        (["--scale", "nan", "1", "2"], "--scale"),
        (["--overlap", "1.5"], "--overlap"),
        (["--overlap", "-0.1"], "--overlap"),
        (["--overlap", "nan"], "--overlap"),
        (["--roi", "0", "8", "8"], "--roi"),
        (["--roi", "-4", "8", "8"], "--roi"),
        (["--max-memory", "lots"], "--max-memory"),
        (["--max-memory", "0"], "--max-memory"),
        (["--adapt", "-1"], "--adapt"),
        # what the option parser refuses: a framed usage box by default, one line here
        (["--spacing", "abc", "1", "1"], "--spacing"),
        (["--spacing", "1"], "--spacing"),
        (["--roi", "1.5", "8", "8"], "--roi"),
        (["--bogus"], "--bogus"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_numbers_in_options_are_one_line(extra, option, folders, bundle):
    inputs, out_dir, scan = folders
    option_refused(_infer(scan, out_dir, bundle, "--device", "cpu", *extra), inputs, out_dir, option)


def test_a_missing_argument_is_one_line_not_a_usage_box(tmp_path):
    r = runner.invoke(app, ["infer"])
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["volsr: error: Missing argument 'scans'. (see 'volsr infer --help')"]


# ---- unreadable files ------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_scan_is_one_line(folders, bundle):
    inputs, out_dir, scan = folders
    scan.chmod(0)
    try:
        run = refused(_infer(scan, out_dir, bundle, "--device", "cpu"), inputs, out_dir, scan)
    finally:
        scan.chmod(0o644)
    assert says(run, "cannot be read: Permission denied"), run.error


def test_a_scan_the_system_will_not_read_is_one_line(folders, bundle, monkeypatch):
    """The same refusal where the tests run as root: the system's PermissionError, raised by the reader."""
    inputs, out_dir, scan = folders
    real = nib.load

    def load(filename, *args, **kwargs):
        if Path(filename) == scan:
            raise PermissionError(13, "Permission denied", str(filename))
        return real(filename, *args, **kwargs)

    monkeypatch.setattr(nib, "load", load)
    run = refused(_infer(scan, out_dir, bundle, "--device", "cpu"), inputs, out_dir, scan)
    assert says(run, "cannot be read: Permission denied"), run.error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_weights_are_one_line(folders, tmp_path):
    inputs, out_dir, scan = folders
    root = make_tiny_bundle(tmp_path / "locked")
    weights = root / "models" / "model.pt"
    weights.chmod(0)
    try:
        run = refused(_infer(scan, out_dir, root, "--device", "cpu"), inputs, out_dir, weights.resolve())
    finally:
        weights.chmod(0o644)
    assert says(run, "cannot be read: Permission denied"), run.error


# ---- memory before work --------------------------------------------------------------------------------


def test_a_spacing_typo_is_refused_before_anything_is_allocated(folders, bundle, monkeypatch):
    """`--spacing 0.01` on a 16 x 12 x 10 mm field of view asks for 1600 x 1200 x 1000 voxels: about
    70 GB before the network runs; refused naming the grid, what it needs and what there is."""
    inputs, out_dir, scan = folders
    from volsr.inference import sliding_window

    def never(*args, **kwargs):
        raise AssertionError("the grid was allocated")

    monkeypatch.setattr(sliding_window, "regrid_input", never)
    args = _infer(scan, out_dir, bundle, "--device", "cpu", "--spacing", "0.01", "0.01", "0.01",
                  "--max-memory", "16G")  # fmt: skip
    run = refused(args, inputs, out_dir, scan)
    assert says(run, "the output grid of 1600 x 1200 x 1000 voxels (0.01 x 0.01 x 0.01 mm)"), run.error
    assert says(run, "GiB of memory; 16 GiB is the --max-memory limit"), run.error


def test_the_available_memory_is_the_default_limit(folders, bundle, monkeypatch):
    inputs, out_dir, scan = folders
    from volsr.inference import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)  # 1 MiB free
    args = _infer(scan, out_dir, bundle, "--device", "cpu", "--spacing", "0.25", "0.25", "0.25")
    run = refused(args, inputs, out_dir, scan)
    assert says(run, "1 MiB is available now (--max-memory sets the limit)"), run.error
    assert says(run, "64 x 48 x 40 voxels"), run.error


def test_a_grid_within_the_limit_runs(folders, bundle):
    _, out_dir, scan = folders
    r = runner.invoke(app, _infer(scan, out_dir, bundle, "--device", "cpu", "--max-memory", "2G"))
    assert r.exit_code == 0, r.stderr
    assert (out_dir / "sr.nii.gz").is_file()
    shutil.rmtree(out_dir)


@pytest.mark.parametrize("command", ["train", "evaluate", "demo"])
def test_every_command_refuses_a_device_that_is_not_here(command, folders, bundle):
    inputs, out_dir, scan = folders
    args = {
        "train": ["train", "--bundle", str(bundle), "--steps", "1"],
        "evaluate": ["evaluate", str(scan), "--bundle", str(bundle), "-o", str(out_dir / "eval")],
        "demo": ["demo", "-o", str(out_dir / "demo"), "--bundle", str(bundle)],
    }[command]
    line = option_refused([*args, "--device", "foo"], inputs, out_dir, "--device")
    assert "'foo' is not a device" in line, line
