"""The network always sees the most up-sampled axis last.

Thick slices degrade one axis; moving that axis to a fixed position lets a small network spend its
capacity on one direction of blur instead of three. Training and inference use the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["coarse_axis", "spatial_order", "to_canonical", "from_canonical"]


def coarse_axis(scale: Sequence[float], tol: float = 1e-3) -> int | None:
    """The spatial axis with the largest up-sampling factor, or None when all are equal."""
    s = list(scale)
    if max(s) - min(s) <= tol * max(s):
        return None
    return int(max(range(len(s)), key=lambda i: s[i]))


def _order(axis: int | None, ndim: int) -> list[int]:
    # (B, C, X, Y, Z): keep batch and channel, move the coarse spatial axis last
    order = list(range(ndim))
    if axis is None:
        return order
    a = ndim - 3 + axis
    order.remove(a)
    return order + [a]


def spatial_order(axis: int | None) -> list[int]:
    """The permutation of the 3 spatial axes that :func:`to_canonical` applies."""
    return _order(axis, 3)


def to_canonical(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Permute spatial ``axis`` of a (..., X, Y, Z) tensor to the last position."""
    return x.permute(_order(axis, x.ndim))


def from_canonical(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Undo :func:`to_canonical`."""
    order = _order(axis, x.ndim)
    inverse = [order.index(i) for i in range(x.ndim)]
    return x.permute(inverse)
