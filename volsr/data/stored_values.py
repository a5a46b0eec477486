"""The one rule for the values every writer stores: an integer source type's range bounds the output.

A network's output undershoots and overshoots at edges (a 0-4095 MR magnitude scan can come back with
-1368 beside the skull). Written in the source's integer type (``dtype="input"``), the output is
rounded and clipped to that type's range, so an unsigned source (MR magnitude) gives no negatives,
in NIfTI (:func:`volsr.data.io.save_image`) and DICOM (:func:`volsr.data.dicom_writer.save_dicom_series`)
alike. Float output keeps every value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["in_integer_range"]


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
