"""Smoke tests of the benchmark scripts' logic on tiny synthetic volumes (nothing is timed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import import_benchmark
from monai.data import MetaTensor

from volsr.transforms.protocol import KSpace, ThickSlices

common, quality, speed, speed_report, adaptation = (
    import_benchmark(m) for m in ("common", "quality", "speed", "speed_report", "adaptation")
)
crop, write_section = common.crop, common.write_section


def smooth_volume(shape=(24, 24, 24), seed: int = 0) -> MetaTensor:
    """A smooth blob phantom (a few gaussians) on a 1 mm grid: cubic beats nearest on it."""
    g = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    vol = np.zeros(shape, np.float32)
    for _ in range(6):
        c, s = g.uniform(4, min(shape) - 4, 3), g.uniform(3, 6)
        vol += g.uniform(0.5, 1.0) * np.exp(-((grid - c) ** 2).sum(-1) / (2 * s**2))
    return MetaTensor(torch.from_numpy(vol)[None] * 1000, affine=torch.eye(4, dtype=torch.float64))


def test_quality_rows_table_and_plot(tmp_path):
    volumes = {"blob": smooth_volume()}
    protocols = [
        ThickSlices(axis=2, factor=4.0),
        ThickSlices(axis=0, factor=2.0),
    ]
    rows = quality.run(volumes, protocols, {}, ["nearest", "linear", "cubic"], log=None)
    assert len(rows) == 2 * 3
    by = {(r["degradation"], r["method"]): r for r in rows}
    for deg in {r["degradation"] for r in rows}:
        assert by[(deg, "cubic")]["psnr"] > by[(deg, "nearest")]["psnr"]
        assert by[(deg, "cubic")]["gain_psnr"] == 0.0
        assert np.isfinite(by[(deg, "cubic")]["ssim"])

    table = quality.markdown_table(rows).strip().splitlines()
    assert table[0] == "| volume | degradation | nearest | linear | cubic |"
    assert len(table) == 2 + 2 + 1  # header, rule, one row per (volume, degradation), mean gain
    assert table[2].startswith("| blob | thick x4 axis 2 boxcar |")
    assert "**" in table[2]  # the best PSNR of the row is bold

    png = quality.plot_gain(rows, tmp_path / "gain.png")
    assert png.stat().st_size > 0


def test_quality_protocols_and_quick():
    full, quick = quality.protocols(), quality.protocols(quick=True)
    thick = [p for p in full if isinstance(p, ThickSlices) and p.spacing_factor == 1.0]
    assert {(p.axis, p.factor) for p in thick} == {(a, f) for a in (0, 1, 2) for f in (2.0, 4.0)}
    gaps = [p for p in full if isinstance(p, ThickSlices) and p.spacing_factor > 1.0]
    assert [(p.axis, p.factor * p.spacing_factor) for p in gaps] == [(2, pytest.approx(4.0))]
    if quality.kspace_available():
        kspace = sorted((round(p.fraction, 3), p.axes) for p in full if isinstance(p, KSpace))
        assert kspace == [(0.333, (0, 1, 2)), (0.5, (0, 1, 2)), (0.5, (2,))]
        assert "fourier" in quality.baselines()
    assert len(quick) == 2


def test_find_bundles_only_with_weights(tmp_path):
    (tmp_path / "a" / "models").mkdir(parents=True)
    (tmp_path / "a" / "models" / "model.pt").write_bytes(b"")
    (tmp_path / "b" / "configs").mkdir(parents=True)
    assert list(quality.find_bundles(["all"], tmp_path)) == ["a"]
    with pytest.raises(SystemExit):
        quality.find_bundles(["b"], tmp_path)


def test_crop_keeps_world_coordinates():
    vol = smooth_volume((10, 12, 14))
    vol.affine[:3, 3] = torch.tensor([5.0, -3.0, 2.0], dtype=torch.float64)
    out = crop(vol, (4, 4, 4))
    assert tuple(out.shape[1:]) == (4, 4, 4)
    start = np.array([3, 4, 5])
    np.testing.assert_allclose(np.asarray(out.affine)[:3, 3], start + [5.0, -3.0, 2.0])
    assert torch.equal(out[0, 0, 0, 0], vol[0, 3, 4, 5])


def test_write_section_replaces_between_markers(tmp_path):
    md = tmp_path / "benchmarks.md"
    write_section(md, "quality", "one")
    write_section(md, "speed", "two")
    write_section(md, "quality", "three")
    text = md.read_text()
    assert "one" not in text and text.count("<!-- quality:begin -->") == 1
    assert text.index("three") < text.index("two")


def test_speed_window_count_and_memory_case_report():
    assert speed.window_count((64, 64, 64), (96, 96, 96), 0.25) == (1, 1.0)
    n, frac = speed.window_count((160, 160, 151), (96, 96, 96), 0.25)
    assert n == 8 and frac > 1.5
    # MONAI pads a volume smaller than its roi: the default recomputes the padding
    assert speed.window_count((64, 64, 64), (96, 96, 96), 0.25, pad=True)[1] == pytest.approx(1.5**3)
    result = {
        "command": "x",
        "date": "d",
        "quick": True,
        "hardware": {"cpu": "c", "cores_usable": 2, "torch": "t", "cpu_capability": "AVX2", "monai": "m"},
        "weights": "w",
        "json": "speed.json",
        "devices": {},
        "memory": {
            "shape": [8, 8, 2],
            "scale": [1, 1, 4],
            "output_shape": [8, 8, 8],
            "cases": {"c_super_resolve": {"peak_rss_gib": 1.0, "rss_before_gib": 0.5, "seconds": 1.0}},
        },
    }
    text = speed_report.section(result)
    assert "| c_super_resolve | 1.00 |" in text
    assert "| cpu: 8x8x8 output under 4 GB peak RSS | 1.00 GiB (1.07 GB) | met |" in text
    json.dumps(result)


def test_quality_main_quick_writes_json_and_section(tmp_path):
    import nibabel as nib

    data = tmp_path / "val"
    data.mkdir()
    nib.save(nib.Nifti1Image(smooth_volume()[0].numpy(), np.eye(4)), data / "blob.nii.gz")
    out = tmp_path / "docs" / "benchmarks"
    result = quality.main(
        ["--data", str(data), "--quick", "--bundles", "none", "--out", str(out), "--no-plot"]
    )
    assert json.loads((out / "quality.json").read_text())["volumes"] == {"blob": [24, 24, 24]}
    assert {r["method"] for r in result["rows"]} == set(quality.baselines())
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "<!-- quality:begin -->" in text and "| blob |" in text


def test_amp_accuracy_scores_both_precisions_and_skips_a_missing_volume(tmp_path):
    import nibabel as nib

    from volsr.data.normalization import PercentileNormalizer
    from volsr.networks import ResidualSR3D

    path = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24)).as_tensor()[0].numpy(), np.eye(4)), path)
    net = ResidualSR3D(features=4, num_blocks=1)  # zero residual: autocast cannot change the output
    acc = speed.amp_accuracy(net, PercentileNormalizer(), torch.device("cpu"), path)
    assert acc["change_db"] == pytest.approx(acc["psnr_autocast"] - acc["psnr_float32"])
    assert abs(acc["change_db"]) < 1e-6 and acc["psnr_float32"] > 20
    missing = tmp_path / "no.nii.gz"
    assert speed.amp_accuracy(net, PercentileNormalizer(), torch.device("cpu"), missing) is None


def test_speed_targets_give_each_verdict():
    device = {
        "ratio_c_over_b": 1.2,
        "cases": {"b_whole_forward": {"fraction_of_peak": 0.55}},
        "peak": {"reference_gflops": 400.0, "network_width": {"channels": 24, "gflops": 300.0}},
        "amp_accuracy": {"autocast": "bfloat16", "change_db": -0.001},
        "ratio_e_over_c": 0.8,
        "precision": {"c": "float32", "e": "bfloat16"},
    }
    rows = speed_report.targets({"devices": {"cpu": device}})
    assert rows[2] == "| cpu: (c)/(b) <= 1.5 | 1.20 | met |"
    assert rows[3] == (
        "| cpu: network >= 60 % of the conv3d peak | 55 % (a 24-channel conv alone: 75 %) | **not met** |"
    )
    assert (
        rows[4]
        == "| cpu: the measured precision (float32) is the faster: (e)/(c) >= 1 | 0.80 | **not met** |"
    )
    assert rows[5] == "| cpu: autocast (bfloat16) changes PSNR by < 0.05 dB | 0.0010 dB | met |"


def test_cpu_bf16_forces_the_precision_and_restores_the_environment(monkeypatch):
    from volsr.inference.devices import decide_precision

    monkeypatch.setenv("VOLSR_CPU_BF16", "0")
    with speed.cpu_bf16(True):
        assert decide_precision(torch.device("cpu"), True) == torch.bfloat16
    assert os.environ["VOLSR_CPU_BF16"] == "0"
    monkeypatch.delenv("VOLSR_CPU_BF16")
    with speed.cpu_bf16(False):
        assert decide_precision(torch.device("cpu"), True) is torch.float32
    assert "VOLSR_CPU_BF16" not in os.environ


def test_adaptation_scores_the_shipped_and_the_tuned_network(tmp_path):
    import nibabel as nib

    from volsr.data.normalization import PercentileNormalizer
    from volsr.networks import ResidualSR3D
    from volsr.networks.checkpoint import save_checkpoint

    bundle = tmp_path / "tiny"
    network = ResidualSR3D(features=4, num_blocks=1)
    save_checkpoint(bundle / "models" / "model.pt", network, PercentileNormalizer(), step=1)
    path = tmp_path / "blob.nii.gz"
    nib.save(nib.Nifti1Image(smooth_volume((24, 24, 24)).as_tensor()[0].numpy(), np.eye(4)), path)
    protocol = ThickSlices(axis=2, factor=3.0)
    settings = [adaptation.parse_setting("0:0"), adaptation.parse_setting("3:1e-3")]
    shipped, tuned = adaptation.run(str(path), settings, protocol, str(bundle), "cpu")
    assert (shipped["steps"], tuned["steps"], tuned["lr"]) == (0, 3, 1e-3)
    assert abs(shipped["gain"]) < 0.05  # the untrained network is the cubic spline it refines
    assert tuned["psnr"] != shipped["psnr"] and tuned["adapt_s"] > 0
    assert shipped["crop"] is None and shipped["consistency"] is False  # the network alone, no projection
    cropped = adaptation.run(
        str(path), settings[:1], protocol, str(bundle), "cpu", crop=(16, 20, 30), pairs=1
    )
    assert cropped[0]["crop"] == [16, 20, 24]  # centred, no larger than the volume
    assert cropped[0]["psnr"] != shipped["psnr"]  # scored on the crop, not the whole volume
    assert abs(cropped[0]["own_pairs_gain"]) < 0.05 and abs(cropped[0]["true_pairs_gain"]) < 0.05


def test_memory_estimate_runs_each_case_in_a_child_and_compares_like_with_like(capsys):
    memory_estimate = import_benchmark("memory_estimate")
    rows = memory_estimate.main(["--size", "48", "--case", "plain", "int16", "fourier"])
    assert [r["case"] for r in rows] == ["plain", "int16", "fourier"]
    for row in rows:
        assert "error" not in row, row
        assert row["output_shape"] == [48, 48, 48]
        assert row["measured_bytes_per_voxel"] > 0
        ratio = row["estimate_bytes_per_voxel"] / row["measured_bytes_per_voxel"]
        assert row["estimate_over_measured"] == pytest.approx(ratio, abs=0.01)
    # the int16 write adds the float64 rounding and clipping to the estimate: never below float32's
    assert rows[1]["estimate_bytes_per_voxel"] >= rows[0]["estimate_bytes_per_voxel"]
    assert capsys.readouterr().out.count("{") == 3
