"""Synthetic DICOM written with pydicom: classic series (3-D and 4-D), enhanced multi-frame files and the
objects found beside them (DICOMDIR, structured reports), on known RAS+ world grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0])
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
STUDY = "1.2.826.0.1.3680043.2.1125.7"


def ras_affine(rotation: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """``[rotation @ diag(spacing) | origin]``: voxel ``(column, row, slice)`` to RAS+ mm."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation, dtype=np.float64) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def _numbers(values) -> list[str]:
    return [f"{v:.10g}"[:16] for v in values]


def _plane(affine: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
    """ImageOrientationPatient, PixelSpacing and the LPS matrix of a RAS+ affine."""
    lps = LPS @ np.asarray(affine, dtype=np.float64)[:3]
    dx, dy = np.linalg.norm(lps[:, 0]), np.linalg.norm(lps[:, 1])
    iop = _numbers([*(lps[:, 0] / dx), *(lps[:, 1] / dy)])
    return iop, _numbers([dy, dx]), lps


def _base(sop_class: str, uid: str, number: int, description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "MR", "volsr-test", "Test^Synthetic"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = STUDY, uid, STUDY + ".1"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 7, description, number
    return ds


def _pixels(ds: Dataset, image: np.ndarray) -> None:
    """``image`` as ``(column, row[, frame])`` int16 values."""
    ds.Columns, ds.Rows = int(image.shape[0]), int(image.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    frames = image[..., None] if image.ndim == 2 else image
    ds.PixelData = np.ascontiguousarray(frames.transpose(2, 1, 0).astype("<i2")).tobytes()


def write_series(
    folder: Path,
    data: np.ndarray,
    affine: np.ndarray,
    uid: str | None = None,
    description: str = "synthetic",
    seed: int | None = 0,
    edit: Callable[[Dataset, int, int], None] | None = None,
    prefix: str = "IM",
) -> list[Path]:
    """A classic series, one file per slice, of ``data`` ``(X, Y, Z[, volumes])`` on ``affine`` (RAS+,
    sheared under gantry tilt): InstanceNumber counts slice by slice, volume after volume. Files get
    names in a shuffled order (``seed``; ``None`` keeps the order). ``edit(ds, k, v)`` changes a
    slice's header before it is written; file names start with ``prefix``. Returns the files in
    (volume, slice) order."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    data = data[..., None] if data.ndim == 3 else data
    nz, nv = data.shape[2], data.shape[3]
    iop, spacing, lps = _plane(affine)
    names = np.arange(nz * nv) if seed is None else np.random.default_rng(seed).permutation(nz * nv)
    paths = []
    for v in range(nv):
        for k in range(nz):
            n = v * nz + k
            ds = _base(MR_IMAGE, uid, n + 1, description)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
            ds.ImagePositionPatient = _numbers(lps @ [0, 0, k, 1])
            ds.ImageOrientationPatient, ds.PixelSpacing = iop, spacing
            ds.SliceThickness = f"{np.linalg.norm(lps[:, 2]):.6g}"
            _pixels(ds, data[:, :, k, v])
            if edit is not None:
                edit(ds, k, v)
            path = folder / f"{prefix}{names[n]:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def write_enhanced(path: Path, data: np.ndarray, affine: np.ndarray, uid: str | None = None) -> Path:
    """One enhanced MR multi-frame file of ``data`` ``(X, Y, Z, volumes)``: frames volume by volume, each
    placed by its own PlanePositionSequence, orientation and spacing in the shared groups."""
    uid = uid or generate_uid()
    iop, spacing, lps = _plane(affine)
    nz, nv = data.shape[2], data.shape[3]
    ds = _base(ENHANCED_MR_IMAGE, uid, 1, "enhanced")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = iop
    measures.PixelSpacing, measures.SliceThickness = spacing, f"{np.linalg.norm(lps[:, 2]):.6g}"
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for _ in range(nv):
        for k in range(nz):
            item, position = Dataset(), Dataset()
            position.ImagePositionPatient = _numbers(lps @ [0, 0, k, 1])
            item.PlanePositionSequence = [position]
            frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.NumberOfFrames = nz * nv
    _pixels(ds, data.reshape(*data.shape[:2], nz * nv, order="F"))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_structured_report(path: Path, uid: str | None = None) -> Path:
    """A Basic Text SR (no pixels) in its own series, as a scanner leaves beside the images."""
    ds = _base(BASIC_TEXT_SR, uid or generate_uid(), 1, "report")
    ds.Modality, ds.ValueType, ds.CompletionFlag = "SR", "CONTAINER", "COMPLETE"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicomdir(files: Sequence[Path], root: Path) -> Path:
    """The CD layout: ``files`` copied under ``root`` by pydicom's FileSet (``PT*/ST*/SE*/IM*``), with
    the DICOMDIR that indexes them at ``root``."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in files:
        fs.add(dcmread(path))
    root.mkdir(parents=True, exist_ok=True)
    fs.write(root)
    return root / "DICOMDIR"
