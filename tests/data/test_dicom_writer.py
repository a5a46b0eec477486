"""volsr.data.dicom_writer: a derived DICOM series lands where its voxels belong, in its source's study."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, make_image
from monai.data import MetaTensor
from scans import assert_on_world_grid, lia_affine, sheared_affine, volume, write_dicom_series

import volsr.data.dicom_writer as dicom_writer
from volsr.data.dicom_writer import DICOM_FILE_PATTERN, check_dicom_output, save_dicom_series
from volsr.data.io import load_image
from volsr.errors import VolsrInputError
from volsr.geometry.grids import voxel_to_world

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def tags(path, *keys: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {k: reader.GetMetaData(k).strip() for k in keys if reader.HasMetaDataKey(k)}


def source(arr: np.ndarray, affine: np.ndarray, dtype: str, name: str = "scan.nii.gz") -> MetaTensor:
    img = make_image(arr, affine)
    img.meta.update(filename_or_obj=name, source_dtype=dtype)
    return img


def world_values(img: torch.Tensor, affine: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img``'s values and the truth's at the same world points (every voxel centre must be one)."""
    a = np.asarray(img.affine, dtype=np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in img.shape[1:]], indexing="ij"), -1).reshape(-1, 3)
    t = (voxel_to_world(a, idx) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    np.testing.assert_allclose(t, np.rint(t), atol=1e-4)
    t = np.rint(t).astype(int)
    return img[0].numpy().reshape(-1), truth[t[:, 0], t[:, 1], t[:, 2]]


@pytest.mark.parametrize("affine", [lia_affine(), sheared_affine()], ids=["oblique-lia", "gantry-tilt"])
def test_integer_source_round_trips_exactly_on_the_world_grid(tmp_path, affine):
    arr = volume().astype(np.float32) * 300  # -12000 .. 50700: int16 cannot hold it, uint16 neither
    arr -= arr.min()  # 0 .. 62700: uint16, no rescale needed
    out = save_dicom_series(source(arr, affine, "uint16"), tmp_path / "series")
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"IM_{k:05d}.dcm" for k in range(1, arr.shape[2] + 1)]
    first = tags(out / files[0], "0008|0016", "0028|0103", "0028|1053", "0020|0032", "0020|0037")
    assert first["0008|0016"] == MR_IMAGE_STORAGE and first["0028|0103"] == "0"  # classic MR, unsigned
    back = load_image(out)
    assert back.shape == (1, *arr.shape)
    assert_on_world_grid(back, arr, affine, same_index=False)  # exact values at exact world points


def test_float_source_is_stored_through_a_rescale_slope_within_half_a_step(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(0.0, 1.0, (9, 8, 6)).astype(np.float32) * 0.01  # tiny range: rounding would erase it
    affine = lia_affine(spacing=(0.7, 0.8, 3.0))
    out = save_dicom_series(source(arr, affine, "float32"), tmp_path / "series")
    t = tags(out / "IM_00001.dcm", "0028|1053", "0028|1052", "0028|0103")
    slope = float(t["0028|1053"])
    assert t["0028|0103"] == "1" and slope == pytest.approx((arr.max() - arr.min()) / 65534, rel=1e-6)
    got, truth = world_values(load_image(out), affine, arr)
    assert np.abs(got - truth).max() <= 0.5 * slope * 1.001


def test_a_float_mr_written_first_in_a_fresh_process_is_classic_mr_with_slice_positions(tmp_path):
    # GDCM writes an MR with a rescale slope as Enhanced MR (positions in functional groups, which
    # series readers and many viewers ignore) until a DICOM file has been read in the process
    code = (
        "import numpy as np, torch; from monai.data import MetaTensor;"
        "from volsr.data.dicom_writer import save_dicom_series;"
        "img = MetaTensor(torch.rand(1, 4, 3, 2), affine=torch.eye(4, dtype=torch.float64));"
        f"save_dicom_series(img, {str(tmp_path / 'series')!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    for k in (1, 2):
        t = tags(tmp_path / "series" / f"IM_{k:05d}.dcm", "0008|0016", "0020|0032", "0020|0037")
        assert t["0008|0016"] == MR_IMAGE_STORAGE and "0020|0032" in t and "0020|0037" in t


def test_dicom_source_lends_its_patient_study_and_frame_of_reference_to_a_new_series(tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.9.1"
    affine = lia_affine()
    study_tags = {
        "0010|0010": "Doe^Jane",
        "0010|0020": "P123",
        "0020|0052": "1.2.826.0.1.3680043.2.1125.9.99",
        "0020|0011": "7",
        "0018|0081": "95",
        "0008|0005": "ISO_IR 100",
    }
    write_dicom_series(tmp_path / "src", volume(), affine, uid, "T2 TSE", study_tags)
    src = load_image(tmp_path / "src")
    out = save_dicom_series(src * 2, tmp_path / "sr", reference=src, derivation="x4 by a test")
    keys = ("0010|0010", "0010|0020", "0020|000d", "0020|0052", "0020|000e", "0020|0011", "0008|103e",
            "0008|0008", "0008|2111", "0018|0081", "0008|0060", "0008|0018", "0008|0005")  # fmt: skip
    first, second = tags(out / "IM_00001.dcm", *keys), tags(out / "IM_00002.dcm", *keys)
    assert first["0010|0010"] == "Doe^Jane" and first["0010|0020"] == "P123"
    assert first["0020|000d"] == "1.2.826.0.1.3680043.2.1125.7"  # the source's study
    assert first["0020|0052"] == study_tags["0020|0052"]  # same frame: viewers can link the two
    assert first["0018|0081"] == "95" and first["0008|0060"] == "MR" and first["0008|0005"] == "ISO_IR 100"
    assert first["0020|000e"] != uid and first["0020|000e"].startswith("2.25.")
    assert first["0020|000e"] == second["0020|000e"] and first["0008|0018"] != second["0008|0018"]
    assert first["0020|0011"] == "1007" and first["0008|103e"] == "T2 TSE volsr SR"
    assert first["0008|0008"] == "DERIVED\\SECONDARY\\OTHER" and first["0008|2111"] == "x4 by a test"
    assert_on_world_grid(load_image(out), volume() * 2, affine, same_index=False)


def test_a_source_that_is_not_dicom_gets_a_new_study_and_the_modality_asked_for(tmp_path):
    img = source(volume().astype(np.float32), lia_affine(), "int16")
    a = save_dicom_series(img, tmp_path / "a", modality="ct")
    b = save_dicom_series(img, tmp_path / "b")
    ta = tags(
        a / "IM_00001.dcm", "0008|0016", "0008|0060", "0020|000d", "0020|0052", "0020|0011", "0008|103e"
    )
    tb = tags(b / "IM_00001.dcm", "0008|0016", "0008|0060", "0020|000d")
    assert (ta["0008|0016"], ta["0008|0060"]) == (CT_IMAGE_STORAGE, "CT")
    assert (tb["0008|0016"], tb["0008|0060"]) == (MR_IMAGE_STORAGE, "MR")
    assert ta["0020|000d"] != tb["0020|000d"] and ta["0020|0052"].startswith("2.25.")
    assert ta["0020|0011"] == "1000" and ta["0008|103e"] == "scan.nii.gz volsr SR"
    with pytest.raises(ValueError, match="MR or CT"):
        save_dicom_series(img, tmp_path / "c", modality="PT")
    with pytest.raises(ValueError, match="'input' or 'float32'"):
        check_dicom_output(tmp_path / "c", img, dtype="int8")
    assert not (tmp_path / "c").exists()


def test_refusals_leave_every_file_as_it_was(tmp_path):
    (tmp_path / "in").mkdir()
    img = source(
        volume().astype(np.float32), lia_affine(), "int16", name=str(tmp_path / "in" / "scan.nii.gz")
    )
    out = save_dicom_series(img, tmp_path / "series")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(VolsrInputError, match="already exists"):
        save_dicom_series(img, out)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(VolsrInputError, match="did not write .e.g. notes.txt"):
        save_dicom_series(img, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(VolsrInputError, match="holds the input"):
        check_dicom_output(tmp_path / "in", img, overwrite=True)
    dicom_source = source(volume().astype(np.float32), lia_affine(), "int16", name=str(tmp_path / "in"))
    with pytest.raises(VolsrInputError, match="inside the input DICOM folder"):
        check_dicom_output(tmp_path / "in" / "scan_sr", dicom_source)
    (tmp_path / "file").write_text("x")
    with pytest.raises(VolsrInputError, match="is a file"):
        check_dicom_output(tmp_path / "file", img, overwrite=True)
    sheared_in_plane = lia_affine()
    sheared_in_plane[:3, 1] += 0.2 * sheared_in_plane[:3, 0]
    with pytest.raises(ValueError, match="not perpendicular"):
        save_dicom_series(make_image(volume(), sheared_in_plane), tmp_path / "shear")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in", "mine", "series"]  # no leftovers


def test_overwrite_replaces_a_series_whole_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    affine = lia_affine()
    out = save_dicom_series(source(volume().astype(np.float32), affine, "int16"), tmp_path / "series")
    smaller = volume()[:, :, :3].astype(np.float32) + 5
    save_dicom_series(source(smaller, affine, "int16"), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["IM_00001.dcm", "IM_00002.dcm", "IM_00003.dcm"]
    assert_on_world_grid(load_image(out), smaller, affine, same_index=False)

    real = dicom_writer._write_slice

    def failing(plane, slice_tags, path):
        if path.name == "IM_00002.dcm":
            raise OSError("disk full")
        real(plane, slice_tags, path)

    monkeypatch.setattr(dicom_writer, "_write_slice", failing)
    with pytest.raises(VolsrInputError, match="series: cannot be written: disk full"):
        save_dicom_series(source(volume().astype(np.float32), affine, "int16"), out, overwrite=True)
    assert_on_world_grid(load_image(out), smaller, affine, same_index=False)  # the old series, intact
    with pytest.raises(VolsrInputError, match="new: cannot be written: disk full"):
        save_dicom_series(source(smaller, affine, "int16"), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no half-written folder
    assert all(DICOM_FILE_PATTERN.fullmatch(p.name) for p in out.iterdir())


def test_real_dicom_series_round_trips_into_its_own_study(shared_data, tmp_path):
    folder = shared_data / "dicom" / "epi_sagittal"
    src = load_image(folder)
    out = save_dicom_series(src, tmp_path / "epi_sr")
    back = load_image(out)
    np.testing.assert_allclose(back.affine.numpy(), src.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(back.numpy(), src.numpy())  # uint16 values, stored as they are
    first_source = sorted(folder.iterdir())[0]
    keys = ("0010|0020", "0020|000d", "0020|0052", "0008|0060", "0018|0080")
    assert tags(out / "IM_00001.dcm", *keys) == tags(first_source, *keys)
