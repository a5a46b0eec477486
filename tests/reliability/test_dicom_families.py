"""DICOM families through ``volsr info``: each placed correctly, or refused in one ``volsr: error:`` line
that names the file and the reason (exit status 2); notes as one ``volsr: warning:`` line; nothing from
pydicom, GDCM or ITK on the terminal (checked at the file-descriptor level too)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_series import write_dicomdir, write_series, write_structured_report
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import UID, RLELossless
from scans import SHAPE, lia_affine, sheared_affine, volume
from typer.testing import CliRunner

from volsr.cli import app

runner = CliRunner()


def info(capfd, *args) -> tuple[int, dict[str, str], list[str]]:
    """``volsr info``: exit status, the printed fields, the lines on stderr (none below Python)."""
    capfd.readouterr()
    result = runner.invoke(app, ["info", *map(str, args)])
    assert capfd.readouterr().err == "", "a library wrote to the terminal"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    fields = dict(re.findall(r"^(\w[\w ]*):\s+(.*)$", result.stdout, flags=re.M))
    return result.exit_code, fields, result.stderr.splitlines()


def refused(capfd, named: Path, problem: str, *args) -> str:
    code, _, lines = info(capfd, *args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"volsr: error: {named}: "), lines[0]
    assert problem in lines[0], lines[0]
    return lines[0]


def read(capfd, *args) -> tuple[dict[str, str], list[str]]:
    code, fields, lines = info(capfd, *args)
    assert code == 0, lines
    return fields, lines


def shape_of(fields: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(n) for n in fields["shape"].removesuffix(" voxels").split(" x "))


def value_range(fields: dict[str, str]) -> tuple[float, float]:
    low, high = fields["range"].split(" (")[0].split(" .. ")
    return float(low), float(high)


# ---- headers that do not place their pixels ---------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda ds: delattr(ds, "PixelSpacing"), "states no PixelSpacing; the voxel size is unknown"),
        (lambda ds: setattr(ds, "PixelSpacing", ["0", "0.5"]), "states PixelSpacing"),
        (lambda ds: setattr(ds, "PixelSpacing", ["-1", "1"]), "volsr will not guess it"),
        (lambda ds: delattr(ds, "ImageOrientationPatient"), "states no valid ImageOrientationPatient"),
        (lambda ds: delattr(ds, "ImagePositionPatient"), "states no valid ImagePositionPatient"),
    ],
    ids=["no PixelSpacing", "zero PixelSpacing", "negative PixelSpacing", "no orientation", "no position"],
)
def test_a_header_that_does_not_place_its_pixels_is_refused(tmp_path, capfd, edit, problem):
    paths = write_series(tmp_path, volume(), lia_affine(), seed=None)
    ds = dcmread(paths[2])
    edit(ds)
    ds.save_as(paths[2], enforce_file_format=True)
    refused(capfd, paths[2], problem, tmp_path)


def test_imager_pixel_spacing_is_not_taken_for_the_pixel_spacing(tmp_path, capfd):
    paths = write_series(tmp_path, volume(), lia_affine(), seed=None)
    for path in paths:  # the detector's spacing of a projection image: not the patient's
        ds = dcmread(path)
        ds.ImagerPixelSpacing = ds.PixelSpacing
        del ds.PixelSpacing
        ds.save_as(path, enforce_file_format=True)
    line = refused(capfd, paths[0], "states no PixelSpacing (ImagerPixelSpacing", tmp_path)
    assert "will not guess" in line


def test_an_orientation_that_is_not_orthonormal_is_refused_not_straightened(tmp_path, capfd):
    a = np.deg2rad(15.0)  # the column leans 15 degrees towards the row, as the report found

    def lean(ds, k, v):
        ds.ImageOrientationPatient = ["1", "0", "0", f"{np.sin(a):.8f}", f"{np.cos(a):.8f}", "0"]

    paths = write_series(tmp_path, volume(), np.eye(4), seed=None, edit=lean)
    line = refused(capfd, paths[0], "ImageOrientationPatient is not orthonormal", tmp_path)
    assert "75 degrees apart" in line


def test_an_orientation_off_by_less_than_the_tolerance_is_read(tmp_path, capfd):
    def rounded(ds, k, v):  # six stored decimals, as scanners write: |row| = 1 - 5e-7
        ds.ImageOrientationPatient = ["0.999999", "0.001", "0", "-0.001", "0.999999", "0"]

    write_series(tmp_path, volume(), np.eye(4), seed=None, edit=rounded)
    fields, lines = read(capfd, tmp_path)
    assert shape_of(fields) == SHAPE and lines == []


def test_a_stack_of_several_orientations_is_refused(tmp_path, capfd):
    def localizer(ds, k, v):  # a three-plane localizer under one SeriesInstanceUID
        if k == 3:
            ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]

    write_series(tmp_path, volume(), lia_affine(), seed=None, edit=localizer)
    refused(capfd, tmp_path, "differ in ImageOrientationPatient", tmp_path)


# ---- DICOMDIR and the CD layout -----------------------------------------------------------------


def test_a_dicomdir_beside_the_slices_is_an_index_not_a_corrupt_file(tmp_path, capfd):
    arr = volume()
    paths = write_series(tmp_path / "series", arr, lia_affine())
    write_dicomdir(paths, tmp_path / "cd")
    shutil.copy(tmp_path / "cd" / "DICOMDIR", tmp_path / "series" / "DICOMDIR")
    fields, lines = read(capfd, tmp_path / "series")
    assert shape_of(fields) == SHAPE and lines == []
    assert value_range(fields) == (arr.min(), arr.max())


def test_the_cd_layout_reads_the_series_in_its_subfolders(tmp_path, capfd):
    uids = ("1.2.826.0.1.3680043.2.1125.9.1", "1.2.826.0.1.3680043.2.1125.9.2")
    first = write_series(tmp_path / "a", volume(), lia_affine(), uid=uids[0])
    second = write_series(tmp_path / "b", volume((4, 3, 6)) + 500, lia_affine(), uid=uids[1])
    write_dicomdir(first + second, tmp_path / "cd")
    line = refused(capfd, tmp_path / "cd", "holds 2 DICOM series; pick one", tmp_path / "cd")
    assert all(uid in line for uid in uids)
    fields, lines = read(capfd, tmp_path / "cd", "--series", uids[1])
    assert shape_of(fields) == (4, 3, 6) and lines == []
    assert value_range(fields) == (volume((4, 3, 6)).min() + 500, volume((4, 3, 6)).max() + 500)


# ---- objects without pixels --------------------------------------------------------------------------


def test_a_structured_report_in_the_folder_is_skipped_with_one_note(tmp_path, capfd):
    write_series(tmp_path, volume(), lia_affine())
    write_structured_report(tmp_path / "report.dcm")
    fields, lines = read(capfd, tmp_path)
    assert shape_of(fields) == SHAPE
    assert lines == [
        f"volsr: warning: {tmp_path}: skipped 1 DICOM object(s) without pixels (Basic Text SR Storage; "
        "e.g. report.dcm)"
    ]


def test_a_folder_of_reports_only_is_refused_saying_so(tmp_path, capfd):
    write_structured_report(tmp_path / "report.dcm")
    refused(
        capfd, tmp_path, "without a DICOM series (it holds only 1 DICOM object(s) without pixels", tmp_path
    )


# ---- compressed storage ----------------------------------------------------------------------------


def test_an_rle_series_is_decoded(tmp_path, capfd):
    arr = volume()
    for path in write_series(tmp_path, arr, lia_affine()):
        ds = dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    fields, lines = read(capfd, tmp_path)
    assert shape_of(fields) == SHAPE and value_range(fields) == (arr.min(), arr.max()) and lines == []


def test_a_syntax_no_decoder_reads_is_refused_naming_it(tmp_path, capfd):
    paths = write_series(tmp_path, volume(), lia_affine(), seed=None)
    ds = dcmread(paths[1])
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x11" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.save_as(paths[1], enforce_file_format=True)
    line = refused(capfd, paths[1], "transfer syntax MPEG2 Main Profile", tmp_path)
    assert "1.2.840.10008.1.2.4.100" in line


# ---- 4-D series -----------------------------------------------------------------------------------


def test_a_4d_classic_series_needs_a_volume_and_reads_the_one_asked_for(tmp_path, capfd):
    arr = np.stack([volume() + 1000 * v for v in range(3)], axis=-1)
    write_series(tmp_path, arr, sheared_affine())
    refused(capfd, tmp_path, "is 4-D with 3 volumes; pick one with --volume in 0..2", tmp_path)
    refused(
        capfd, tmp_path, "--volume 3 is out of range: the image has 3 volume(s)", tmp_path, "--volume", "3"
    )
    fields, lines = read(capfd, tmp_path, "--volume", "1")
    assert shape_of(fields) == SHAPE and lines == []
    assert value_range(fields) == (arr[..., 1].min(), arr[..., 1].max())
    assert "sheared" in fields["orientation"]


def test_alternating_positions_are_two_slices_of_seven_volumes(tmp_path, capfd):
    arr = np.stack([volume((6, 5, 2)) + 100 * v for v in range(7)], axis=-1)
    write_series(tmp_path, arr, lia_affine((1.0, 1.0, 3.0)), seed=None)
    refused(capfd, tmp_path, "is 4-D with 7 volumes", tmp_path)
    fields, _ = read(capfd, tmp_path, "--volume", "0")
    assert shape_of(fields) == (6, 5, 2)
    assert [float(s) for s in fields["spacing"].removesuffix(" mm").split(" x ")] == [1.0, 1.0, 3.0]


def test_a_derived_trace_image_mixed_in_is_skipped_and_named(tmp_path, capfd):
    arr = np.stack([volume() + 1000 * v for v in range(3)], axis=-1)

    def trace(ds, k, v):  # the scanner's TRACEW volume, stored in the diffusion series itself
        if v == 2:
            ds.ImageType = ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"]

    paths = write_series(tmp_path, arr, lia_affine(), seed=None, edit=trace)
    code, _, lines = info(capfd, tmp_path)
    assert code == 2 and len(lines) == 2
    assert lines[0] == (
        f"volsr: warning: {tmp_path}: skipped {SHAPE[2]} derived image(s) mixed into the series (ImageType "
        f"DERIVED\\PRIMARY\\DIFFUSION\\TRACEW; e.g. {paths[2 * SHAPE[2]].name}); reading its "
        f"{2 * SHAPE[2]} acquired images"
    )
    assert "is 4-D with 2 volumes" in lines[1]
    fields, _ = read(capfd, tmp_path, "--volume", "1")
    assert value_range(fields) == (arr[..., 1].min(), arr[..., 1].max())


def test_a_repeated_slice_in_a_3d_series_is_refused(tmp_path, capfd):
    paths = write_series(tmp_path, volume(), lia_affine(), seed=None)
    ds = dcmread(paths[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.9.9"
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "copy.dcm", enforce_file_format=True)
    line = refused(capfd, tmp_path, "holds 2 image(s) where the others hold 1", tmp_path)
    assert paths[2].name in line and "copy.dcm" in line


def test_a_missing_slice_is_refused_on_signed_positions(tmp_path, capfd):
    paths = write_series(tmp_path, volume(), lia_affine(), seed=None)
    paths[2].unlink()
    refused(capfd, tmp_path, "4 mm apart where the others lie 2 mm apart", tmp_path)


@pytest.mark.parametrize("compressor", ["JPEG2000", "JPEG"])
def test_a_series_written_compressed_by_gdcm_reads_back_voxel_for_voxel(tmp_path, capfd, compressor):
    """GDCM (through SimpleITK, a writer volsr does not use for input) stores each slice compressed:
    JPEG 2000 and JPEG lossless read back with every value at its own voxel and nothing on stderr."""
    import SimpleITK as sitk

    from volsr.data.io import load_image

    arr = volume() + 40  # non-negative: both lossless coders keep them exactly
    uid = "1.2.826.0.1.3680043.8.498.1"
    for k in range(arr.shape[2]):
        plane = sitk.GetImageFromArray(np.ascontiguousarray(arr[:, :, k].T)[None])
        plane.SetSpacing((0.5, 0.7, 2.0))
        plane.SetOrigin((10.0, -20.0, 30.0 + 2.0 * k))  # LPS: slices 2 mm apart along +z
        for key, value in {"0020|000e": uid, "0020|0013": str(k + 1), "0008|0060": "MR"}.items():
            plane.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.KeepOriginalImageUIDOn()
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
        writer.SetFileName(str(tmp_path / f"IM_{k:03d}.dcm"))
        writer.Execute(plane)
    assert dcmread(tmp_path / "IM_000.dcm").file_meta.TransferSyntaxUID.is_compressed
    capfd.readouterr()
    img = load_image(tmp_path)
    assert capfd.readouterr().err == ""
    expected = np.diag([-0.5, -0.7, 2.0, 1.0])
    expected[:3, 3] = [-10.0, 20.0, 30.0]  # RAS+ of the first slice's LPS origin
    assert np.allclose(np.asarray(img.affine), expected, atol=1e-4)
    np.testing.assert_array_equal(img[0].numpy(), arr)
