"""The one rule for the values every writer stores: an integer source type's range bounds the output.

A network's output undershoots and overshoots at edges (a 0-4095 MR magnitude scan can come back with
-1368 beside the skull). Written in the source's integer type (``dtype="input"``), the output is
rounded and clipped to that type's range, so an unsigned source (MR magnitude) gives no negatives,
in NIfTI (:func:`volsr.data.io.save_image`) and DICOM (:func:`volsr.data.dicom_writer.save_dicom_series`)
alike. Float output keeps every value. A type the user names (``--dtype uint8``) must hold the values:
:func:`clipped_share` says how many it would clip, so that the writers can refuse or warn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["in_integer_range", "clipped_share", "value_range"]


def in_integer_range(values: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """``values`` rounded to integers and clipped to integer type ``dtype``'s range (still float64).

    Args:
        values: intensities in the source's units.
        dtype: an integer numpy type, e.g. the source's ``meta["source_dtype"]``.

    Raises:
        ValueError: ``dtype`` is not an integer type.
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu":
        raise ValueError(f"in_integer_range needs an integer type, got {dt}")
    lim = np.iinfo(dt)
    return np.clip(np.rint(np.asarray(values, dtype=np.float64)), lim.min, lim.max)


def clipped_share(values: np.ndarray, dtype: str | np.dtype) -> float:
    """The fraction of ``values`` that type ``dtype`` cannot hold: outside an integer type's range
    once rounded, or past a float type's largest finite value (0.0 when all fit)."""
    dt = np.dtype(dtype)
    values = np.asarray(values)
    if values.size == 0:
        return 0.0
    if dt.kind in "iu":
        lim = np.iinfo(dt)
        low, high = lim.min - 0.5, lim.max + 0.5  # what rounds into the range
        outside = np.count_nonzero((values < low) | (values >= high))
    elif dt.kind == "f":
        outside = np.count_nonzero(np.abs(values) > np.finfo(dt).max)
    else:
        raise ValueError(f"clipped_share needs an integer or float type, got {dt}")
    return float(outside) / values.size


def value_range(dtype: str | np.dtype) -> str:
    """A type's range for messages: ``0 .. 255`` for uint8."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
    return f"{info.min:.6g} .. {info.max:.6g}"
