"""Hostile input through `volsr info / infer / infer --dicom / degrade / train`: every bad input or
failed write ends in exactly one `volsr: error: <file>: ...` line, exit status 2, no traceback,
nothing left in the output folder (hidden temporaries included) and the input's bytes unchanged."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, oblique_affine, smooth_volume
from typer.testing import CliRunner

from volsr.cli import app
from volsr.data import dicom_writer
from volsr.data.normalization import PercentileNormalizer
from volsr.networks import ResidualSR3D
from volsr.networks.checkpoint import save_checkpoint

runner = CliRunner()
EPI = SHARED_DATA / "dicom" / "epi_sagittal"
THICK = (1.0, 1.0, 2.0)


# ---- inputs: each returns the path to give the CLI and the path its error line must name ----------


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray = None, **codes) -> Path:
    img = nib.Nifti1Image(data, oblique_affine(THICK) if affine is None else affine)
    for key, value in codes.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def _good(folder: Path) -> Path:
    return _nifti(folder / "thick.nii.gz", smooth_volume((16, 12, 5)).astype(np.int16))


def _zero_pixdim(folder: Path, qform: int) -> Path:
    """2.4 mm slices whose pixdim[3] says 0 and no sform: the slice spacing is unknown."""
    path = folder / "zero_pixdim.nii"
    img = nib.Nifti1Image(smooth_volume((8, 8, 6)).astype(np.int16), np.diag([1.0, 1.0, 2.4, 1.0]))
    img.set_sform(None, code=0)
    img.set_qform(np.diag([1.0, 1.0, 2.4, 1.0]), code=qform)
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    raw[88:92] = struct.pack("<f", 0.0)  # pixdim[3]: nibabel's writer would not store it
    path.write_bytes(bytes(raw))
    return path


def _singular(columns: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        a = oblique_affine(THICK)
        if columns == "zero":
            a[:3, 2] = 0.0
        elif columns == "parallel":
            a[:3, 1] = a[:3, 0]
        else:
            a[0, 3] = np.nan
        img = nib.Nifti1Image(smooth_volume((8, 8, 5)).astype(np.float32), None)
        img.set_sform(a, code=1)  # sform only: nibabel cannot make a qform of a singular matrix
        nib.save(img, folder / f"singular_{columns}.nii.gz")
        return folder / f"singular_{columns}.nii.gz"

    return make


def _bytes(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return make


def _truncated_nifti(folder: Path) -> Path:
    full = _good(folder).read_bytes()
    (folder / "thick.nii.gz").unlink()
    return _bytes("cut.nii.gz", full[: len(full) // 2])(folder)


def _truncated_plain(folder: Path) -> Path:
    return _bytes("cut.nii", gzip.decompress(_good(folder).read_bytes())[:600])(folder)


def _array(name: str, data: np.ndarray) -> Callable[[Path], Path]:
    return lambda folder: _nifti(folder / name, data)


def _with_value(value: float) -> np.ndarray:
    data = smooth_volume((8, 8, 5)).astype(np.float32)
    data[3, 4, 2] = value
    return data


def _epi_copy(folder: Path) -> Path:
    if not EPI.is_dir():
        pytest.skip(f"{EPI} not present")
    dst = folder / "epi"
    shutil.copytree(EPI, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def _epi_missing_slice(folder: Path) -> tuple[Path, Path]:
    dst = _epi_copy(folder)
    (dst / "5001012.dcm").unlink()
    return dst, dst


def _epi_broken_file(how: str) -> Callable[[Path], tuple[Path, Path]]:
    def make(folder: Path) -> tuple[Path, Path]:
        dst = _epi_copy(folder)
        bad = dst / "5001030.dcm"
        raw = bad.read_bytes()
        bad.write_bytes(raw[:4000] if how == "truncated" else np.random.default_rng(0).bytes(len(raw)))
        return dst, bad

    return make


def _empty_folder(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def _folder_without_dicom(folder: Path) -> Path:
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not a scan\n")
    return folder / "notes"


#: name -> builder returning the input path (or ``(input, path named in the error)``), and the problem
BAD_INPUTS: dict[str, tuple[Callable, str]] = {
    "missing file": (lambda f: f / "nope.nii.gz", "no such file"),
    "empty file": (_bytes("empty.nii.gz", b""), "cannot be read"),
    "truncated nii.gz": (_truncated_nifti, "cannot be read"),
    "truncated nii": (_truncated_plain, "cannot be read"),
    "random bytes as nii.gz": (_bytes("fake.nii.gz", np.random.default_rng(1).bytes(4096)), "cannot be read"),
    "text as nii": (_bytes("fake.nii", b"hello\n" * 100), "cannot be read"),
    "text as nrrd": (_bytes("fake.nrrd", b"NRRD0004\ntype: nonsense\n\n"), "cannot be read"),
    "random bytes as mha": (_bytes("fake.mha", np.random.default_rng(2).bytes(2048)), "cannot be read"),
    "unsupported ending": (_bytes("scan.png", b"\x89PNG\r\n"), "unsupported file type"),
    "2-D": (_array("flat.nii.gz", np.ones((16, 12), np.float32)), "is 2-D"),
    "1-D": (_array("line.nii.gz", np.ones((1, 1, 20), np.float32)), "is 1-D"),
    "1x1x1": (_array("dot.nii.gz", np.ones((1, 1, 1), np.float32)), "is a single voxel"),
    "4-D without --volume": (_array("bold.nii.gz", np.ones((8, 8, 5, 3), np.float32)), "pick one"),
    "5-D": (_array("five.nii.gz", np.ones((8, 8, 5, 2, 2), np.float32)), "is 5-D"),
    "NaN voxel": (_array("nan.nii.gz", _with_value(np.nan)), "NaN or Inf"),
    "Inf voxel": (_array("inf.nii.gz", _with_value(np.inf)), "NaN or Inf"),
    "zero pixdim, no qform": (lambda f: _zero_pixdim(f, 0), "grid is unknown"),
    "zero pixdim, qform": (lambda f: _zero_pixdim(f, 1), "grid is unknown"),
    "singular affine (zero axis)": (_singular("zero"), "singular affine"),
    "singular affine (parallel axes)": (_singular("parallel"), "singular affine"),
    "NaN in affine": (_singular("nan"), "non-finite"),
    # info reads one scan; infer looks for a cohort of scans in a folder
    "empty folder": (_empty_folder, "without a DICOM series | holds no scans"),
    "folder without DICOM": (_folder_without_dicom, "without a DICOM series | holds no scans"),
    "DICOM slice missing": (_epi_missing_slice, "4.4 mm apart where the others lie 2.2 mm"),
    "DICOM truncated file": (_epi_broken_file("truncated"), "cannot be read as DICOM"),
    "DICOM random-bytes file": (_epi_broken_file("random"), "cannot be read as DICOM"),
}


# ---- the harness ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The default bundle's configs with a 4-feature network, so each run takes a fraction of a second."""
    root = tmp_path_factory.mktemp("bundle") / "tiny"
    shutil.copytree(REPO / "bundles" / "volsr_cnn3d" / "configs", root / "configs")
    save_checkpoint(
        root / "models" / "model.pt", ResidualSR3D(features=4, num_blocks=1), PercentileNormalizer(), step=1
    )
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Run:
    exit_code: int
    stderr: str
    output: str

    @property
    def error(self) -> str:
        """The one ``volsr: error:`` line."""
        return self.stderr.strip()


def says(run: Run, problem: str) -> bool:
    """Whether the error line states ``problem`` (``"a | b"``: either)."""
    return any(p in run.error for p in problem.split(" | "))


def refused(args: list[str], inputs: Path, out_dir: Path, named: Path, left=()) -> Run:
    """Run the CLI and check the promise: status 2, one error line naming ``named``, no traceback,
    ``out_dir`` holding only ``left``, the inputs' bytes unchanged. The caller checks what the line says
    (:func:`says`)."""
    before = _digest(inputs)
    r = runner.invoke(app, args)
    run = Run(r.exit_code, r.stderr, r.output)
    lines = r.stderr.splitlines()
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert len(lines) == 1 and lines[0].startswith(f"volsr: error: {named}: "), lines
    assert "Traceback" not in r.output and "Traceback" not in r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no escaped error
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(left), "debris in the output folder"
    assert _digest(inputs) == before, "the input changed"
    return run


def _input(tmp_path: Path, name: str) -> tuple[Path, Path, Path, Path]:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    made = BAD_INPUTS[name][0](inputs)
    scan, named = made if isinstance(made, tuple) else (made, made)
    return inputs, out_dir, scan, named


COMMANDS = {
    "info": lambda scan, out, bundle: ["info", str(scan)],
    "infer": lambda scan, out, bundle: ["infer", str(scan), "-o", str(out / "sr.nii.gz"), "--bundle",
                                        str(bundle), "--device", "cpu", "--no-progress"],
    "infer --dicom": lambda scan, out, bundle: ["infer", str(scan), "-o", str(out / "sr"), "--dicom",
                                                "--bundle", str(bundle), "--device", "cpu", "--no-progress"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_refused_in_one_line_leaving_nothing(name, command, bundle, tmp_path):
    inputs, out_dir, scan, named = _input(tmp_path, name)
    run = refused(COMMANDS[command](scan, out_dir, bundle), inputs, out_dir, named)
    assert says(run, BAD_INPUTS[name][1]), run.error


@pytest.mark.parametrize("name", ["NaN voxel", "singular affine (zero axis)", "zero pixdim, qform", "1x1x1"])
def test_degrade_refuses_the_same_inputs(name, tmp_path):
    inputs, out_dir, scan, named = _input(tmp_path, name)
    args = ["degrade", str(scan), "-o", str(out_dir / "low.nii.gz"), "--thickness", "4", "--axis", "2"]
    run = refused(args, inputs, out_dir, named)
    assert says(run, BAD_INPUTS[name][1]), run.error


def test_info_on_a_singular_affine_reports_no_made_up_spacing(tmp_path):
    inputs, out_dir, scan, named = _input(tmp_path, "singular affine (zero axis)")
    run = refused(["info", str(scan)], inputs, out_dir, named)
    assert says(run, "singular affine"), run.error
    assert "RANone" not in run.output and "x 0 mm" not in run.output


# ---- failed writes -------------------------------------------------------------------------------


def _good_input(tmp_path: Path) -> tuple[Path, Path, Path]:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    return inputs, out_dir, _good(inputs)


def _failing_nifti_write(code: int, monkeypatch) -> None:
    def save(image, filename):  # half the file is on disk when the error comes
        Path(filename).write_bytes(b"partial")
        raise OSError(code, __import__("os").strerror(code), str(filename))

    monkeypatch.setattr(nib, "save", save)


def _failing_dicom_write(code: int, monkeypatch) -> None:
    real = dicom_writer._write_slice

    def write(plane, tags, path):
        if path.name == "IM_00003.dcm":
            raise OSError(code, __import__("os").strerror(code), str(path))
        real(plane, tags, path)

    monkeypatch.setattr(dicom_writer, "_write_slice", write)


@pytest.mark.parametrize(
    "code, problem", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")]
)
@pytest.mark.parametrize("dicom", [False, True], ids=["nifti", "dicom"])
def test_a_failed_write_names_the_output_and_leaves_nothing(
    code, problem, dicom, bundle, tmp_path, monkeypatch
):
    inputs, out_dir, scan = _good_input(tmp_path)
    (_failing_dicom_write if dicom else _failing_nifti_write)(code, monkeypatch)
    command = "infer --dicom" if dicom else "infer"
    args = COMMANDS[command](scan, out_dir, bundle)
    named = out_dir / ("sr" if dicom else "sr.nii.gz")
    run = refused(args, inputs, out_dir, named)
    assert says(run, f"cannot be written: {problem}"), run.error


def test_degrade_disk_full_names_the_output(tmp_path, monkeypatch):
    inputs, out_dir, scan = _good_input(tmp_path)
    _failing_nifti_write(errno.ENOSPC, monkeypatch)
    args = ["degrade", str(scan), "-o", str(out_dir / "low.nii.gz"), "--kspace", "0.5"]
    run = refused(args, inputs, out_dir, out_dir / "low.nii.gz")
    assert says(run, "No space left on device"), run.error


def test_a_failed_sidecar_write_takes_the_image_with_it(bundle, tmp_path, monkeypatch):
    inputs, out_dir, scan = _good_input(tmp_path)
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.endswith(".tmp") and self.parent == out_dir:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    args = COMMANDS["infer"](scan, out_dir, bundle)
    run = refused(args, inputs, out_dir, out_dir / "sr.json")
    assert says(run, "No space left on device"), run.error


def test_an_unwritable_place_names_the_output_not_a_temporary(bundle, tmp_path):
    inputs, out_dir, scan = _good_input(tmp_path)
    target = Path("/proc/volsr_reliability_test.nii.gz")
    args = COMMANDS["infer"](scan, out_dir, bundle)
    args[3] = str(target)  # -o
    run = refused(args, inputs, out_dir, target)
    assert says(run, "cannot be written"), run.error
    assert ".tmp" not in run.stderr


def test_an_existing_output_is_kept_without_overwrite(bundle, tmp_path):
    inputs, out_dir, scan = _good_input(tmp_path)
    (out_dir / "sr.nii.gz").write_bytes(b"keep me")
    run = refused(
        COMMANDS["infer"](scan, out_dir, bundle), inputs, out_dir, out_dir / "sr.nii.gz", left=["sr.nii.gz"]
    )
    assert says(run, "already exists"), run.error
    assert (out_dir / "sr.nii.gz").read_bytes() == b"keep me"


def test_a_second_writer_never_replaces_the_first(bundle, tmp_path, monkeypatch):
    """Both pass the existence check; the first to finish keeps the name, the second fails."""
    inputs, out_dir, scan = _good_input(tmp_path)
    real = nib.save

    def save(image, filename):
        real(image, filename)
        (out_dir / "sr.nii.gz").write_bytes(b"the other writer's result")  # it finished first

    monkeypatch.setattr(nib, "save", save)
    run = refused(
        COMMANDS["infer"](scan, out_dir, bundle), inputs, out_dir, out_dir / "sr.nii.gz", left=["sr.nii.gz"]
    )
    assert says(run, "already exists"), run.error
    assert (out_dir / "sr.nii.gz").read_bytes() == b"the other writer's result"


def test_a_second_dicom_writer_never_replaces_the_first(bundle, tmp_path, monkeypatch):
    inputs, out_dir, scan = _good_input(tmp_path)
    real = dicom_writer._replace_folder

    def replace(out, tmp, *args):
        out.mkdir()
        (out / "IM_00001.dcm").write_bytes(b"the other writer's slice")
        return real(out, tmp, *args)

    monkeypatch.setattr(dicom_writer, "_replace_folder", replace)
    run = refused(
        COMMANDS["infer --dicom"](scan, out_dir, bundle), inputs, out_dir, out_dir / "sr", left=["sr"]
    )
    assert says(run, "already exists"), run.error
    assert (out_dir / "sr" / "IM_00001.dcm").read_bytes() == b"the other writer's slice"


def test_an_isotropic_input_is_refused_rather_than_silently_changed(bundle, tmp_path):
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    iso = smooth_volume((12, 12, 12)).astype(np.int16)
    scan = _nifti(inputs / "iso.nii.gz", iso, oblique_affine((1.0, 1.0, 1.0)))
    run = refused(COMMANDS["infer"](scan, out_dir, bundle), inputs, out_dir, scan)
    assert says(run, "nothing to super-resolve"), run.error
    args = COMMANDS["infer"](scan, out_dir, bundle) + ["--scale", "1", "1", "1"]
    run = refused(args, inputs, out_dir, scan)
    assert says(run, "nothing to super-resolve"), run.error


# ---- training ------------------------------------------------------------------------------------


def _train_bundle(tmp_path: Path, step: int) -> Path:
    root = tmp_path / "train_bundle"
    shutil.copytree(REPO / "bundles" / "volsr_cnn3d" / "configs", root / "configs")
    config = json.loads((REPO / "bundles" / "volsr_cnn3d" / "configs" / "train.json").read_text())
    config.update(data=str(tmp_path / "data"), val_data=[])
    (root / "configs" / "train.json").write_text(json.dumps(config))
    net = ResidualSR3D(features=4, num_blocks=1)
    for name in ("checkpoint.pt", "model.pt"):
        save_checkpoint(root / "models" / name, net, PercentileNormalizer(), step, config={"steps": step})
    return root


@pytest.mark.parametrize("steps", [3, 5])
def test_resume_with_nothing_to_train_is_refused_and_model_kept(steps, tmp_path):
    root = _train_bundle(tmp_path, step=5)
    models = root / "models"
    (models / ".model.pt.0badf00d.tmp").write_bytes(b"killed half-way")  # a save killed earlier
    (models / "tmpab12cd34.tmp").write_bytes(b"killed half-way")
    kept = {name: (models / name).read_bytes() for name in ("checkpoint.pt", "model.pt")}
    args = ["train", "--bundle", str(root), "--resume", "--steps", str(steps), "--device", "cpu"]
    run = refused(
        args, root / "configs", models, models / "checkpoint.pt", left=["checkpoint.pt", "model.pt"]
    )
    assert says(run, "leave nothing to train"), run.error
    assert {name: (models / name).read_bytes() for name in kept} == kept
