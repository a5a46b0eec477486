"""The two shapes every dictionary transform here takes: one array transform applied to each key,
or one random draw shared by all keys (so ``hr`` and a mask see the same slices)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["ApplyToKeys", "RandApplyToKeys"]


class ApplyToKeys(MapTransform):
    """Applies ``self.transform`` (set by the subclass) to every key."""

    transform: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RandApplyToKeys(RandomizableTransform, MapTransform):
    """Draws the random array transform ``rand`` once per call and applies that draw to every key."""

    def __init__(self, keys, rand: RandomizableTransform, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.rand = rand

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        self.rand.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.rand.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rand(d[key], randomize=False)
        return d
