"""What a file's voxels and header must be for volsr to use them, said in volsr's own words.

* Voxels become float32 (:func:`float32_voxels`): complex and RGB data are refused with their type
  named (volsr never keeps a silent real part); values past float32's range, and NaN or Inf (stored,
  or made by the header's scaling), are refused in one line; numpy's own warnings never print.
* nibabel repairs some headers as it reads them (a negative ``pixdim``, a wrong ``bitpix``) and logs
  that on its ``nibabel.global`` logger, which prints to stderr (:func:`nibabel_repairs` collects
  those lines and repeats each as a :class:`~volsr.errors.VolsrInputWarning` naming the file).
* A NIfTI header with no coordinate codes (qform_code = sform_code = 0) states no space: the grid is
  pixdim alone (:func:`coordinate_assumption`); outputs keep the codes at 0 and say so in their sidecar.

Example:
    >>> with nibabel_repairs("scan.nii"):
    ...     img = nib.load("scan.nii")
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from volsr.errors import VolsrInputError, VolsrInputWarning

__all__ = ["float32_voxels", "nibabel_repairs", "coordinate_assumption", "NO_COORDINATE_CODES"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: how nibabel words its repairs, and how volsr says them (others are repeated as nibabel words them)
_REPAIRS = {
    "pixdim[1,2,3] should be positive": "states a negative voxel size in pixdim; read as its absolute "
    "value (the axis directions come from the qform/sform, not from the sign)",
    "pixdim[1,2,3] should be non-zero": "states a zero voxel size in pixdim; read as 1 mm",
    "bitpix does not match datatype": "states a bitpix that does not match its datatype; read by datatype",
    "qfac (pixdim[0]) should be 1": "states a qfac (pixdim[0]) other than 1 or -1; read as 1",
}
NO_COORDINATE_CODES = (
    "the input header states no coordinate system (qform_code = sform_code = 0): its grid was taken "
    "from pixdim alone (no orientation, the volume centred on the origin); the output keeps both codes 0"
)
_nibabel_lock = threading.Lock()


def float32_voxels(path: str | os.PathLike, raw: np.ndarray, scaled: bool = False) -> np.ndarray:
    """``raw`` (a volume as its reader returns it) as float32, or a one-line refusal naming ``path``.

    Args:
        path: the file, for the messages.
        raw: the voxels, scaled (NIfTI ``scl_slope`` / ``scl_inter`` applied).
        scaled: the header scales the stored values, so NaN or Inf may come from the scaling.

    Raises:
        VolsrInputError: complex or structured (RGB) voxels; NaN or Inf voxels; values past float32.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind == "c":
        raise VolsrInputError(
            path,
            f"stores complex voxels ({raw.dtype}); volsr reads real-valued images and never drops the "
            "imaginary part silently: save the magnitude as a real image first (e.g. fslcomplex -realabs)",
        )
    if raw.dtype.kind not in "biuf":
        raise VolsrInputError(
            path, f"stores {raw.dtype} voxels (e.g. RGB); volsr reads single-valued (grey-level) images"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # counted and reported below, in one line
        data = raw.astype(np.float32)
    if raw.dtype.kind in "biu":
        return data
    finite = np.isfinite(raw)
    stored = int(raw.size - np.count_nonzero(finite))
    if stored:
        where = "after the header's scaling (scl_slope / scl_inter)" if scaled else "(in the file)"
        raise VolsrInputError(path, f"has {stored} NaN or Inf voxel(s) {where}; fill or mask them first")
    past = int(np.count_nonzero(~np.isfinite(data)))
    if past:
        largest = float(np.max(np.abs(raw)))
        raise VolsrInputError(
            path,
            f"has {past} voxel(s) past float32's range (largest magnitude {largest:.3g}, float32 holds "
            f"{_FLOAT32_MAX:.3g}); they would be Inf in float32: rescale the image first",
        )
    return data


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def nibabel_repairs(path: str | os.PathLike) -> Iterator[None]:
    """Read with nibabel inside this block: what it logs of its header repairs is said as one
    ``volsr: warning: <path>: ...`` line each (:class:`~volsr.errors.VolsrInputWarning`), never
    printed by nibabel. Serialised: nibabel's logger is one for all threads."""
    import nibabel as nib

    logger = nib.imageglobals.logger
    collect = _Collect()
    with _nibabel_lock:
        handlers, propagate = list(logger.handlers), logger.propagate
        logger.handlers = [collect]  # nibabel's own StreamHandler would print to stderr
        logger.propagate = False
        try:
            yield
        finally:
            logger.handlers, logger.propagate = handlers, propagate
    for message in dict.fromkeys(collect.messages):
        said = next((ours for theirs, ours in _REPAIRS.items() if message.startswith(theirs)), None)
        warnings.warn(
            f"{path}: {said or 'header repaired as nibabel reads it: ' + message}", VolsrInputWarning, 3
        )


def coordinate_assumption(header_info: dict | None) -> str | None:
    """:data:`NO_COORDINATE_CODES` for a NIfTI header (``meta["nifti_header"]``) whose qform and sform
    codes are both 0, else ``None``."""
    if not header_info:
        return None
    if int(header_info.get("qform_code", 1)) == 0 and int(header_info.get("sform_code", 1)) == 0:
        return NO_COORDINATE_CODES
    return None
