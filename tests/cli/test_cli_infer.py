"""`volsr infer`, `evaluate` and `demo` through the CLI runner: exit codes, outputs, geometry."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_tiny_bundle, oblique_affine, smooth_volume, write_thick_scan
from typer.testing import CliRunner

from volsr.cli import app
from volsr.geometry.grids import fov_corners

runner = CliRunner()


@pytest.fixture
def bundle(tmp_path):
    """A copy of the default bundle's configs with a tiny network, so tests stay fast."""
    return make_tiny_bundle(tmp_path / "tiny_bundle")


@pytest.fixture
def scan(tmp_path):
    return write_thick_scan(tmp_path)


def test_infer_default_output_in_cwd_isotropic_and_fov_kept(bundle, scan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["infer", str(scan), "--bundle", str(bundle), "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = nib.load(tmp_path / "thick_sr.nii.gz")
    assert out.shape == (16, 12, 10)
    src = nib.load(scan)
    assert np.allclose(fov_corners(out.affine, out.shape), fov_corners(src.affine, src.shape), atol=1e-4)


def test_infer_adapt_writes_the_same_world_grid(bundle, scan, tmp_path):
    plain, adapted = tmp_path / "plain.nii.gz", tmp_path / "adapted.nii.gz"
    for dst, extra in ((plain, []), (adapted, ["--adapt", "3"])):
        args = ["infer", str(scan), "-o", str(dst), "--bundle", str(bundle), "--device", "cpu"]
        r = runner.invoke(app, [*args, "--no-progress", *extra])
        assert r.exit_code == 0, r.output
    a, b = nib.load(plain), nib.load(adapted)
    assert a.shape == b.shape == (16, 12, 10)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    assert not np.allclose(a.get_fdata(), b.get_fdata())  # the tuned copy is what ran


def test_infer_adapt_on_a_scan_without_a_thick_axis_names_it_and_writes_nothing(bundle, tmp_path):
    iso = tmp_path / "iso.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((12, 12, 12)).astype(np.float32), np.eye(4)), iso)
    dst = tmp_path / "out.nii.gz"
    args = ["infer", str(iso), "-o", str(dst), "--bundle", str(bundle), "--device", "cpu", "--adapt", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert f"{iso}: self-supervised adaptation needs one thick axis" in r.output
    assert not dst.exists()


def test_infer_spacing_keeps_an_axis_at_its_own_spacing(bundle, scan, tmp_path):
    dst = tmp_path / "o.nii.gz"
    r = runner.invoke(
        app,
        [
            "infer",
            str(scan),
            "-o",
            str(dst),
            "--bundle",
            str(bundle),
            "--device",
            "cpu",
            "--spacing",
            "0.5",
            "1",
            "2",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert nib.load(dst).shape == (32, 12, 5)


def test_infer_bad_input_is_one_line_and_exit_2(bundle, tmp_path):
    r = runner.invoke(app, ["infer", str(tmp_path / "missing.nii.gz"), "--bundle", str(bundle)])
    assert r.exit_code == 2
    assert "missing.nii.gz" in r.output and "Traceback" not in r.output


def test_infer_refuses_spacing_and_scale_together(bundle, scan):
    r = runner.invoke(
        app,
        ["infer", str(scan), "--bundle", str(bundle), "--spacing", "1", "1", "1", "--scale", "1", "1", "2"],
    )
    assert r.exit_code == 2 and "mutually exclusive" in r.output


def test_infer_skip_existing_leaves_output_untouched(bundle, scan, tmp_path):
    dst = tmp_path / "o.nii.gz"
    dst.write_bytes(b"old")
    r = runner.invoke(app, ["infer", str(scan), "-o", str(dst), "--bundle", str(bundle), "--skip-existing"])
    assert r.exit_code == 0 and "skipped" in r.output and dst.read_bytes() == b"old"


def test_evaluate_reports_baselines_and_bundle(bundle, tmp_path):
    hr = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24)).astype(np.float32), np.eye(4)), hr)
    out = tmp_path / "report"
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(hr),
            "--factor",
            "3",
            "--axis",
            "2",
            "--bundle",
            str(bundle),
            "--device",
            "cpu",
            "--tta",
            "--adapt",
            "2",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["scans"]["hr"]["methods"]
    assert {
        "linear",
        "cubic",
        "tiny_bundle",
        "tiny_bundle+tta",
        "tiny_bundle+adapt",
        "tiny_bundle+adapt+tta",
    } <= set(methods)
    # an untrained (identity) network gives the cubic spline it refines, averaged or not, and scored as
    # `volsr infer` runs it: projected onto the volumes whose thick slices are the input (data
    # consistency, on by default), a set the reference belongs to, so the projection brings it closer
    for name in ("tiny_bundle", "tiny_bundle+tta"):
        assert methods[name]["consistency"] < 1e-5 < methods["cubic"]["consistency"]
        assert methods[name]["psnr"] > methods["cubic"]["psnr"]
    assert abs(methods["tiny_bundle+tta"]["psnr"] - methods["tiny_bundle"]["psnr"]) < 0.05
    assert (out / "hr.png").stat().st_size > 1000 and "| hr | cubic |" in (out / "summary.md").read_text()


def test_train_init_fine_tunes_from_a_checkpoint(bundle, tmp_path):
    """`volsr train --init` starts from the given weights (grown to the config's grid-encoding network)."""
    config = json.loads((bundle / "configs" / "train.json").read_text())
    config["config"].update(
        network={"name": "residual_sr", "arguments": {"features": 4, "num_blocks": 1, "grid_channels": 9}},
        patch_size=12,
        batch_size=1,
        zoom=[1.0, 1.0],
        val_data=[],
        progress=False,
    )
    (bundle / "configs" / "train.json").write_text(json.dumps(config))
    data = tmp_path / "hr"
    data.mkdir()
    nib.save(nib.Nifti1Image(smooth_volume((30, 30, 30)).astype(np.float32), np.eye(4)), data / "a.nii.gz")
    init = bundle / "models" / "model.pt"  # the tiny image-only network of the fixture
    args = ["train", "--bundle", bundle, "--data", data, "--steps", 1, "--device", "cpu"]
    missing = runner.invoke(app, [str(a) for a in [*args, "--init", tmp_path / "nope.pt"]])
    assert missing.exit_code != 0 and "nope.pt" in missing.output
    tuned = ["--init", init, "--lr", 1e-5, "--warmup", 0, "--pixel-loss", "mse"]
    result = runner.invoke(app, [str(a) for a in [*args, *tuned]])
    assert result.exit_code == 0, result.output
    assert f"initialised from {init}" in result.output
    from volsr.networks.checkpoint import load_checkpoint

    net, _, ckpt = load_checkpoint(bundle / "models" / "model.pt")
    assert ckpt["step"] == 1 and net.config.grid_channels == 9
    state = torch.load(bundle / "models" / "checkpoint.pt", weights_only=False)
    stored = state["config"]
    assert (stored["lr"], stored["warmup"], stored["pixel_loss"]) == (1e-5, 0, "mse")

    # --resume keeps the checkpoint's schedule and loss (the config: lr 1e-3, warm-up 200, 21000 steps, l1)
    resume = ["train", "--bundle", bundle, "--data", data, "--resume"]
    done = runner.invoke(app, [str(a) for a in resume])  # the stored 1 step is done: nothing to train
    assert done.exit_code == 2 and "leave nothing to train" in done.stderr, done.output
    resumed = runner.invoke(app, [str(a) for a in [*resume, "--steps", 2]])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output
    state = torch.load(bundle / "models" / "checkpoint.pt", weights_only=False)
    assert (state["config"]["lr"], state["config"]["warmup"], state["config"]["steps"]) == (1e-5, 0, 2)
    assert state["config"]["pixel_loss"] == "mse"


def test_train_pixel_loss_choices_are_the_trainers_losses():
    from volsr.cli import PixelLoss
    from volsr.training.trainer import PIXEL_LOSSES

    assert {choice.value for choice in PixelLoss} == set(PIXEL_LOSSES)


def test_infer_series_all_writes_each_usable_series_and_names_the_one_it_skips(bundle, tmp_path):
    from scans import write_dicom_series

    study, out = tmp_path / "study", tmp_path / "out"
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    arr = (smooth_volume((12, 10, 5)) * 100).astype(np.int16)
    uids = [f"1.2.826.0.1.3680043.2.1125.8.{k}" for k in (1, 2, 3)]
    write_dicom_series(study, arr, affine, uids[0], "T2 ax/TSE", {"0020|0011": "3"})
    write_dicom_series(study, arr[:, :, :1], affine, uids[1], "Localizer", {"0020|0011": "2"})
    write_dicom_series(study, arr + 7, affine, uids[2], "T1 sag", {"0020|0011": "1"})
    args = ["infer", str(study), "--series", "all", "-o", str(out), "--bundle", str(bundle), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2  # one series could not be used
    errors = [line for line in r.stderr.splitlines() if line.startswith("volsr: error:")]
    assert len(errors) == 1 and f"series {uids[1]}" in errors[0] and "2-D" in errors[0]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["manifest.jsonl", "study_1_T1_sag_sr.json", "study_1_T1_sag_sr.nii.gz",
                       "study_3_T2_ax_TSE_sr.json", "study_3_T2_ax_TSE_sr.nii.gz"]  # fmt: skip
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["series"], r["status"]) for r in records) == sorted(
        zip(uids, ["done", "failed", "done"], strict=True)
    )
    t2 = json.loads((out / "study_3_T2_ax_TSE_sr.json").read_text())
    assert t2["Input"]["SeriesInstanceUID"] == uids[0] and t2["Output"]["shape"] == [12, 10, 15]
    t1 = nib.load(out / "study_1_T1_sag_sr.nii.gz")
    assert np.allclose(fov_corners(t1.affine, t1.shape), fov_corners(affine, (12, 10, 5)), atol=1e-3)
    bad = runner.invoke(app, ["infer", str(study), "--series", "all", "-o", str(tmp_path / "one.nii.gz")])
    assert bad.exit_code == 2 and "give --output a folder" in bad.stderr


def test_infer_dicom_writes_a_series_folder_on_the_scans_field_of_view(bundle, scan, tmp_path):
    import SimpleITK as sitk

    from volsr.data.io import load_image

    out = tmp_path / "pacs" / "thick_sr"
    r = runner.invoke(app, ["infer", str(scan), "--dicom", "--modality", "CT", "-o", str(out),
                            "--bundle", str(bundle), "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["thick_sr", "thick_sr.json"]
    assert len(list(out.iterdir())) == 10  # 5 slices of 2 mm -> 10 of 1 mm
    series, source = load_image(out), nib.load(scan)
    assert series.shape == (1, 16, 12, 10)
    np.testing.assert_allclose(
        np.sort(fov_corners(series.affine.numpy(), (16, 12, 10)), axis=0),
        np.sort(fov_corners(source.affine, source.shape), axis=0),
        atol=1e-3,
    )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / "IM_00001.dcm"))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0008|0060").strip() == "CT"
    assert "with tiny_bundle" in reader.GetMetaData("0008|2111")  # DerivationDescription
    sidecar = json.loads((tmp_path / "pacs" / "thick_sr.json").read_text())
    assert sidecar["Output"]["shape"] == [16, 12, 10]

    pet = runner.invoke(app, ["infer", str(scan), "--dicom", "--modality", "PT", "-o", str(tmp_path / "pt"),
                              "--bundle", str(bundle), "--no-progress"])  # fmt: skip
    assert pet.exit_code == 2 and "MR or CT" in pet.stderr and not (tmp_path / "pt").exists()

    same = runner.invoke(app, ["infer", str(scan), "--dicom", "-o", str(out), "--bundle", str(bundle)])
    assert same.exit_code == 2 and same.stderr.count("\n") == 1 and "already exists" in same.stderr

    (out / "notes.txt").write_text("mine")  # now a folder of the user's: the series goes inside it
    again = runner.invoke(app, ["infer", str(scan), "--dicom", "-o", str(out), "--overwrite",
                                "--bundle", str(bundle), "--no-progress"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 13  # 10 + notes + 2
    assert len(list((out / "thick_sr").iterdir())) == 10


def test_infer_series_all_dicom_writes_a_series_folder_per_series(bundle, tmp_path):
    from scans import write_dicom_series

    study = tmp_path / "study"
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    arr = (smooth_volume((12, 10, 5)) * 100).astype(np.int16)
    write_dicom_series(study, arr, affine, "1.2.826.0.1.3680043.2.1125.8.1", "T2 ax", {"0020|0011": "3"})
    write_dicom_series(study, arr, affine, "1.2.826.0.1.3680043.2.1125.8.2", "T1 sag", {"0020|0011": "1"})
    out = tmp_path / "out"  # --output is the folder for the series folders
    r = runner.invoke(app, ["infer", str(study), "--series", "all", "--dicom", "-o", str(out),
                            "--bundle", str(bundle), "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in out.iterdir() if p.name != "manifest.jsonl")
    assert written == [
        "study_1_T1_sag_sr",
        "study_1_T1_sag_sr.json",
        "study_3_T2_ax_sr",
        "study_3_T2_ax_sr.json",
    ]
    assert all(len(list((out / name).iterdir())) == 15 for name in written[::2])


def test_infer_kspace_consistency_keeps_the_acquired_band(bundle, tmp_path):
    """A scan with a half-size matrix, restored to the full grid with --consistency-model kspace:
    acquiring the output again with the same matrix gives the scan back."""
    from volsr.data.io import load_image
    from volsr.transforms.kspace import KSpaceTruncation

    full = tmp_path / "full.nii.gz"
    nib.save(
        nib.Nifti1Image(smooth_volume((24, 20, 16)).astype(np.float32), oblique_affine((1.0, 1.0, 1.0))), full
    )
    coarse = tmp_path / "coarse.nii.gz"
    r = runner.invoke(app, ["degrade", str(full), "-o", str(coarse), "--kspace", "0.5", "--axes", "0,1,2",
                            "--reduce-matrix"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.nii.gz"
    r = runner.invoke(app, ["infer", str(coarse), "-o", str(out), "--bundle", str(bundle), "--scale", "2",
                            "2", "2", "--consistency", "--consistency-model", "kspace", "--dtype", "float32",
                            "--device", "cpu", "--no-progress"])  # fmt: skip
    assert r.exit_code == 0, r.output
    lr, sr = load_image(coarse), load_image(out)
    assert sr.shape[1:] == (24, 20, 16)
    again = KSpaceTruncation(0.5, axes=(0, 1, 2), reduce_matrix=True)(sr)
    assert float((again - lr).abs().max()) < 1e-4 * float(lr.abs().max())
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["GeneratedBy"]["Options"]["consistency"] == "kspace"


def test_infer_uncertainty_writes_the_map_beside_the_output_and_evaluate_scores_it(bundle, scan, tmp_path):
    dst = tmp_path / "out" / "thick_sr.nii.gz"
    args = ["infer", str(scan), "-o", str(dst), "--bundle", str(bundle), "--device", "cpu", "--no-progress"]
    r = runner.invoke(app, [*args, "--uncertainty"])
    assert r.exit_code == 0, r.output
    out, umap = nib.load(dst), nib.load(tmp_path / "out" / "thick_sr_uncertainty.nii.gz")
    assert out.shape == umap.shape == (16, 12, 10)
    np.testing.assert_allclose(out.affine, umap.affine, atol=1e-6)
    assert json.loads((tmp_path / "out" / "thick_sr.json").read_text())["Uncertainty"]["File"] == (
        "thick_sr_uncertainty.nii.gz"
    )

    hr = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24)).astype(np.float32), np.eye(4)), hr)
    report = tmp_path / "report"
    r = runner.invoke(
        app,
        ["evaluate", str(hr), "--bundle", str(bundle), "--device", "cpu", "--uncertainty", "-o", str(report)],
    )
    assert r.exit_code == 0, r.output
    methods = json.loads((report / "summary.json").read_text())["scans"]["hr"]["methods"]
    # the untrained network is the identity in every view: a map of zeros, which orders nothing
    assert methods["tiny_bundle+tta"]["uncertainty_spearman"] == 0.0
    assert "uncertainty_spearman" not in methods["tiny_bundle"]


@pytest.mark.parametrize("command", ["infer", "train", "evaluate", "degrade", "info", "demo"])
def test_help_at_80_columns_cuts_no_option_name(command):
    """Every option of the command appears whole in its --help on an 80-column terminal, and no line
    is wider than the terminal except an option's own name and value list."""
    import click
    import typer

    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    group = typer.main.get_command(app)
    for param in group.commands[command].params:
        if isinstance(param, click.Option):
            for name in param.opts + param.secondary_opts:
                assert name in r.output, (command, name)
    for line in r.output.splitlines():
        assert len(line) <= 80 or line.lstrip().startswith("-"), line


def test_evaluate_baseline_option_replaces_the_classical_methods(bundle, tmp_path):
    hr = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24)).astype(np.float32), np.eye(4)), hr)
    out = tmp_path / "report"
    args = ["evaluate", str(hr), "--kspace", "0.5", "--bundle", str(bundle), "--device", "cpu"]
    args += ["-o", str(out)]
    r = runner.invoke(app, [*args, "--baseline", "nearest", "--baseline", "fourier"])
    assert r.exit_code == 0, r.output
    methods = json.loads((out / "summary.json").read_text())["scans"]["hr"]["methods"]
    assert set(methods) == {"nearest", "fourier", "tiny_bundle"}
    r = runner.invoke(app, [*args, "--baseline", "bicubic"])
    assert r.exit_code == 2 and "bicubic" in r.output
