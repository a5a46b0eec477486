"""Synthetic scans in every format, on known world grids: helpers shared by the I/O tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from volsr.geometry.grids import is_sheared, voxel_to_world

SHAPE = (7, 6, 5)
LPS = np.diag([-1.0, -1.0, 1.0])


def lia_affine(spacing=(1.0, 1.5, 2.0), angle_deg: float = 15.0, origin=(-40.0, 25.0, 18.0)) -> np.ndarray:
    """Axes i -> Left, j -> Inferior, k -> Anterior, then tilted about x: oblique and flipped."""
    a = np.deg2rad(angle_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    lia = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    m = np.eye(4)
    m[:3, :3] = tilt @ lia @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def rotation_from_quaternion(q) -> np.ndarray:
    """The 3 x 3 rotation of the quaternion ``q = (w, x, y, z)``, normalised first (the identity for a
    near-zero one): random orientations for the geometry properties."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q) if np.linalg.norm(q) > 1e-3 else np.array([1.0, 0, 0, 0])
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def volume(shape=SHAPE) -> np.ndarray:
    """Distinct integer values, so that any index mix-up shows."""
    return np.arange(np.prod(shape), dtype=np.int16).reshape(shape) - 40


def corners(shape) -> np.ndarray:
    return np.array(
        [[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )


def assert_on_world_grid(img, truth: np.ndarray, affine: np.ndarray, same_index: bool = True) -> None:
    """Every voxel of ``img`` sits at a voxel centre of the truth and carries the truth's value there."""
    a = np.asarray(img.affine, dtype=np.float64)
    shape = tuple(img.shape[1:])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    truth_idx = (voxel_to_world(a, idx) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    np.testing.assert_allclose(truth_idx, np.rint(truth_idx), atol=1e-3)
    t = np.rint(truth_idx).astype(int)
    assert np.all(t >= 0) and np.all(t < np.asarray(truth.shape))
    np.testing.assert_array_equal(img[0].numpy().reshape(-1), truth[t[:, 0], t[:, 1], t[:, 2]])
    if same_index:
        np.testing.assert_array_equal(t, idx)
        c = corners(shape)
        np.testing.assert_allclose(voxel_to_world(a, c), voxel_to_world(affine, c), atol=1e-4)


def write_itk(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    lps = LPS @ affine[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:, 3].tolist())
    sitk.WriteImage(img, str(path))


def write_dicom_series(
    folder: Path, arr: np.ndarray, affine: np.ndarray, uid: str, desc: str, extra_tags: dict | None = None
) -> None:
    """A classic one-file-per-slice MR series with its own SeriesInstanceUID (and ``extra_tags``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine[:3]  # may be sheared (gantry tilt): positions come from the affine, not from ITK
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0).astype(np.int16))
    img.SetSpacing(spacing.tolist())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    iop = "\\".join(f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(arr.shape[2]):
        sl = img[:, :, k]
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": "MR",
            "0008|103e": desc,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in lps @ [0, 0, k, 1]),
            "0020|0037": iop,
            **(extra_tags or {}),
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid.rsplit('.', 1)[-1]}_{k:03d}.dcm"))
        writer.Execute(sl)


def write_nifti(path: Path, arr: np.ndarray, affine: np.ndarray, **header) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine if not is_sheared(affine) else None, code=header.get("qform_code", 1))
    img.set_sform(affine, code=header.get("sform_code", 1))
    if "xyzt_units" in header:
        img.header.set_xyzt_units(*header["xyzt_units"])
    if "descrip" in header:
        img.header["descrip"] = header["descrip"]
    nib.save(img, str(path))
    return path


WRITERS = {
    ".nii": lambda p, a, m: write_nifti(p, a, m),
    ".nii.gz": lambda p, a, m: write_nifti(p, a, m),
    ".mgz": lambda p, a, m: nib.save(nib.MGHImage(a.astype(np.float32), m), str(p)),
    ".nrrd": write_itk,
    ".nhdr": write_itk,
    ".mha": write_itk,
    ".mhd": write_itk,
}


def sheared_affine() -> np.ndarray:
    m = lia_affine()
    m[:3, 2] += 0.3 * m[:3, 1]  # gantry tilt: the slice axis leans along j
    return m
