"""A degradation pipeline from a small dict (or YAML / JSON file): HR in, HR + LR + what was sampled out.

Format: up to three stages, always applied in the order slice_thickness -> kspace -> noise (the
order of the keys does not matter; a missing or ``null`` stage is skipped)::

    {"slice_thickness": {"axis": [0, 1, 2], "factor": [2, 5], "profile": ["boxcar", "gaussian"],
                         "gap": [1, 1], "prob": 1.0},
     "kspace": {"fraction": [0.4, 0.7], "axes": [0, 1, 2], "window": ["none", "hamming"], "prob": 0.3},
     "noise": {"snr": [20, 60], "kind": ["rician"], "prob": 0.5}}

A number is a fixed value, a list of two numbers a uniform range ``[min, max]``, a list of strings a
uniform choice; ``slice_thickness.axis`` is a list of axes to choose one from, ``kspace.axes`` the axes
truncated together. Stage keys and the transform arguments they set:

- ``slice_thickness`` (:class:`~volsr.transforms.RandSliceThicknessd`): ``axis`` -> ``axes``,
  ``factor`` (thickness / voxel size), ``profile`` -> ``profiles``, ``gap`` (spacing / thickness),
  ``prob``.
- ``kspace`` (:class:`~volsr.transforms.RandKSpaceTruncationd`): ``fraction``, ``axes``, ``per_axis``,
  ``window`` -> ``windows``, ``partial_fourier``, ``reduce_matrix``, ``prob``.
- ``noise`` (:class:`~volsr.transforms.RandNoised`): ``snr``, ``kind`` -> ``kinds``, ``prob``.

Leaving a key out uses the transform's default.

A list of such dicts is a mixture: each sample is degraded by one of them, drawn with the
probabilities of their ``"weight"`` keys (1 when left out), so one network meets each acquisition
whole (thick slices alone, a coarse matrix alone, both) rather than every stage at once::

    [{"weight": 2, "slice_thickness": {"axis": [0, 1, 2], "factor": [2, 6]}},
     {"weight": 1, "kspace": {"fraction": [0.3, 0.7], "reduce_matrix": true}}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.transforms import Compose, CopyItemsd, OneOf

from volsr.transforms.kspace import RandKSpaceTruncationd
from volsr.transforms.noise import RandNoised
from volsr.transforms.slice_thickness import RandSliceThicknessd

__all__ = ["STAGES", "build_degradation", "load_degradation_config"]

#: stage name -> (dictionary transform, {config key: argument name}), in the order applied
STAGES = {
    "slice_thickness": (
        RandSliceThicknessd,
        {"axis": "axes", "factor": "factor", "profile": "profiles", "gap": "gap", "prob": "prob"},
    ),
    "kspace": (
        RandKSpaceTruncationd,
        {
            "fraction": "fraction",
            "axes": "axes",
            "per_axis": "per_axis",
            "window": "windows",
            "partial_fourier": "partial_fourier",
            "reduce_matrix": "reduce_matrix",
            "prob": "prob",
        },
    ),
    "noise": (RandNoised, {"snr": "snr", "kind": "kinds", "prob": "prob"}),
}


def load_degradation_config(config: Mapping | Sequence | str | Path) -> dict | list[dict]:
    """The pipeline dict (or mixture list) from a mapping, a list, or a ``.yaml`` / ``.yml`` /
    ``.json`` file."""
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, Sequence) and not isinstance(config, str):
        return [_mixture_entry(c, i) for i, c in enumerate(config)]
    path = Path(config)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(path.read_text())
    elif suffix == ".json":
        loaded = json.loads(path.read_text())
    else:
        raise ValueError(f"config must be a dict or a .yaml/.yml/.json file, got {str(config)!r}")
    if loaded is None:
        return {}
    if isinstance(loaded, list):
        return load_degradation_config(loaded)
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping or a list, got {type(loaded).__name__}"
        )
    return dict(loaded)


def _mixture_entry(entry, index: int) -> dict:
    if not isinstance(entry, Mapping):
        raise ValueError(f"mixture entry {index} must be a mapping, got {entry!r}")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ValueError(f"mixture entry {index}: weight must be a positive number, got {weight!r}")
    return dict(entry)


def build_degradation(
    config: Mapping | Sequence | str | Path, hr_key: str = "hr", lr_key: str = "lr", seed: int | None = None
) -> Compose:
    """A MONAI ``Compose`` that copies ``data[hr_key]`` to ``data[lr_key]`` and degrades the copy.

    The random dictionary transforms act on ``lr_key`` only, so ``hr_key`` is untouched;
    ``data[lr_key].meta["degradation"]`` lists a record of every stage that fired, with the values
    drawn (a stage skipped by its ``prob`` leaves no record). See the module doc for the format.

    Args:
        config: the pipeline dict, a mixture list of them, or the path of a YAML / JSON file.
        hr_key: key of the high-resolution image (channel-first MetaTensor).
        lr_key: key the degraded copy is written to (must not exist yet).
        seed: seeds every stage through ``Compose.set_random_state``; ``None`` leaves them unseeded.

    Raises:
        ValueError: an unknown stage or stage key (the message lists the allowed ones), or an
            invalid value (from the transform's own checks).

    Example:
        >>> degrade = build_degradation({"slice_thickness": {"axis": 2, "factor": [2, 4]}}, seed=0)
        >>> out = degrade({"hr": hr})  # out["lr"], out["lr"].meta["degradation"]
    """
    cfg = load_degradation_config(config)
    if isinstance(cfg, list):
        if not cfg:
            raise ValueError("a degradation mixture needs at least one entry")
        branches = [_stages({k: v for k, v in c.items() if k != "weight"}, hr_key, lr_key) for c in cfg]
        pipeline = Compose([OneOf(branches, weights=[float(c.get("weight", 1.0)) for c in cfg])])
    else:
        pipeline = _stages(cfg, hr_key, lr_key)
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline


def _stages(cfg: Mapping, hr_key: str, lr_key: str) -> Compose:
    """One pipeline dict -> ``Compose([CopyItemsd, stage, ...])``."""
    unknown = [k for k in cfg if k not in STAGES]
    if unknown:
        raise ValueError(f"unknown degradation stage {unknown[0]!r}; allowed: {list(STAGES)}")
    transforms: list = [CopyItemsd(keys=hr_key, names=lr_key)]
    for stage, (cls, arguments) in STAGES.items():
        options = cfg.get(stage)
        if options is None:
            continue
        if not isinstance(options, Mapping):
            raise ValueError(f"degradation stage {stage!r} must be a mapping, got {options!r}")
        bad = [k for k in options if k not in arguments]
        if bad:
            raise ValueError(
                f"unknown key {bad[0]!r} in degradation stage {stage!r}; allowed: {list(arguments)}"
            )
        kwargs = {arguments[k]: v for k, v in options.items()}
        transforms.append(cls(keys=lr_key, **kwargs))
    return Compose(transforms)
