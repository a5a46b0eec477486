"""Acquisition noise at a prescribed signal-to-noise ratio: Rician (magnitude MRI) or Gaussian.

Noise model, with ``sigma`` the standard deviation of each Gaussian component (intensity units):

    gaussian:  y = x + sigma * n1
    rician:    y = sqrt((x + sigma * n1)^2 + (sigma * n2)^2)     (magnitude of complex data, y >= 0)

with ``n1, n2 ~ N(0, 1)`` independent per voxel. The SNR is defined on the clean image ``x`` as

    SNR = mean(x over the foreground) / sigma,   foreground = {x > 0.1 * percentile_99(x)},

computed over all channels together; so ``sigma = foreground_mean(x) / snr``. The 99th percentile
ignores a few hot voxels, and 10 % of it separates tissue from air in MR magnitude images (for CT in
Hounsfield units, with negative air, shift the intensities first). The Rician bias makes the measured
mean of dark regions ``sigma * sqrt(pi / 2)``, not zero, as on a scanner.

The noise itself comes from MONAI's ``RandRicianNoise`` / ``RandGaussianNoise`` (``sample_std=False``,
seeded), which take ``sigma``; only the SNR-to-sigma step is added here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.transforms import (
    RandGaussianNoise,
    RandRicianNoise,
    Transform,
)
from monai.utils import MAX_SEED

from volsr.geometry.meta import new_image
from volsr.transforms.arguments import check_positive, parse_choices, parse_range
from volsr.transforms.dictionary import ApplyToKeys, RandApplyToKeys
from volsr.transforms.drawn import DrawnTransform

__all__ = ["NOISE_KINDS", "foreground_mean", "Noise", "Noised", "RandNoise", "RandNoised"]

NOISE_KINDS = ("rician", "gaussian")
_FOREGROUND_PERCENTILE = 99.0
_FOREGROUND_FRACTION = 0.1


def foreground_mean(img: torch.Tensor) -> float:
    """Mean intensity of the foreground: voxels above 10 % of the image's 99th percentile."""
    data = img.as_tensor() if hasattr(img, "as_tensor") else img
    values = data.detach().cpu().numpy().astype(np.float64, copy=False).ravel()
    threshold = _FOREGROUND_FRACTION * np.percentile(values, _FOREGROUND_PERCENTILE)
    foreground = values[values > threshold]
    mean = float(foreground.mean()) if foreground.size else 0.0
    if not np.isfinite(mean) or mean <= 0:
        raise ValueError(
            f"noise needs a positive foreground (voxels > 10 % of the 99th percentile), got mean {mean}"
        )
    return mean


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}), got {seed!r}")
    return int(seed)


class Noise(Transform):
    """Add Rician or Gaussian noise at a given SNR; the same ``seed`` gives the same noise field.

    Args:
        snr: mean foreground signal / noise standard deviation (see the module doc), > 0.
        kind: ``"rician"`` (magnitude MRI, non-negative output) or ``"gaussian"``.
        seed: seed of the noise field, an integer in ``[0, 2**32)``.

    The affine is unchanged; ``meta["degradation"]`` gains ``{"name": "noise", "kind", "snr",
    "sigma", "seed"}`` (``sigma`` in intensity units).

    Example:
        >>> noisy = Noise(snr=30, kind="rician", seed=7)(lr)
    """

    backend = [torch.Tensor]

    def __init__(self, snr: float, kind: str = "rician", seed: int = 0) -> None:
        self.snr = check_positive(snr, "snr")
        if not isinstance(kind, str):
            raise ValueError(f"kind must be one of {list(NOISE_KINDS)}, got {kind!r}")
        self.kind = parse_choices(kind, "kind", NOISE_KINDS)[0]
        self.seed = _check_seed(seed)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        data = img.as_tensor() if hasattr(img, "as_tensor") else img
        data = data if data.is_floating_point() else data.float()
        sigma = foreground_mean(data) / self.snr
        if self.kind == "rician":
            noise = RandRicianNoise(prob=1.0, mean=0.0, std=sigma, sample_std=False, dtype=None)
        else:
            noise = RandGaussianNoise(prob=1.0, mean=0.0, std=sigma, dtype=None, sample_std=False)
        noise.set_random_state(self.seed)
        out = noise(data)
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        record = {"name": "noise", "kind": self.kind, "snr": self.snr, "sigma": sigma, "seed": self.seed}
        history = list(img.meta.get("degradation", [])) if hasattr(img, "meta") else []
        return new_image(out.to(data.dtype), img, degradation=history + [record])


class RandNoise(DrawnTransform):
    """Noise with a random SNR, kind and seed (an image without foreground, e.g. a crop of air, is
    returned unchanged: an SNR has nothing to refer to there).

    Draws ``snr ~ U(snr)``, ``kind`` uniformly from ``kinds`` and a seed uniformly from
    ``[0, 2**32)``, then applies :class:`Noise`. With probability ``1 - prob`` the image is returned
    unchanged.

    Args:
        prob: probability of adding noise.
        snr: ``(min, max)`` SNR range, or a fixed SNR (> 0).
        kinds: noise kinds to choose from, among ``"rician"`` and ``"gaussian"``.
    """

    backend = Noise.backend

    def __init__(
        self,
        prob: float = 1.0,
        snr: float | Sequence[float] = (20.0, 60.0),
        kinds: str | Sequence[str] = NOISE_KINDS,
    ) -> None:
        super().__init__(prob)
        self.snr = parse_range(snr, "snr")
        check_positive(self.snr[0], "snr")
        self.kinds = parse_choices(kinds, "kinds", NOISE_KINDS)

    def draw(self) -> dict:
        return {
            "snr": float(self.R.uniform(*self.snr)),
            "kind": str(self.R.choice(self.kinds)),
            "seed": int(self.R.randint(MAX_SEED, dtype="uint32")),
        }

    def transform_for(self, img: torch.Tensor, params: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            foreground_mean(img)
        except ValueError:  # a training crop of empty air has no signal to set an SNR by: left as it is
            return lambda x: x
        return Noise(params["snr"], params["kind"], params["seed"])


class Noised(ApplyToKeys):
    """Dictionary version of :class:`Noise`; each key gets the same SNR, kind and seed."""

    backend = Noise.backend

    def __init__(
        self, keys, snr: float, kind: str = "rician", seed: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = Noise(snr, kind, seed)


class RandNoised(RandApplyToKeys):
    """Dictionary version of :class:`RandNoise`: one draw (SNR, kind, seed) shared by all keys.

    ``sigma`` follows each key's own foreground mean, so every key gets the drawn SNR.
    """

    backend = Noise.backend

    def __init__(
        self,
        keys,
        prob: float = 1.0,
        snr: float | Sequence[float] = (20.0, 60.0),
        kinds: str | Sequence[str] = NOISE_KINDS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys, rand=RandNoise(prob, snr, kinds))
