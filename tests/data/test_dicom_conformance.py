"""A derived series a PACS accepts (dciodvfy: no errors), linked to its source, and holding the voxel
values the NIfTI writer stores for the same output."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from conftest import make_image
from scans import lia_affine, volume

from volsr.data.dicom_writer import save_dicom_series
from volsr.data.io import load_image, save_image
from volsr.geometry.grids import voxel_to_world

pydicom = pytest.importorskip("pydicom")


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's error lines for one file (dicom3tools; it reports on stderr)."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def derived_epi(shared_data, tmp_path):
    folder = shared_data / "dicom" / "epi_sagittal"
    return folder, load_image(folder), save_dicom_series(load_image(folder), tmp_path / "epi_sr")


def test_series_derived_from_a_real_scan_passes_dciodvfy(shared_data, tmp_path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) not installed")
    folder, _, out = derived_epi(shared_data, tmp_path)
    assert dciodvfy_errors(sorted(folder.iterdir())[0]) != []  # the checker finds errors (in the source)
    for name in ("IM_00001.dcm", "IM_00032.dcm", "IM_00063.dcm"):
        assert dciodvfy_errors(out / name) == [], name


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_series_from_a_nifti_float_volume_passes_dciodvfy(tmp_path, modality):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) not installed")
    img = make_image(volume().astype(np.float32) * 0.37 - 5.0, lia_affine())
    img.meta.update(filename_or_obj="scan.nii.gz", source_dtype="float32")
    out = save_dicom_series(img, tmp_path / "series", modality=modality)
    assert dciodvfy_errors(out / "IM_00001.dcm") == []


def test_derived_series_keeps_its_source_context_and_references_every_source_image(shared_data, tmp_path):
    folder, _, out = derived_epi(shared_data, tmp_path)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    first = sources[0]
    ds = pydicom.dcmread(out / "IM_00010.dcm", stop_before_pixels=True)
    kept = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "ProtocolName", "SequenceName",
            "RepetitionTime", "EchoTime", "ImagingFrequency", "MagneticFieldStrength")  # fmt: skip
    assert {k: ds.get(k) for k in kept} == {k: first.get(k) for k in kept}
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID and ds.SeriesNumber == first.SeriesNumber + 1000
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", first.ImageType[2]]  # M: a magnitude image
    assert "PositionReferenceIndicator" in ds and ds.Manufacturer == "volsr"
    (scanner,) = ds.ContributingEquipmentSequence  # the scanner that acquired the source
    assert (scanner.Manufacturer, scanner.ManufacturerModelName) == (
        first.Manufacturer,
        first.ManufacturerModelName,
    )
    assert scanner.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"  # Acquisition Equipment
    referenced = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.SourceImageSequence}
    assert referenced == {(s.SOPClassUID, s.SOPInstanceUID) for s in sources}


def test_a_source_that_is_not_dicom_references_nothing_and_states_its_own_frame(tmp_path):
    img = make_image(volume().astype(np.float32), lia_affine())
    img.meta.update(filename_or_obj="scan.nii.gz", source_dtype="int16")
    ds = pydicom.dcmread(save_dicom_series(img, tmp_path / "s") / "IM_00001.dcm", stop_before_pixels=True)
    assert "SourceImageSequence" not in ds and "ContributingEquipmentSequence" not in ds
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"] and ds.PositionReferenceIndicator == ""


def world_order(img, reference_affine: np.ndarray) -> np.ndarray:
    """``img``'s values re-ordered onto the index grid of ``reference_affine`` (same world points)."""
    a = np.asarray(img.affine, dtype=np.float64)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in img.shape[1:]], indexing="ij"), -1).reshape(-1, 3)
    t = (voxel_to_world(a, idx) - reference_affine[:3, 3]) @ np.linalg.inv(reference_affine[:3, :3]).T
    t = np.rint(t).astype(int)
    out = np.empty(img.shape[1:], dtype=np.float64)
    out[t[:, 0], t[:, 1], t[:, 2]] = img[0].numpy().reshape(-1)
    return out


def test_nifti_and_dicom_writers_store_the_same_values_for_an_unsigned_source(shared_data, tmp_path):
    src = load_image(shared_data / "dicom" / "epi_sagittal")  # uint16 MR magnitude, 0..4095
    out = src.clone()
    out[0, :20] = out[0, :20] - 1368.4  # the undershoot a network leaves beside an edge
    out[0, -5:] += 0.6
    nifti = load_image(save_image(out, tmp_path / "sr.nii.gz", dtype="input"))
    dicom = load_image(save_dicom_series(out, tmp_path / "sr_dicom", reference=src))
    affine = np.asarray(nifti.affine, dtype=np.float64)
    assert np.allclose(np.asarray(dicom.affine), affine, atol=1e-4)
    stored = world_order(dicom, affine)
    np.testing.assert_array_equal(stored, nifti[0].numpy())
    assert stored.min() == 0 and (out[0].numpy() < 0).any()  # an MR magnitude source gives no negatives
    np.testing.assert_array_equal(stored, np.clip(np.rint(out[0].numpy().astype(np.float64)), 0, 65535))


def test_a_derived_series_of_one_volume_lists_that_volume_images_only(shared_data, tmp_path):
    """The GE diffusion series holds 2 positions x 7 volumes: a derived series of volume 3 names the two
    images at volume 3's positions (InstanceNumber order within each position), not all 14."""
    folder = shared_data / "dicom_qa" / "ge_dwi_ax_r2"
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir()) if f.is_file()]
    by_position: dict[tuple, list] = {}
    for h in sorted(headers, key=lambda h: int(h.InstanceNumber)):
        by_position.setdefault(tuple(round(float(v), 3) for v in h.ImagePositionPatient), []).append(h)
    assert sorted(len(v) for v in by_position.values()) == [7, 7]
    expected = {(v[3].SOPClassUID, v[3].SOPInstanceUID) for v in by_position.values()}

    out = save_dicom_series(load_image(folder, volume=3), tmp_path / "dwi_sr")
    ds = pydicom.dcmread(out / "IM_00001.dcm", stop_before_pixels=True)
    assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.SourceImageSequence} == expected
