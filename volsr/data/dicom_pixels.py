"""The voxel values of a DICOM series, one volume at a time, decoded without a word on the terminal.

pydicom decodes what it can here (uncompressed, deflated, RLE, JPEG 2000 through Pillow); the rest
(JPEG lossless, JPEG-LS, ...) goes to GDCM through SimpleITK; a transfer syntax neither decodes is
refused naming it. Each image's RescaleSlope / RescaleIntercept is applied to its own values, and
the values take the type GDCM gives them (the stored type, or one that holds the rescaled range of
the stored bits, or float64 for a fractional slope), so ``--dtype input`` means what it did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volsr.data.dicom_files import quiet, quiet_sitk, unreadable
from volsr.data.dicom_frames import Frame, mosaic_wrapper
from volsr.errors import VolsrInputError

__all__ = ["SeriesVolumes", "value_dtype"]

_INTEGER_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")


def value_dtype(header, rescales: set[tuple[float, float]]) -> np.dtype:
    """The type of the rescaled values of images stored as ``header`` states (GDCM's rule)."""
    bits = int(header.get("BitsAllocated", 16) or 16)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    if bits == 32 and "FloatPixelData" in header:
        return np.dtype("float32")
    stored = np.dtype(f"{'int' if signed else 'uint'}{max(8, bits)}")
    if rescales <= {(1.0, 0.0)}:
        return stored
    if any(not float(s).is_integer() or not float(b).is_integer() for s, b in rescales):
        return np.dtype("float64")
    used = int(header.get("BitsStored", bits) or bits)  # GDCM takes the range of the stored bits
    lo, hi = (-(2 ** (used - 1)), 2 ** (used - 1) - 1) if signed else (0, 2**used - 1)
    ends = [s * v + b for s, b in rescales for v in (lo, hi)]
    for name in _INTEGER_TYPES:
        info = np.iinfo(name)
        if info.min <= min(ends) and max(ends) <= info.max:
            return np.dtype(name)
    return np.dtype("float64")


def _syntax(header) -> tuple[str, str]:
    uid = getattr(header, "file_meta", {}).get("TransferSyntaxUID")
    return (str(uid), getattr(uid, "name", str(uid))) if uid else ("", "unknown")


def _decode(file: Path) -> tuple[np.ndarray, object, bool]:
    """``(frames x rows x columns, header, rescaled)``: ``rescaled`` when GDCM applied the rescale."""
    from pydicom import dcmread
    from pydicom.pixels import get_decoder

    try:
        with quiet():
            header = dcmread(file)
    except Exception as exc:
        raise unreadable(file, exc) from None
    uid, name = _syntax(header)
    try:
        decoder = get_decoder(uid) if uid else None
        pydicom_decodes = uid == "" or (decoder is not None and decoder.is_available)
    except NotImplementedError:
        pydicom_decodes = False
    if pydicom_decodes:
        try:
            with quiet():
                pixels = np.asarray(header.pixel_array)
        except Exception as exc:
            raise unreadable(file, exc) from None
        return pixels.reshape(-1, *pixels.shape[-2:]), header, False

    sitk = quiet_sitk()
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileName(str(file))
        pixels = sitk.GetArrayFromImage(reader.Execute())
    except Exception:
        raise VolsrInputError(
            file,
            f"is stored in transfer syntax {name} ({uid}), which no decoder here reads (pydicom, GDCM); "
            "convert it to an uncompressed syntax first (e.g. gdcmconv --raw)",
        ) from None
    return pixels.reshape(-1, *pixels.shape[-2:]), header, True


class _WithPixels:
    """A header that hands nibabel's mosaic reader the pixels decoded here."""

    def __init__(self, header, pixels: np.ndarray) -> None:
        self._header, self._pixels = header, pixels

    def get(self, key, default=None):
        return self._pixels if key == "pixel_array" else self._header.get(key, default)

    def __getitem__(self, key):
        return self._header[key]

    def __contains__(self, key) -> bool:
        return key in self._header


def _tiles(header, pixels: np.ndarray) -> np.ndarray:
    """A mosaic's slices, ``(rows, columns, slices)``, as nibabel's MosaicWrapper lays them out."""
    from nibabel.nicom.dicomwrappers import MosaicWrapper

    wrapper = mosaic_wrapper(header)
    with quiet():
        unpacked = MosaicWrapper(_WithPixels(header, pixels), wrapper.csa_header, wrapper.n_mosaic)
        return np.asarray(unpacked.get_unscaled_data())


class SeriesVolumes:
    """A series' voxel values as a lazy ``(X, Y, Z[, volumes])`` array: indexing one volume decodes
    only that volume's files (``load_image`` takes one volume out of a 4-D series this way)."""

    def __init__(self, volumes: list[list[Frame]], shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self._volumes, self.dtype = volumes, np.dtype(dtype)
        self.shape = tuple(shape) + ((len(volumes),) if len(volumes) > 1 else ())
        self.ndim = len(self.shape)

    def volume(self, v: int) -> np.ndarray:
        """Volume ``v`` as ``(X, Y, Z)`` (column, row, slice), rescaled image by image."""
        decoded: dict[Path, tuple[np.ndarray, object, bool]] = {}
        slices = []
        for frame in self._volumes[v]:
            if frame.file not in decoded:
                decoded[frame.file] = _decode(frame.file)
            pixels, header, rescaled = decoded[frame.file]
            index = frame.frame or 0
            if index >= len(pixels):
                raise unreadable(frame.file, ValueError(f"frame {index + 1} of {len(pixels)} is missing"))
            image = pixels[index]
            image = _tiles(header, image) if frame.mosaic else image[..., None]  # (rows, cols, slices)
            if not rescaled and (frame.slope, frame.intercept) != (1.0, 0.0):
                image = image * frame.slope + frame.intercept
            slices.append(image)
        stacked = np.concatenate(slices, axis=-1).transpose(1, 0, 2)
        if stacked.shape != self.shape[:3]:
            raise VolsrInputError(
                self._volumes[v][0].file,
                f"holds pixels of shape {stacked.shape[:2]} where its header states {self.shape[:2]}",
            )
        return stacked.astype(self.dtype, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.stack([self.volume(v) for v in range(len(self._volumes))], axis=-1)
        data = data if self.ndim == 4 else data[..., 0]
        return data if dtype is None else data.astype(dtype)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        whole = (slice(None),) * 3
        one = len(index) == 4 and isinstance(index[3], int | np.integer)
        if self.ndim == 4 and one and index[:3] == whole:
            return self.volume(int(index[3]))
        if self.ndim == 3 and index[:3] == whole and len(index) <= 3:
            return self.volume(0)
        return np.asarray(self)[index]
