"""Building MetaTensors that carry their grid: one place that sets affine and metadata together."""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = ["new_image", "affine_of"]


def affine_of(image: torch.Tensor) -> np.ndarray:
    """The 4x4 voxel-to-world affine of ``image`` as float64 (identity for a plain tensor)."""
    if isinstance(image, MetaTensor):
        return np.asarray(image.affine, dtype=np.float64).reshape(4, 4)
    return np.eye(4)


def new_image(
    array: torch.Tensor, like: torch.Tensor, affine: np.ndarray | None = None, **meta
) -> MetaTensor:
    """``array`` as a MetaTensor with ``like``'s metadata, a new ``affine`` and extra ``meta`` entries.

    The spatial shape recorded in the metadata follows ``array``; the affine is stored in float64 so
    that re-gridding never rounds voxel positions to float32.
    """
    base = dict(like.meta) if isinstance(like, MetaTensor) else {}
    base = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("affine", "spatial_shape")}
    base.update(meta)
    aff = affine_of(like) if affine is None else np.asarray(affine, dtype=np.float64)
    data = array.as_tensor() if isinstance(array, MetaTensor) else array
    out = MetaTensor(data, affine=torch.as_tensor(aff, dtype=torch.float64), meta=base)
    out.meta["spatial_shape"] = np.asarray(data.shape[1:])
    return out
