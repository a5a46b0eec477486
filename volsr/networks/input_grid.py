"""The network's input: the scan re-gridded onto the output grid the way the network was trained.

A generator refines an up-sampling of the scan (:class:`volsr.networks.ResidualSR3D` adds its residual
to it), so inference, training and per-scan adaptation must all build that up-sampling alike. Which
one is a property of the weights (``ResidualSRConfig.input_interpolation``, stored in every checkpoint):
the cubic B-spline (thick slices), or zero-filled Fourier interpolation (a reduced k-space matrix: its
acquired band is then exact in the input, and the network only adds what was not acquired).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from volsr.geometry.interpolation import resample_array
from volsr.transforms.kspace import fourier_resample

__all__ = ["INPUT_INTERPOLATIONS", "input_interpolation", "regrid_input"]

#: the up-samplings a network can be trained on
INPUT_INTERPOLATIONS = ("cubic", "fourier")


def input_interpolation(network: nn.Module) -> str:
    """How ``network`` expects its input re-gridded (``"cubic"`` for a network that does not say)."""
    return getattr(getattr(network, "config", None), "input_interpolation", "cubic")


def regrid_input(image: torch.Tensor, new_shape: Sequence[int], mode: str = "cubic") -> torch.Tensor:
    """``image`` ``(C, X, Y, Z)`` re-gridded to ``new_shape`` voxels (field of view kept) by ``mode``,
    one of :data:`INPUT_INTERPOLATIONS`; a plain tensor."""
    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    if mode == "cubic":
        return resample_array(data, new_shape, "cubic")
    if mode == "fourier":
        return fourier_resample(data, new_shape).as_tensor()
    raise ValueError(f"input interpolation must be one of {INPUT_INTERPOLATIONS}, got {mode!r}")
