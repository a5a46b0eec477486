"""The DICOM reader on synthetic series written with pydicom: slices and volumes sorted from the headers
(never from file names), values rescaled image by image, compressed storage decoded, one volume
decoded at a time."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import write_enhanced, write_series
from pydicom import dcmread
from pydicom.uid import RLELossless
from scans import SHAPE, assert_on_world_grid, lia_affine, sheared_affine, volume

from volsr.data.dicom import REFERENCE_TAGS, _tags, read_dicom_folder
from volsr.data.dicom_files import scan_folder, tag_text
from volsr.data.io import load_image
from volsr.errors import VolsrInputError


def four_d(n_volumes: int = 3) -> np.ndarray:
    return np.stack([volume() + 1000 * v for v in range(n_volumes)], axis=-1)


def test_shuffled_file_names_do_not_change_the_grid(tmp_path):
    arr, affine = volume(), lia_affine()
    write_series(tmp_path / "a", arr, affine, seed=1)
    write_series(tmp_path / "b", arr, affine, seed=None)
    a, b = load_image(tmp_path / "a"), load_image(tmp_path / "b")
    np.testing.assert_array_equal(a.affine.numpy(), b.affine.numpy())
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert_on_world_grid(a, arr, affine, same_index=False)


def test_a_4d_series_reads_the_volume_asked_for(tmp_path):
    arr, affine = four_d(3), sheared_affine()  # tilted as well: the shear is kept for every volume
    write_series(tmp_path, arr, affine)
    for v in range(3):
        img = load_image(tmp_path, volume=v)
        assert img.meta["dicom_volumes"] == 3 and img.meta["volume"] == v
        assert_on_world_grid(img, arr[..., v], affine, same_index=False)
    with pytest.raises(VolsrInputError, match=r"is 4-D with 3 volumes; pick one with volume= in 0..2$"):
        load_image(tmp_path)
    with pytest.raises(VolsrInputError, match="volume=3 is out of range: the image has 3 volume"):
        load_image(tmp_path, volume=3)


def test_positions_that_alternate_file_by_file_are_slices_of_volumes(tmp_path):
    # as the GE series of dicom_qa: 2 slice positions, 7 volumes, consecutive files alternating
    arr = np.stack([volume((6, 5, 2)) + 100 * v for v in range(7)], axis=-1)
    affine = lia_affine((1.0, 1.0, 3.0))
    write_series(tmp_path, arr, affine, seed=None)
    img = load_image(tmp_path, volume=4)
    assert img.shape == (1, 6, 5, 2) and img.meta["dicom_volumes"] == 7
    assert_on_world_grid(img, arr[..., 4], affine, same_index=False)


def test_volumes_follow_instance_number_at_each_position(tmp_path):
    arr, affine = four_d(2), lia_affine()

    def swap(ds, k, v):  # at slice 2 the second volume's image has the lower InstanceNumber
        if k == 2:
            ds.InstanceNumber = 100 + (1 - v)

    write_series(tmp_path, arr, affine, edit=swap)
    for v in range(2):
        truth = arr[..., v].copy()
        truth[:, :, 2] = arr[:, :, 2, 1 - v]
        assert_on_world_grid(load_image(tmp_path, volume=v), truth, affine, same_index=False)


def test_enhanced_multiframe_frames_are_placed_by_their_functional_groups(tmp_path):
    arr, affine = four_d(2), lia_affine()
    write_enhanced(tmp_path / "mf.dcm", arr, affine)
    img = load_image(tmp_path, volume=1)
    assert img.meta["dicom_volumes"] == 2 and img.meta["dicom_files"] == 1
    assert_on_world_grid(img, arr[..., 1], affine, same_index=False)


def test_rescale_is_applied_image_by_image_with_gdcm_value_types(tmp_path):
    arr, affine = volume(), lia_affine()

    def slope(ds, k, v):
        ds.RescaleSlope, ds.RescaleIntercept = f"{0.5 * (k + 1)}", "-3"

    write_series(tmp_path / "fraction", arr, affine, edit=slope)
    img = load_image(tmp_path / "fraction")
    truth = arr * (0.5 * (np.arange(SHAPE[2]) + 1)) - 3
    assert_on_world_grid(img, truth.astype(np.float32), affine, same_index=False)
    assert img.meta["source_dtype"] == "float64"  # a fractional slope: floating point, as GDCM gives

    def ct(ds, k, v):  # 12 stored bits with the usual CT intercept: int16 holds -1024..3071
        ds.BitsStored, ds.HighBit, ds.RescaleIntercept, ds.RescaleSlope = 12, 11, "-1024", "1"

    write_series(tmp_path / "ct", arr + 40, affine, edit=ct)
    img = load_image(tmp_path / "ct")
    assert img.meta["source_dtype"] == "int16"
    assert_on_world_grid(img, (arr + 40 - 1024).astype(np.float32), affine, same_index=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sorted(str(p) for p in (tmp_path / "ct").iterdir()))
    assert reader.Execute().GetPixelIDTypeAsString() == "16-bit signed integer"  # the same type as GDCM's


def test_rle_series_decodes_to_the_values_written(tmp_path):
    arr, affine = volume(), lia_affine()
    for path in write_series(tmp_path, arr, affine):
        ds = dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path, enforce_file_format=True)
    assert dcmread(next(tmp_path.iterdir())).file_meta.TransferSyntaxUID == RLELossless
    assert_on_world_grid(load_image(tmp_path), arr, affine, same_index=False)


def test_jpeg_lossless_series_decodes_through_gdcm_without_a_word(tmp_path, capfd):
    arr, affine = volume(), lia_affine()
    paths = write_series(tmp_path / "raw", arr, affine)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")  # JPEG lossless process 14: pydicom has no decoder for it here
    (tmp_path / "jpeg").mkdir()
    for path in paths:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.LoadPrivateTagsOn()
        image = reader.Execute()
        for key in reader.GetMetaDataKeys():
            image.SetMetaData(key, reader.GetMetaData(key))
        writer.SetFileName(str(tmp_path / "jpeg" / path.name))
        writer.Execute(image)
    assert "JPEG Lossless" in dcmread(tmp_path / "jpeg" / paths[0].name).file_meta.TransferSyntaxUID.name
    capfd.readouterr()
    img = load_image(tmp_path / "jpeg")
    assert_on_world_grid(img, arr, affine, same_index=False)
    assert capfd.readouterr().err == ""


def test_one_volume_is_decoded_without_reading_the_others(tmp_path):
    arr = four_d(3)
    paths = write_series(tmp_path, arr, lia_affine())
    broken = paths[-1]  # a slice of volume 2, its pixel data cut short
    broken.write_bytes(broken.read_bytes()[:-20])
    assert_on_world_grid(load_image(tmp_path, volume=0), arr[..., 0], lia_affine(), same_index=False)
    with pytest.raises(VolsrInputError, match="cannot be read as DICOM") as err:
        load_image(tmp_path, volume=2)
    assert str(err.value).startswith(f"{broken}: ")


def test_the_array_of_a_4d_series_is_every_volume(tmp_path):
    arr = four_d(2)
    write_series(tmp_path, arr, lia_affine(), seed=None)
    data, affine, dtype, extra = read_dicom_folder(tmp_path, None)
    assert data.shape == (*SHAPE, 2) and dtype == "int16" and extra["dicom_volumes"] == 2
    whole = np.asarray(data)
    assert whole.shape == data.shape
    for v in range(2):
        np.testing.assert_array_equal(whole[..., v], data[:, :, :, v])
        np.testing.assert_array_equal(np.sort(whole[..., v], axis=None), np.sort(arr[..., v], axis=None))


@pytest.mark.integration
def test_reference_tags_are_the_text_simpleitk_reads(shared_data):
    folder = shared_data / "dicom" / "epi_sagittal"
    first = sorted(folder.iterdir())[0]
    (series,) = scan_folder(folder).series.values()
    header = next(f.header for f in series if f.path == first)
    ours = {key: tag_text(header, key) for key in REFERENCE_TAGS}
    theirs = _tags(str(first), *REFERENCE_TAGS)
    assert {k: v for k, v in ours.items() if v} == {k: v for k, v in theirs.items() if v}
    assert len(theirs) > 20


def test_scan_folder_reads_headers_only_and_groups_by_series(tmp_path):
    write_series(tmp_path, volume(), lia_affine(), uid="1.2.3.1", prefix="A")
    write_series(tmp_path, volume(), lia_affine(), uid="1.2.3.2", prefix="B")
    (tmp_path / "notes.txt").write_text("not DICOM\n")
    contents = scan_folder(tmp_path)
    assert sorted(contents.series) == ["1.2.3.1", "1.2.3.2"]
    assert all(len(files) == SHAPE[2] for files in contents.series.values())
    assert not any("PixelData" in f.header for files in contents.series.values() for f in files)
