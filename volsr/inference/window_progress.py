"""A progress bar that says what it counts: the windows of one scan.

MONAI's ``sliding_window_inference(progress=True)`` draws a tqdm bar with no label and no unit, so
volsr runs the inferer without it and counts the windows its predictor is handed instead, under a
bar labelled ``windows of SCAN``; the total is MONAI's own tiling (:func:`window_count`).

Example:
    >>> predictor = WindowProgress(predictor, window_count(shape, roi, overlap), "windows of scan.nii.gz")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data.utils import dense_patch_slices

__all__ = ["WindowProgress", "window_count", "window_label"]


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float]) -> int:
    """The windows MONAI's ``sliding_window_inference`` runs over a volume of ``shape`` (one image):
    windows of ``roi`` stepped by ``roi * (1 - overlap)`` (at least 1), one step where a window spans
    its axis, on the volume padded to at least ``roi`` (MONAI's ``_get_scan_interval``, private, and
    its public ``dense_patch_slices``)."""
    overlaps = [float(overlap)] * len(shape) if isinstance(overlap, int | float) else list(overlap)
    size = [max(int(n), int(r)) for n, r in zip(shape, roi, strict=True)]
    steps = [
        int(r) if int(r) == n else max(int(int(r) * (1 - o)), 1)
        for n, r, o in zip(size, roi, overlaps, strict=True)
    ]
    return len(dense_patch_slices(size, [int(r) for r in roi], steps))


def window_label(image: torch.Tensor) -> str:
    """``windows of scan.nii.gz``: the file (or DICOM folder) ``image`` was read from, else ``the volume``."""
    source = getattr(image, "meta", {}).get("filename_or_obj")
    return f"windows of {Path(os.fspath(source)).name}" if source else "windows of the volume"


class WindowProgress:
    """``predictor`` (called by the inferer with a batch of windows first), counting the windows on a
    tqdm bar on stderr of ``total`` windows labelled ``label``; ``enabled=False``: no bar. The bar
    closes with the last window (or when this object is dropped, after an error)."""

    def __init__(self, predictor: Callable, total: int, label: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.predictor = predictor
        self.bar = tqdm(total=total, desc=label, unit="window", disable=not enabled, dynamic_ncols=True)

    def __call__(self, windows: torch.Tensor, *args, **kwargs):
        out = self.predictor(windows, *args, **kwargs)
        self.bar.update(int(windows.shape[0]))
        if self.bar.n >= self.bar.total:
            self.bar.close()
        return out
