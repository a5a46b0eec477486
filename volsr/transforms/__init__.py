"""Degradation transforms: turn a high-resolution scan into a realistic low-resolution one."""

from volsr.transforms.kspace import (
    KSpaceTruncation,
    KSpaceTruncationd,
    RandKSpaceTruncation,
    RandKSpaceTruncationd,
    fourier_resample,
)
from volsr.transforms.noise import Noise, Noised, RandNoise, RandNoised
from volsr.transforms.pipeline import build_degradation
from volsr.transforms.protocol import (
    QUALITY_BAR,
    KSpace,
    Protocol,
    ThickSlices,
    as_protocol,
    protocol_from_dict,
)
from volsr.transforms.slice_thickness import (
    RandSliceThickness,
    RandSliceThicknessd,
    SliceThickness,
    SliceThicknessd,
    slice_profile_matrix,
)

__all__ = [
    "SliceThickness",
    "SliceThicknessd",
    "RandSliceThickness",
    "RandSliceThicknessd",
    "slice_profile_matrix",
    "KSpaceTruncation",
    "KSpaceTruncationd",
    "RandKSpaceTruncation",
    "RandKSpaceTruncationd",
    "fourier_resample",
    "Noise",
    "Noised",
    "RandNoise",
    "RandNoised",
    "build_degradation",
    "ThickSlices",
    "KSpace",
    "Protocol",
    "QUALITY_BAR",
    "as_protocol",
    "protocol_from_dict",
]
