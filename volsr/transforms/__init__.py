"""Degradation transforms: turn a high-resolution scan into a realistic low-resolution one."""

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
]
