"""Generators and discriminators; they know tensors, never files."""

from volsr.networks.residual_sr import (
    PRESETS,
    ResidualSR3D,
    ResidualSRConfig,
    count_parameters,
    flops_per_voxel,
)

#: name -> class; a checkpoint stores ``{"name": ..., "arguments": {...}}`` and is rebuilt from here
NETWORKS = {"residual_sr": ResidualSR3D}

__all__ = ["NETWORKS", "PRESETS", "ResidualSR3D", "ResidualSRConfig", "count_parameters", "flops_per_voxel"]
