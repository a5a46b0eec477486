"""Reading volumes (NIfTI, MGH, NRRD, MetaImage, DICOM series) and writing NIfTI, geometry intact.

Convention: :func:`load_image` returns a channel-first float32 MetaTensor ``(1, X, Y, Z)`` whose
``affine`` (float64, 4x4) maps voxel centres ``(i, j, k, 1)`` to world millimetres in MONAI's RAS+
frame, the frame of a NIfTI ``sform``: x to the patient's Right, y Anterior, z Superior.
NIfTI and MGH affines are taken as nibabel reads them (the sform when its code is set, else the
qform); ITK files and DICOM (LPS+) become ``diag(-1, -1, 1) @ [direction * spacing | origin]``.
Sheared affines (CT with gantry tilt) are kept as they are, never straightened; a tilted DICOM
series gets its slice axis from the slice positions, which ITK alone would straighten.

Hand-written rather than MONAI's ``LoadImage``: its ITK reader needs ``itk`` (not a dependency), its
DICOM reader neither places 4-D series, mosaics and tilted stacks as dcm2niix does nor refuses what it
cannot place (:mod:`volsr.data.dicom`), and it keeps neither the qform nor the header codes needed to
write back.

Example:
    >>> img = load_image("scan.nii.gz")  # or a DICOM folder: load_image("dicom/", series_uid=...)
    >>> save_image(img * 2, "out.nii.gz", dtype="input")
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from volsr.data.acquisition import acquisition_record, parse_thickness, slice_acquisition
from volsr.data.dicom import read_dicom_folder, read_itk
from volsr.data.output_checks import check_name_length, check_outputs, input_files
from volsr.data.stored_values import clipped_share, in_integer_range, value_range
from volsr.data.temporaries import in_flight, temporary_name
from volsr.data.voxel_checks import coordinate_assumption, float32_voxels, nibabel_repairs
from volsr.errors import OVERWRITE, Option, VolsrInputError, VolsrInputWarning, write_error
from volsr.geometry.grids import is_sheared, voxel_spacing
from volsr.geometry.meta import affine_of

__all__ = [
    "FORMATS",
    "VOLUME_SUFFIXES",
    "scan_stem",
    "load_image",
    "save_image",
    "check_output",
    "describe",
    "sidecar_path",
    "read_sidecar",
    "write_sidecar",
    "discard_output",
]

#: file name endings read by :func:`load_image` (a folder is read as a DICOM series)
FORMATS = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".dcm": "dicom",
}
#: endings of single-file volumes (a lone .dcm is one slice, not a volume)
VOLUME_SUFFIXES = tuple(e for e, fmt in FORMATS.items() if fmt != "dicom")
_NIFTI_OUT = (".nii.gz", ".nii")
#: an output that is there already (an ``overwrite`` field: :data:`volsr.errors.OVERWRITE`)
EXISTS = "already exists; pass {overwrite} to replace it"
SIDECAR_EXISTS = "(the sidecar of the output) exists; pass {overwrite} to replace it"
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3, "unknown": 1.0}


def scan_stem(path: str | os.PathLike) -> str:
    """The name of a scan without its image ending: ``a/T2w.nii.gz`` -> ``T2w``, ``series/`` -> ``series``."""
    name = Path(path).name
    return next((name[: -len(e)] for e in FORMATS if name.lower().endswith(e)), name)


def _ending(path: Path, endings) -> str | None:
    name = path.name.lower()
    return next((e for e in endings if name.endswith(e)), None)


def _reader_error(exc: BaseException) -> str:
    """A reading library's exception as its type and its last non-empty line, for the one-line error
    that names the file."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _stated_voxel_size(img) -> np.ndarray:
    """pixdim[1:4] as the file holds them (nibabel's loaded header has already set zeros to 1)."""
    with nib.openers.ImageOpener(img.get_filename()) as f:
        raw = type(img.header).from_fileobj(f, check=False)
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def _read_nibabel(path: Path) -> tuple[object, np.ndarray, str, dict]:
    with nibabel_repairs(path):  # its header fixes, said as volsr's warnings (or refused below)
        return _read_nibabel_header(path)


def _read_nibabel_header(path: Path) -> tuple[object, np.ndarray, str, dict]:
    img = nib.load(str(path))
    dtype = np.dtype(img.get_data_dtype()).name
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        return img.dataobj, affine, dtype, {}
    hdr = img.header
    if int(hdr["sform_code"]) == 0:  # the grid comes from pixdim, which must state every voxel size
        size = _stated_voxel_size(img)
        if not np.all(np.isfinite(size)) or np.any(size == 0):
            raise VolsrInputError(
                path,
                f"states voxel size {' x '.join(f'{v:g}' for v in size)} (pixdim) and no sform; "
                "the grid is unknown, fix the header",
            )
    xyz, t = hdr.get_xyzt_units()
    to_mm = _UNIT_TO_MM.get(xyz, 1.0)
    qform = np.asarray(hdr.get_qform(), dtype=np.float64)
    affine[:3] *= to_mm  # volsr works in mm whatever unit the file declares
    qform[:3] *= to_mm
    # nibabel moves scl_slope/scl_inter from the header into the data proxy
    slope, inter = float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0))
    info = {
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "xyzt_units": ("mm" if to_mm != 1.0 else xyz, t),
        "descrip": hdr["descrip"].item().decode("latin-1").rstrip("\x00"),
        "qform": qform.tolist(),
        "affine": affine.tolist(),  # the affine the qform above goes with
        "scaled": (slope, inter) != (1.0, 0.0),
        "scaling": (slope, inter),  # value = stored * slope + inter
    }
    if (assumption := coordinate_assumption(info)) is not None:
        warnings.warn(f"{path}: {assumption}", VolsrInputWarning, stacklevel=4)
    return img.dataobj, affine, dtype, {"nifti_header": info}


def _volume_index(path: str, shape: tuple[int, ...], volume: int | None, hint: str) -> tuple:
    """Index that takes one 3-D volume out of ``shape`` (problems as VolsrInputError)."""
    if 0 in shape:
        raise VolsrInputError(path, f"is empty (shape {'x'.join(map(str, shape))})")
    if len(shape) < 3 or 1 in shape[:3]:
        extent = sum(n > 1 for n in shape[:3])
        what = f"is {extent}-D" if extent else "is a single voxel"
        raise VolsrInputError(
            path, f"{what} (shape {'x'.join(map(str, shape))}); volsr needs a 3-D volume{hint}"
        )
    extra = [i for i, n in enumerate(shape[3:], start=3) if n > 1]
    if len(extra) > 1:
        raise VolsrInputError(
            path, f"is {len(shape)}-D (shape {'x'.join(map(str, shape))}); volsr reads 3-D or 4-D"
        )
    n_vol = shape[extra[0]] if extra else 1
    if volume is None and n_vol > 1:
        raise VolsrInputError(
            path,
            f"is 4-D with {n_vol} volumes; pick one with {{volume}} in 0..{n_vol - 1}",
            volume=Option("volume=", "--volume"),
        )
    v = 0 if volume is None else volume
    if not 0 <= v < n_vol:
        raise VolsrInputError(
            path,
            "{volume} is out of range: the image has " + f"{n_vol} volume(s)",
            volume=Option(f"volume={volume}", f"--volume {volume}"),
        )
    return (slice(None),) * 3 + tuple(v if i in extra else 0 for i in range(3, len(shape)))


def load_image(
    path: str | os.PathLike, series_uid: str | None = None, volume: int | None = None
) -> MetaTensor:
    """Read a 3-D volume as a channel-first float32 MetaTensor with its RAS+ affine.

    Args:
        path: a NIfTI, MGH, NRRD or MetaImage file (see :data:`FORMATS`), or a folder holding a
            DICOM series.
        series_uid: SeriesInstanceUID to read when the folder holds several DICOM series.
        volume: index of the volume to read from a 4-D image (required when it has several).

    Returns:
        ``(1, X, Y, Z)`` float32 MetaTensor; ``affine`` maps voxel centres to RAS+ mm (module
        doc). ``meta`` holds ``filename_or_obj``, ``source_format``, ``source_dtype`` (the stored
        numpy type, e.g. ``"int16"``) and, for NIfTI, ``nifti_header`` (qform/sform codes, units,
        description, qform), which :func:`save_image` writes back, and ``slice_acquisition`` where
        the file states the slice thickness (:mod:`volsr.data.acquisition`). NIfTI scaling is applied.

    Raises:
        VolsrInputError: missing or unreadable file, unsupported format, 2-D, several volumes or
            series without a choice, NaN/Inf voxels, empty image.

    Example:
        >>> img = load_image("bold.nii.gz", volume=0)
    """
    p = Path(path)
    if not p.exists():
        raise VolsrInputError(path, "no such file or folder")
    if volume is not None and (
        isinstance(volume, bool) or not isinstance(volume, int | np.integer) or volume < 0
    ):
        raise VolsrInputError(
            path, "{volume} must be an index >= 0, got " + repr(volume), volume=Option("volume", "--volume")
        )
    if series_uid is not None and not p.is_dir():
        raise VolsrInputError(
            path, "{series} applies to a folder of DICOM series only", series=Option("series_uid", "--series")
        )
    fmt = "dicom" if p.is_dir() else FORMATS.get(_ending(p, FORMATS) or "")
    if fmt is None:
        raise VolsrInputError(
            path, f"unsupported file type; volsr reads {', '.join(FORMATS)} or a DICOM folder"
        )
    hint = "; for a DICOM series give its folder" if fmt == "dicom" and not p.is_dir() else ""
    try:
        if p.is_dir():
            arr, affine, dtype, extra = read_dicom_folder(p, series_uid)
        else:
            arr, affine, dtype, extra = (_read_nibabel if fmt in ("nifti", "mgh") else read_itk)(p)
        index = _volume_index(str(path), tuple(int(n) for n in arr.shape), volume, hint)
        scaled = bool(extra.get("nifti_header", {}).get("scaled"))
        with np.errstate(all="ignore"):  # nibabel's scaling: what overflows is reported just below
            data = float32_voxels(path, arr[index], scaled)
    except (VolsrInputError, MemoryError):
        raise
    except PermissionError as exc:  # the file is fine; this user may not read it
        raise VolsrInputError(exc.filename or path, f"cannot be read: {exc.strerror}") from None
    except Exception as exc:  # any reader failure is a bad file from the user's point of view
        raise VolsrInputError(path, f"cannot be read as {fmt}: {_reader_error(exc)}") from None
    if p.is_dir():
        thickness = extra.pop("slice_thickness_mm", None)
        acquisition_type = (extra.get("dicom_tags") or {}).get("0018|0023")  # MRAcquisitionType
    else:  # a dcm2niix / BIDS sidecar beside the file
        sidecar = read_sidecar(p)
        thickness = parse_thickness(sidecar.get("SliceThickness"))
        acquisition_type = sidecar.get("MRAcquisitionType")
    _check_affine(path, affine)
    meta = {
        "filename_or_obj": str(path),
        "source_format": fmt,
        "source_dtype": dtype,
        "space": "RAS",
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(data.shape),
        **extra,
    }
    if (record := acquisition_record(thickness, affine)) is not None:
        meta["slice_acquisition"] = record  # volsr.data.acquisition: what the header says of the slices
    if (acquisition_type := str(acquisition_type or "").strip().upper()) in ("2D", "3D"):
        meta["acquisition_type"] = acquisition_type
    if volume is not None:
        meta["volume"] = int(volume)
    return MetaTensor(
        torch.from_numpy(data[None]), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta
    )


def _check_affine(path: str | os.PathLike, affine: np.ndarray | None) -> None:
    """Refuse a grid that places no volume in space: missing, non-finite or singular affines."""
    if affine is None:
        raise VolsrInputError(path, "states no voxel-to-world geometry; volsr needs a 3-D grid")
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise VolsrInputError(
            path, "has a non-finite (NaN or Inf) affine; the grid is unknown, fix its header"
        )
    columns = a[:3, :3] / np.maximum(np.linalg.norm(a[:3, :3], axis=0), 1e-300)
    if abs(np.linalg.det(columns)) < 1e-6:  # a voxel axis of zero length, or two axes along one line
        raise VolsrInputError(
            path, "has a singular affine (its voxel axes span no volume); the grid is unknown, fix the header"
        )


def _meta(image: torch.Tensor) -> dict:
    return dict(image.meta) if isinstance(image, MetaTensor) else {}


def _output_dtype(dtype: str, image: torch.Tensor | None) -> np.dtype:
    name = _meta(image).get("source_dtype") if dtype == "input" and image is not None else dtype
    if name is None:
        raise ValueError("dtype='input' needs meta['source_dtype'] (set by load_image); use dtype='float32'")
    try:
        dt = np.dtype(name)
        nib.Nifti1Header().set_data_dtype(dt)
    except Exception:
        raise ValueError(
            f"dtype must be 'float32', 'input' or a NIfTI integer/float type, got {dtype!r}"
        ) from None
    if dt.kind not in "iuf":
        raise ValueError(f"dtype must be 'float32', 'input' or a NIfTI integer/float type, got {dtype!r}")
    return dt


def check_output(
    path: str | os.PathLike,
    image: torch.Tensor | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    sidecar: bool = False,
    values: bool = True,
) -> Path:
    """Everything :func:`save_image` (and, with ``sidecar``, :func:`write_sidecar`) would refuse,
    checked before any work is done. With ``values``, a ``dtype`` named explicitly (not ``"input"``)
    must hold ``image``'s values (the input's: the output keeps its range); :func:`save_image` itself
    warns of what the output then clips.

    Raises:
        VolsrInputError: not a .nii/.nii.gz name, a name too long for the file system, a file
            ``image`` was read from (the scan, its sidecar: :mod:`volsr.data.output_checks`), an
            existing file (or, with ``sidecar``, sidecar) without ``overwrite``, or a folder.
        ValueError: an unknown ``dtype``, or one that would clip some of ``image``'s values (the line
            says how many).
    """
    out = Path(path)
    if _ending(out, _NIFTI_OUT) is None:
        raise VolsrInputError(path, "volsr writes NIfTI only; name the output .nii.gz or .nii")
    source = _meta(image).get("filename_or_obj") if image is not None else None
    if source:  # the scan, its sidecar, a DICOM folder's files: never written over
        check_outputs(
            [out, *([sidecar_path(out)] if sidecar else [])], input_files([str(source)], sidecar_path)
        )
    else:
        check_name_length(out)
    if out.is_dir():
        raise VolsrInputError(path, "is a folder; give an output file name")
    if out.exists() and not overwrite:
        raise VolsrInputError(path, EXISTS, overwrite=OVERWRITE)
    if sidecar and sidecar_path(out).exists() and not overwrite:
        raise VolsrInputError(sidecar_path(out), SIDECAR_EXISTS, overwrite=OVERWRITE)
    dt = _output_dtype(dtype, image)
    if values and dtype != "input" and image is not None:
        share = clipped_share(_values(image), dt)
        if share > 0:
            raise VolsrInputError(
                _meta(image).get("filename_or_obj", "the image"),
                f"{{dtype}} {dt.name} holds {value_range(dt)} and would clip {share:.1%} of its voxels; "
                "use {input_or_float32}",
                dtype=Option("dtype", "--dtype"),
                input_or_float32=Option("dtype='input' or 'float32'", "--dtype input or float32"),
            )
    return out


def _values(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)


def _warn_if_clipped(path: Path, image: torch.Tensor, dtype: str, dt: np.dtype) -> None:
    """A type named explicitly that clips some of the output's values (edges overshoot): say how many.
    (``"input"`` clips by design: :mod:`volsr.data.stored_values`.)"""
    if dtype == "input" or dt.kind not in "iuf":
        return
    if (share := clipped_share(_values(image), dt)) > 0:
        warnings.warn(
            VolsrInputWarning(
                f"{path}: {share:.2%} of the voxels lie outside {dt.name}'s range ({value_range(dt)}) and "
                "were clipped to it; {float32} keeps every value",
                float32=Option("dtype='float32'", "--dtype float32"),
            ),
            stacklevel=3,
        )


def _qform(affine: np.ndarray, info: dict) -> np.ndarray:
    """The qform to store: the affine itself, or for a sheared one the source qform moved along."""
    if not is_sheared(affine) or info.get("qform") is None or info.get("affine") is None:
        return affine  # a sheared affine without a source qform: nibabel stores its nearest rigid frame
    q, ref = np.asarray(info["qform"]), np.asarray(info["affine"])
    if np.array_equal(ref, affine):
        return q
    return q @ np.linalg.inv(ref) @ affine  # the same index-space change (crop, re-grid) as the sform


#: NIFTI_XFORM_ALIGNED_ANAT: nibabel's code for an affine whose space the header does not name
_ALIGNED = 2


def _coordinate_codes(info: dict, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int]:
    """The (qform, sform) codes to write: the source's (scanner, 1, when it had none), such that the
    affine reads back from the file. A source with no codes keeps them at 0, never claiming scanner
    coordinates it was not given, where pixdim alone rebuilds the grid (as it did on reading:
    nibabel's base affine); else the sform holds it with nibabel's code for an unnamed space."""
    qcode, scode = int(info.get("qform_code", 1)), int(info.get("sform_code", 1))
    if qcode == 0 and scode == 0:
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_zooms(tuple(float(z) for z in voxel_spacing(affine)))
        return 0, (0 if np.allclose(header.get_base_affine(), affine, atol=1e-5) else _ALIGNED)
    if scode == 0 and (qcode == 0 or is_sheared(affine)):
        scode = qcode or 1  # the affine must be readable back from the file: only an sform holds shears
    return qcode, scode


def _to_nifti(image: torch.Tensor, dt: np.dtype, rescale: bool) -> nib.Nifti1Image:
    """The NIfTI image; ``rescale`` stores integers with a slope/inter nibabel fits to the range."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)  # channels as volumes
    elif arr.ndim != 3:
        raise ValueError(f"save_image needs a (C, X, Y, Z) or (X, Y, Z) image, got shape {tuple(arr.shape)}")
    info = _meta(image).get("nifti_header", {})
    if dt.kind in "iu" and not rescale:
        arr = in_integer_range(arr, dt).astype(dt)  # the rule the DICOM writer follows too
    else:
        arr = arr.astype(np.float32 if rescale else dt)
    img = nib.Nifti1Image(arr, None)
    img.header.set_data_dtype(dt)
    affine = affine_of(image)
    qcode, scode = _coordinate_codes(info, affine, arr.shape[:3])
    img.set_sform(affine, code=scode)
    img.set_qform(_qform(affine, info), code=qcode)
    img.header.set_xyzt_units(*info.get("xyzt_units", ("mm", "sec")))
    img.header["descrip"] = info.get("descrip", "")[:79].encode("latin-1", "replace")
    return img


def save_image(
    image: torch.Tensor, path: str | os.PathLike, dtype: str = "float32", overwrite: bool = False
) -> Path:
    """Write a channel-first image to NIfTI (.nii / .nii.gz), atomically, its header restored.

    The affine becomes the sform (exact, sheared or not) and, when orthogonal, the qform; a sheared
    image keeps its source's qform moved along with the grid. qform/sform codes, units and
    description come from ``meta["nifti_header"]`` (codes default to 1, scanner). The file is
    written to a temporary name in the same folder and then renamed, so it is never half-written.

    Args:
        image: ``(1, X, Y, Z)`` MetaTensor (several channels are written as a 4-D image).
        path: output file; parent folders are created.
        dtype: ``"float32"``, ``"input"`` (the loaded file's type, rounded and clipped to its range;
            a source stored with scl_slope/scl_inter gets its type with a slope/inter fitted to the
            new range) or a numpy integer/float type name such as ``"int16"``.
        overwrite: replace an existing file (never the file the image was loaded from).

    Returns:
        The written path.

    Example:
        >>> save_image(load_image("ct.nii.gz"), "ct_copy.nii.gz", dtype="input")
    """
    out = check_output(path, image, dtype, overwrite, values=False)
    dt = _output_dtype(dtype, image)
    _warn_if_clipped(out, image, dtype, dt)
    scaled_source = _meta(image).get("nifti_header", {}).get("scaled", False)
    nii = _to_nifti(image, dt, rescale=dtype == "input" and dt.kind in "iu" and scaled_source)
    return _replace_atomically(out, lambda tmp: nib.save(nii, str(tmp)), _ending(out, _NIFTI_OUT), overwrite)


def _replace_atomically(
    out: Path, write: Callable[[Path], object], suffix: str = "", overwrite: bool = True
) -> Path:
    """``write`` a temporary file in ``out``'s folder, then give it the name ``out``: never half-written.

    Without ``overwrite`` the name is taken exclusively (a hard link, else ``O_EXCL``), so of two
    writers racing for one output the second fails instead of replacing the first. Any failure
    (read-only folder, disk full, a signal) removes the temporary file; an ``OSError`` becomes one
    :class:`~volsr.errors.VolsrInputError` naming ``out``.
    """
    tmp = temporary_name(out, suffix=suffix)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with in_flight(tmp):
            write(tmp)
        if overwrite:
            os.replace(tmp, out)
        else:
            _claim(tmp, out)
    except FileExistsError:
        raise VolsrInputError(out, EXISTS, overwrite=OVERWRITE) from None
    except OSError as exc:
        raise write_error(out, exc) from None
    finally:
        with contextlib.suppress(OSError):  # a failed clean-up must not hide the error above
            tmp.unlink(missing_ok=True)
    return out


def _claim(tmp: Path, out: Path) -> None:
    """Give the finished ``tmp`` the name ``out`` only if no file has it (FileExistsError otherwise)."""
    try:
        os.link(tmp, out)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    os.close(os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # no hard links here: reserve the name
    os.replace(tmp, out)


def discard_output(path: str | os.PathLike) -> None:
    """Delete an output written moments ago (a file, or a DICOM series folder) whose companion write
    (its sidecar) failed: a half-made result is not left behind."""
    p = Path(path)
    with contextlib.suppress(OSError):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def sidecar_path(path: str | os.PathLike, folder: bool = False) -> Path:
    """The JSON sidecar of an image file (BIDS / dcm2niix): ``scan.nii.gz`` -> ``scan.json``; of a
    DICOM series folder (``folder=True``): ``scan_sr`` -> ``scan_sr.json``."""
    p = Path(path)
    ending = "" if folder else _ending(p, VOLUME_SUFFIXES) or p.suffix
    return p.with_name(p.name[: len(p.name) - len(ending)] + ".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of ``path`` as a dict; ``{}`` when there is none or it is not a JSON object.
    Optional metadata: a broken sidecar never makes a good scan unreadable."""
    try:
        info = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def write_sidecar(
    path: str | os.PathLike, info: Mapping, overwrite: bool = False, folder: bool = False
) -> Path:
    """Write ``info`` as the JSON sidecar of the image file (or, with ``folder``, the DICOM series
    folder) ``path``, atomically; an existing sidecar is replaced only with ``overwrite``. Returns
    the sidecar's path."""
    dst = sidecar_path(path, folder)
    if dst.exists() and not overwrite:
        raise VolsrInputError(dst, SIDECAR_EXISTS, overwrite=OVERWRITE)
    text = json.dumps(dict(info), indent=2, default=str) + "\n"
    return _replace_atomically(dst, lambda tmp: tmp.write_text(text), overwrite=overwrite)


def describe(image: torch.Tensor) -> dict:
    """Summary of an image: grid, orientation, source type and intensity range.

    Returns:
        ``path``, ``shape`` (spatial voxels), ``spacing`` (mm per axis), ``orientation`` (nibabel
        axis codes such as ``"RAS"``), ``source_dtype`` (the stored type), ``scaling`` (a NIfTI's
        ``(scl_slope, scl_inter)`` where the header scales the stored values, else ``None``), ``min``,
        ``max``, ``mean`` (of the values after scaling), ``sheared``, ``slices`` (the stated slice
        thickness against the spacing, or ``None``).
    """
    affine = affine_of(image)
    meta = _meta(image)
    _check_affine(meta.get("filename_or_obj", "image"), affine)
    data = image.detach().float()
    header = meta.get("nifti_header") or {}
    return {
        "path": meta.get("filename_or_obj"),
        "shape": tuple(int(n) for n in image.shape[1:]),
        "spacing": tuple(float(s) for s in voxel_spacing(affine)),
        "orientation": "".join(str(c) for c in nib.aff2axcodes(affine)),
        "source_dtype": meta.get("source_dtype", str(image.dtype).replace("torch.", "")),
        "scaling": header.get("scaling") if header.get("scaled") else None,
        "min": float(data.min()),
        "max": float(data.max()),
        "mean": float(data.mean()),
        "sheared": is_sheared(affine),
        "slices": acquisition.describe() if (acquisition := slice_acquisition(image)) else None,
    }
