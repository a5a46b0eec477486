"""volsr.data.io: every format lands on the same RAS+ world grid; NIfTI written back exactly, atomically."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_image
from scans import (
    LPS,
    SHAPE,
    WRITERS,
    assert_on_world_grid,
    corners,
    lia_affine,
    sheared_affine,
    volume,
    write_dicom_series,
    write_itk,
    write_nifti,
)

from volsr.data.acquisition import slice_acquisition
from volsr.data.io import check_output, describe, load_image, save_image
from volsr.errors import VolsrInputError, VolsrInputWarning
from volsr.geometry.grids import fov_corners, is_sheared, voxel_to_world


@pytest.mark.parametrize("ext", list(WRITERS))
def test_every_format_reads_onto_the_true_world_grid_and_survives_save(tmp_path, ext):
    arr, affine = volume(), lia_affine()
    path = tmp_path / f"scan{ext}"
    WRITERS[ext](path, arr, affine)

    img = load_image(path)
    assert img.shape == (1, *SHAPE) and img.dtype == torch.float32
    assert img.affine.dtype == torch.float64
    assert img.meta["filename_or_obj"] == str(path)
    assert img.meta["source_dtype"] == ("float32" if ext == ".mgz" else "int16")
    assert_on_world_grid(img, arr, affine)

    back = load_image(save_image(img, tmp_path / "out" / "copy.nii.gz"))
    np.testing.assert_allclose(back.affine.numpy(), img.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(back[0].numpy(), img[0].numpy())
    assert back.meta["source_dtype"] == "float32"


def test_dicom_series_reads_onto_the_true_world_grid(tmp_path):
    # LIA is left-handed: DICOM orders slices along row x column, so k runs backwards on reading;
    # each voxel must still land at its true world position with its true value
    arr, affine = volume(), lia_affine()
    write_dicom_series(tmp_path / "dcm", arr, affine, "1.2.826.0.1.3680043.2.1125.7.1", "synthetic")
    img = load_image(tmp_path / "dcm")
    assert img.shape == (1, *SHAPE)
    assert img.meta["source_format"] == "dicom"
    assert_on_world_grid(img, arr, affine, same_index=False)
    np.testing.assert_allclose(
        np.sort(fov_corners(img.affine, SHAPE), axis=0),
        np.sort(fov_corners(affine, SHAPE), axis=0),
        atol=1e-4,
    )


def test_gantry_tilted_dicom_series_keeps_its_sheared_slice_axis(tmp_path):
    # ITK alone stacks the slices along the normal (straightened); the positions give the shear
    arr, affine = volume(), sheared_affine()
    write_dicom_series(tmp_path, arr, affine, "1.2.826.0.1.3680043.2.1125.7.3", "tilted")
    img = load_image(tmp_path)
    assert is_sheared(img.affine.numpy())
    assert_on_world_grid(img, arr, affine, same_index=False)
    back = load_image(save_image(img, tmp_path / "tilt.nii.gz"))
    np.testing.assert_allclose(back.affine.numpy(), img.affine.numpy(), atol=1e-5)  # float32 in NIfTI


def test_folder_with_two_series_lists_both_and_series_uid_picks_one(tmp_path):
    arr, affine = volume(), lia_affine()
    uid1, uid2 = "1.2.826.0.1.3680043.2.1125.7.1", "1.2.826.0.1.3680043.2.1125.7.2"
    write_dicom_series(tmp_path, arr, affine, uid1, "T1 axial")
    write_dicom_series(tmp_path, arr + 1000, affine, uid2, "T2 axial")
    with pytest.raises(VolsrInputError) as err:
        load_image(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: holds 2 DICOM series")
    assert uid1 in msg and uid2 in msg and "T2 axial" in msg and "5 files" in msg
    img = load_image(tmp_path, series_uid=uid2)
    assert img.meta["dicom_series_uid"] == uid2
    assert_on_world_grid(img, arr + 1000, affine, same_index=False)
    with pytest.raises(VolsrInputError, match="has no DICOM series 9.9.9"):
        load_image(tmp_path, series_uid="9.9.9")


def test_series_uid_on_a_file_is_refused(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", volume(), lia_affine())
    with pytest.raises(VolsrInputError, match="applies to a folder"):
        load_image(path, series_uid="1.2.3")


def test_folder_without_dicom_is_refused(tmp_path):
    with pytest.raises(VolsrInputError, match="without a DICOM series"):
        load_image(tmp_path)


def test_4d_needs_a_volume_and_volume_picks_it(tmp_path):
    arr = np.stack([volume() * (t + 1) for t in range(3)], axis=-1)
    path = write_nifti(tmp_path / "bold.nii.gz", arr, lia_affine())
    with pytest.raises(VolsrInputError, match=r"is 4-D with 3 volumes; pick one with volume= in 0..2$"):
        load_image(path)
    img = load_image(path, volume=2)
    assert img.meta["volume"] == 2
    assert_on_world_grid(img, volume() * 3, lia_affine())
    with pytest.raises(VolsrInputError, match="volume=3 is out of range"):
        load_image(path, volume=3)
    with pytest.raises(VolsrInputError, match="volume must be an index"):
        load_image(path, volume=-1)


def test_4d_with_a_single_volume_reads_as_3d(tmp_path):
    path = write_nifti(tmp_path / "one.nii.gz", volume()[..., None], lia_affine())
    assert load_image(path).shape == (1, *SHAPE)


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("missing.nii.gz", None, "no such file"),
        ("text.nii.gz", lambda p: p.write_text("not an image\n"), "cannot be read as nifti"),
        ("text.nrrd", lambda p: p.write_text("not an image\n"), "cannot be read as nrrd"),
        ("scan.txt", lambda p: p.write_text("x"), "unsupported file type"),
        ("flat.nii.gz", lambda p: write_nifti(p, np.ones((8, 9), np.float32), np.eye(4)), "is 2-D"),
        ("slice.nii.gz", lambda p: write_nifti(p, np.ones((8, 9, 1), np.float32), np.eye(4)), "is 2-D"),
        ("flat.mha", lambda p: sitk.WriteImage(sitk.Image(8, 9, sitk.sitkInt16), str(p)), "is 2-D"),
        ("empty.nii.gz", lambda p: write_nifti(p, np.ones((8, 0, 3), np.float32), np.eye(4)), "is empty"),
        (
            "nan.nii.gz",
            lambda p: write_nifti(p, np.full((4, 4, 4), np.nan, np.float32), np.eye(4)),
            "64 NaN or Inf",
        ),
        ("inf.mha", lambda p: write_itk(p, np.full((4, 4, 4), np.inf, np.float32), np.eye(4)), "NaN or Inf"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, name, make, problem):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(VolsrInputError) as err:
        load_image(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and problem in msg and "\n" not in msg


def test_input_error_is_a_picklable_value_error():
    err = VolsrInputError("a.nii", "is\nbroken")
    assert isinstance(err, ValueError) and str(err) == "a.nii: is broken"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == "a.nii"


def test_header_codes_units_and_description_survive(tmp_path):
    src = write_nifti(
        tmp_path / "in.nii.gz",
        volume(),
        lia_affine(),
        qform_code=4,
        sform_code=3,
        xyzt_units=("mm", "msec"),
        descrip="TE=49;phase=1",
    )
    img = load_image(src)
    assert img.meta["nifti_header"]["descrip"] == "TE=49;phase=1"
    out = nib.load(str(save_image(img * 2, tmp_path / "out.nii.gz")))
    assert int(out.header["qform_code"]) == 4 and int(out.header["sform_code"]) == 3
    assert out.header.get_xyzt_units() == ("mm", "msec")
    assert out.header["descrip"].item() == b"TE=49;phase=1"
    np.testing.assert_allclose(out.get_qform(), lia_affine(), atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), lia_affine(), atol=1e-5)


def test_image_without_header_gets_scanner_codes(tmp_path):
    out = nib.load(str(save_image(make_image(volume(), lia_affine()), tmp_path / "new.nii")))
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 1
    np.testing.assert_allclose(out.affine, lia_affine(), atol=1e-5)


def test_sheared_affine_is_kept_exactly_through_load_and_save(tmp_path):
    src = write_nifti(tmp_path / "tilt.nii.gz", volume(), sheared_affine(), qform_code=1, sform_code=1)
    stored = nib.load(str(src)).get_sform()  # float32 in the file
    img = load_image(src)
    assert is_sheared(img.affine.numpy())
    np.testing.assert_array_equal(img.affine.numpy(), stored)
    back = nib.load(str(save_image(img, tmp_path / "out.nii.gz")))
    np.testing.assert_array_equal(back.get_sform(), stored)
    np.testing.assert_array_equal(load_image(tmp_path / "out.nii.gz").affine.numpy(), stored)


def test_sheared_qform_follows_a_change_of_grid(tmp_path):
    src = write_nifti(tmp_path / "tilt.nii.gz", volume(), sheared_affine())
    img = load_image(src)
    q_src = np.asarray(img.meta["nifti_header"]["qform"])
    grid = np.diag([1.0, 1.0, 0.5, 1.0])  # twice as many slices
    regridded = make_image(np.zeros((7, 6, 10)), img.affine.numpy() @ grid)
    regridded.meta.update({k: v for k, v in img.meta.items() if k != "affine"})
    back = nib.load(str(save_image(regridded, tmp_path / "fine.nii.gz")))
    np.testing.assert_allclose(back.get_sform(), img.affine.numpy() @ grid, atol=1e-5)
    np.testing.assert_allclose(back.get_qform(), q_src @ grid, atol=1e-4)


@pytest.mark.integration
def test_real_sheared_ct_survives_load_save_load(tmp_path, shared_data):
    path = shared_data / "lowres" / "shear.nii.gz"
    src = nib.load(str(path))
    img = load_image(path)
    assert describe(img)["sheared"]
    np.testing.assert_array_equal(img.affine.numpy(), src.affine)
    back = nib.load(str(save_image(img, tmp_path / "shear.nii", dtype="input")))
    np.testing.assert_array_equal(back.get_sform(), src.get_sform())
    np.testing.assert_allclose(back.get_qform(), src.get_qform(), atol=1e-6)
    assert int(back.header["sform_code"]) == int(src.header["sform_code"])
    assert back.get_data_dtype() == np.uint8  # stored as the source, with its own scaling
    assert np.abs(np.asarray(back.dataobj) - np.asarray(src.dataobj)).max() < 1e-3


@pytest.mark.integration
def test_real_dicom_series_matches_simpleitk_geometry(shared_data):
    folder = shared_data / "dicom" / "epi_sagittal"
    img = load_image(folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    ref = sitk.ReadImage(files)
    assert tuple(img.shape[1:]) == ref.GetSize()
    c = corners(ref.GetSize())
    expected = np.array(
        [LPS @ np.array(ref.TransformIndexToPhysicalPoint([int(v) for v in ijk])) for ijk in c]
    )
    np.testing.assert_allclose(voxel_to_world(img.affine.numpy(), c), expected, atol=1e-6)
    # and with the scanner's own ImagePositionPatient of the first and last slice files
    for k, f in ((0, files[0]), (len(files) - 1, files[-1])):
        reader = sitk.ImageFileReader()
        reader.SetFileName(f)
        reader.ReadImageInformation()
        ipp = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        np.testing.assert_allclose(voxel_to_world(img.affine.numpy(), [0, 0, k]), LPS @ ipp, atol=1e-3)
    v = sitk.GetArrayFromImage(ref)  # (z, y, x)
    assert img[0, 5, 40, 30].item() == v[30, 40, 5]
    # SliceThickness 2.2 mm against the 2.2 mm between the slice positions: contiguous
    acquisition = slice_acquisition(img)
    assert (acquisition.thickness_mm, acquisition.contiguous) == (2.2, True)


def test_dtype_input_rounds_and_clips_to_the_source_type(tmp_path):
    src = write_nifti(tmp_path / "u8.nii.gz", np.full(SHAPE, 7, np.uint8), lia_affine())
    img = load_image(src)
    img[0, 0, 0, :4] = torch.tensor([-3.7, 2.4, 2.6, 300.2])
    back = nib.load(str(save_image(img, tmp_path / "out.nii.gz", dtype="input")))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj)[0, 0, :4], [0, 2, 3, 255])


def test_named_integer_dtype_and_bad_dtypes(tmp_path):
    img = make_image(np.full(SHAPE, 40000.6), lia_affine())
    with pytest.warns(VolsrInputWarning, match=r"100\.00% of the voxels lie outside int16's range"):
        back = nib.load(str(save_image(img, tmp_path / "i16.nii.gz", dtype="int16")))
    assert back.get_data_dtype() == np.int16 and np.asarray(back.dataobj).max() == 32767
    with pytest.raises(ValueError, match="dtype"):
        save_image(img, tmp_path / "b.nii.gz", dtype="complex64")
    with pytest.raises(ValueError, match="source_dtype"):
        save_image(img, tmp_path / "c.nii.gz", dtype="input")  # an in-memory image has no source type
    assert not (tmp_path / "b.nii.gz").exists() and not (tmp_path / "c.nii.gz").exists()


def test_scaled_nifti_is_read_scaled_and_written_back_in_its_type(tmp_path):
    img = nib.Nifti1Image(volume(), lia_affine())
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "scaled.nii.gz"))
    loaded = load_image(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(loaded[0].numpy(), volume() * 0.5 + 10.0)
    back = nib.load(str(save_image(loaded, tmp_path / "out.nii.gz", dtype="input")))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_allclose(back.get_fdata(), volume() * 0.5 + 10.0, atol=1e-3)


def test_spatial_units_other_than_mm_are_converted(tmp_path):
    src = write_nifti(
        tmp_path / "m.nii.gz",
        volume(),
        lia_affine() * [[1e-3], [1e-3], [1e-3], [1]],
        xyzt_units=("meter", "sec"),
    )
    img = load_image(src)
    np.testing.assert_allclose(img.affine.numpy(), lia_affine(), atol=1e-5)
    assert img.meta["nifti_header"]["xyzt_units"] == ("mm", "sec")


def test_refuses_to_write_over_the_input_even_with_overwrite(tmp_path):
    src = write_nifti(tmp_path / "in.nii.gz", volume(), lia_affine())
    before = src.read_bytes()
    img = load_image(src)
    for path in (src, tmp_path / "sub" / ".." / "in.nii.gz"):
        with pytest.raises(VolsrInputError, match="is the input image"):
            save_image(img * 0, path, overwrite=True)
    assert src.read_bytes() == before


def test_refuses_existing_output_unless_overwrite(tmp_path):
    img = make_image(volume(), lia_affine())
    out = save_image(img, tmp_path / "out.nii.gz")
    with pytest.raises(VolsrInputError, match=r"already exists; pass overwrite=True to replace it$"):
        save_image(img * 2, out)
    save_image(img * 2, out, overwrite=True)
    np.testing.assert_array_equal(nib.load(str(out)).get_fdata(), volume() * 2)


def test_only_nifti_is_written(tmp_path):
    with pytest.raises(VolsrInputError, match="writes NIfTI only"):
        check_output(tmp_path / "out.nrrd")


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    img = make_image(volume(), lia_affine())
    out = save_image(img, tmp_path / "deep" / "er" / "out.nii.gz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.nii.gz"]
    before = out.read_bytes()

    def half_written(image, filename):  # the disk fills up in the middle of the write
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib, "save", half_written)
    with pytest.raises(VolsrInputError, match=r"out\.nii\.gz: cannot be written: No space left"):
        save_image(img * 2, out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.nii.gz"]


def test_describe_reports_grid_orientation_and_range(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", volume(), lia_affine(angle_deg=0.0))
    d = describe(load_image(path))
    assert d["shape"] == SHAPE and d["orientation"] == "LIA" and d["source_dtype"] == "int16"
    np.testing.assert_allclose(d["spacing"], (1.0, 1.5, 2.0))
    assert (d["min"], d["max"]) == (-40.0, float(np.prod(SHAPE) - 41)) and d["sheared"] is False
    assert d["path"] == str(path)
