"""Where voxels sit: field-of-view-keeping grids, orientation, re-gridding, MetaTensor helpers, grid encoding.

The lowest layer above :mod:`volsr.errors`: it knows tensors and affines, never files or networks.
"""
