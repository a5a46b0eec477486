"""Generators and discriminators (they know tensors, never files), and their checkpoints
(:mod:`volsr.networks.checkpoint`: build, save, load and grow them).
"""

from volsr.networks.discriminator import PatchDiscriminator3D, PatchDiscriminatorConfig
from volsr.networks.residual_sr import (
    PRESETS,
    ResidualSR3D,
    ResidualSRConfig,
    count_parameters,
    flops_per_voxel,
)

#: name -> class; a checkpoint stores ``{"name": ..., "arguments": {...}}`` and is rebuilt from here
NETWORKS = {"residual_sr": ResidualSR3D, "patch_discriminator": PatchDiscriminator3D}

__all__ = [
    "NETWORKS",
    "PRESETS",
    "PatchDiscriminator3D",
    "PatchDiscriminatorConfig",
    "ResidualSR3D",
    "ResidualSRConfig",
    "count_parameters",
    "flops_per_voxel",
]
