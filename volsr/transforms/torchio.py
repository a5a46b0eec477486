"""volsr's degradations as TorchIO transforms, for pipelines built on ``tio.Subject``.

Each transform runs the MONAI transform of the same name (:mod:`volsr.transforms`) on every
``tio.ScalarImage`` of a subject (label maps are left alone) and writes back the voxels and the new
affine, so a thickened subject's spacing is the thick spacing. A random transform draws once per
subject: every image gets the same degradation. Needs ``pip install "volsr[torchio]"``.

Example:
    >>> import torchio as tio
    >>> from volsr.transforms.torchio import RandNoise, RandSliceThickness
    >>> degrade = tio.Compose([RandSliceThickness(axes=2, factor=(2, 5)), RandNoise(snr=(20, 60))])
    >>> lr = degrade(tio.Subject(t1=tio.ScalarImage("t1.nii.gz")))
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio
from monai.data import MetaTensor
from monai.transforms import Randomizable

from volsr.transforms import kspace, noise, slice_thickness

__all__ = [
    "VolsrTransform",
    "SliceThickness",
    "RandSliceThickness",
    "KSpaceTruncation",
    "RandKSpaceTruncation",
    "Noise",
    "RandNoise",
]


class VolsrTransform(tio.Transform):
    """Any volsr (MONAI) image transform applied to a subject's scalar images, affine kept.

    Args:
        transform: a transform of ``(C, X, Y, Z)`` MetaTensors; a ``Randomizable`` one is randomised
            once per subject (``seed`` seeds it).
        seed: seed of a random transform's generator (None: not re-seeded).
        **kwargs: ``tio.Transform`` options (``p``, ``include``, ``exclude``, ...).
    """

    def __init__(self, transform, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.transform = transform
        if seed is not None and isinstance(transform, Randomizable):
            transform.set_random_state(seed=seed)
        self.args_names = []  # the wrapped transform is the argument; TorchIO cannot re-build it

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        randomize = isinstance(self.transform, Randomizable)
        if randomize:
            self.transform.randomize(None)
        for image in subject.get_images_dict(True, include=self.include, exclude=self.exclude).values():
            img = MetaTensor(image.data.float(), affine=torch.as_tensor(image.affine, dtype=torch.float64))
            out = self.transform(img, randomize=False) if randomize else self.transform(img)
            affine = np.asarray(getattr(out, "affine", image.affine), dtype=np.float64)
            data = out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)
            image.set_data(data.float())
            image.affine = affine
        return subject


class SliceThickness(VolsrTransform):
    """:class:`volsr.transforms.SliceThickness` (same arguments) on a subject."""

    def __init__(self, axis: int, thickness: float, spacing=None, profile="boxcar", **kwargs) -> None:
        super().__init__(slice_thickness.SliceThickness(axis, thickness, spacing, profile), **kwargs)


class RandSliceThickness(VolsrTransform):
    """:class:`volsr.transforms.RandSliceThickness` (same arguments, and ``seed``) on a subject."""

    def __init__(self, seed: int | None = None, p: float = 1.0, **kwargs) -> None:
        super().__init__(slice_thickness.RandSliceThickness(**kwargs), seed=seed, p=p)


class KSpaceTruncation(VolsrTransform):
    """:class:`volsr.transforms.KSpaceTruncation` (same arguments) on a subject."""

    def __init__(self, *args, p: float = 1.0, **kwargs) -> None:
        super().__init__(kspace.KSpaceTruncation(*args, **kwargs), p=p)


class RandKSpaceTruncation(VolsrTransform):
    """:class:`volsr.transforms.RandKSpaceTruncation` (same arguments, and ``seed``) on a subject."""

    def __init__(self, seed: int | None = None, p: float = 1.0, **kwargs) -> None:
        super().__init__(kspace.RandKSpaceTruncation(**kwargs), seed=seed, p=p)


class Noise(VolsrTransform):
    """:class:`volsr.transforms.Noise` (same arguments) on a subject."""

    def __init__(self, *args, p: float = 1.0, **kwargs) -> None:
        super().__init__(noise.Noise(*args, **kwargs), p=p)


class RandNoise(VolsrTransform):
    """:class:`volsr.transforms.RandNoise` (same arguments, and ``seed``) on a subject."""

    def __init__(self, seed: int | None = None, p: float = 1.0, **kwargs) -> None:
        super().__init__(noise.RandNoise(**kwargs), seed=seed, p=p)
