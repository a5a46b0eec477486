"""Where each output voxel sits on the acquired grid: extra input channels for a grid-aware network.

A thick-slice scan re-gridded x4 has four kinds of output voxel along the slice axis: one at each
acquired slice centre and three between slices, each with its own error to undo. A convolution is
shift-invariant and cannot tell them apart; these channels tell it (the Meta-SR / LIIF idea of
feeding the relative offset and the scale, here for the separable, field-of-view-keeping grids of
:mod:`volsr.geometry.grids`). Per spatial axis, three channels:

    cos(2 pi c), sin(2 pi c)    c = the input-grid index of the output voxel centre
                                (periodic: only the offset inside the acquired voxel matters)
    step                        input voxels per output voxel (1 / up-sampling factor)

:class:`SamplePositions` keeps ``c`` as one vector per axis, so crops, flips and axis swaps of a
patch or window are applied to the vectors and the channels are built only where needed.
Hand-written because MONAI has no grid-offset encoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from volsr.geometry.grids import index_map
from volsr.geometry.orientation import spatial_order

__all__ = ["GRID_CHANNELS", "SamplePositions", "with_grid_channels"]

#: channels per volume: (cos, sin, step) for each of the 3 spatial axes
GRID_CHANNELS = 9


@dataclass(frozen=True)
class SamplePositions:
    """Per spatial axis, the input-grid index of each output voxel centre, and the input step."""

    coords: tuple[torch.Tensor, ...]
    steps: tuple[float, ...]

    @classmethod
    def of_grids(cls, in_shape: Sequence[int], out_shape: Sequence[int]) -> SamplePositions:
        """Output voxel ``j`` of an axis sits at input index ``offset + j * step`` (fields of view kept)."""
        coords, steps = [], []
        for n_in, n_out in zip(in_shape, out_shape, strict=True):
            step, offset = index_map(int(n_in), int(n_out))
            coords.append(offset + step * torch.arange(int(n_out), dtype=torch.float64))
            steps.append(step)
        return cls(tuple(coords), tuple(steps))

    @classmethod
    def canonical(
        cls, in_shape: Sequence[int], out_shape: Sequence[int], axis: int | None
    ) -> SamplePositions:
        """:meth:`of_grids` in the network's order: spatial ``axis`` (the coarse one) moved last, as
        :func:`volsr.geometry.orientation.to_canonical` moves the volume."""
        return cls.of_grids(in_shape, out_shape).permuted(spatial_order(axis))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.coords)

    def permuted(self, order: Sequence[int]) -> SamplePositions:
        """Spatial axis ``i`` of the result is axis ``order[i]`` of this one (as ``Tensor.permute``)."""
        return SamplePositions(tuple(self.coords[a] for a in order), tuple(self.steps[a] for a in order))

    def cropped(self, slices: Sequence[slice]) -> SamplePositions:
        return SamplePositions(tuple(c[s] for c, s in zip(self.coords, slices, strict=True)), self.steps)

    def padded(self, before: Sequence[int], after: Sequence[int]) -> SamplePositions:
        """Extended by voxels on each side (as when MONAI pads a volume smaller than its window);
        the grid is linear, so the positions continue it."""
        coords = []
        for c, step, b, a in zip(self.coords, self.steps, before, after, strict=True):
            j = torch.arange(-int(b), len(c) + int(a), dtype=torch.float64)
            coords.append(c[0] + step * j)
        return SamplePositions(tuple(coords), self.steps)

    def flipped(self, axes: Sequence[int]) -> SamplePositions:
        """The positions of the patch flipped along spatial ``axes``.

        On the flipped input grid, index ``c`` becomes ``n - 1 - c``; ``n - 1`` is an integer, which
        the periodic encoding ignores, so ``-c`` in reversed order.
        """
        coords = [(-c).flip(0) if a in axes else c for a, c in enumerate(self.coords)]
        return SamplePositions(tuple(coords), self.steps)

    def channels(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``(GRID_CHANNELS, X, Y, Z)``: cos, sin and step of each axis, broadcast over the volume.

        Computed on ``device`` from the per-axis vectors, so a GPU window never waits for a
        volume-sized host-to-device copy.
        """
        shape = self.shape
        planes = []
        for axis, (c, step) in enumerate(zip(self.coords, self.steps, strict=True)):
            view = [1] * len(shape)
            view[axis] = -1
            angle = 2 * math.pi * c.to(device)
            for values in (torch.cos(angle), torch.sin(angle), torch.full_like(angle, step)):
                planes.append(values.to(dtype).view(view).expand(shape))
        return torch.stack(planes)


def with_grid_channels(x: torch.Tensor, positions: Sequence[SamplePositions]) -> torch.Tensor:
    """``x`` ``(B, C, *S)`` followed by the grid channels of each batch item: ``(B, C + 9, *S)``."""
    grid = torch.stack([p.channels(x.dtype, x.device) for p in positions])
    return torch.cat([x, grid], dim=1)
