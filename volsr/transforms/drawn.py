"""The one skeleton of volsr's ``Rand*`` transforms: draw the parameters, then hand off.

A subclass says what it draws (:meth:`DrawnTransform.draw`, from ``self.R``) and which deterministic
transform those parameters make (:meth:`DrawnTransform.transform_for`); ``randomize`` and
``__call__`` live here once. Hand-written because MONAI's ``RandomizableTransform`` leaves both to
every subclass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.transforms import RandomizableTransform

from volsr.transforms.arguments import check_probability

__all__ = ["DrawnTransform"]


class DrawnTransform(RandomizableTransform):
    """With probability ``prob``, the deterministic transform of freshly drawn parameters; else the
    image unchanged. ``params`` holds the last draw."""

    def __init__(self, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, check_probability(prob))
        self.params: dict = {}

    def draw(self) -> dict:
        """The parameters of one application, drawn from ``self.R``."""
        raise NotImplementedError

    def transform_for(self, img: torch.Tensor, params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic transform that ``params`` describe, for ``img``."""
        raise NotImplementedError

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.params = self.draw()

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return self.transform_for(img, self.params)(img)
