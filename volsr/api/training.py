"""Training a bundle's network: a fresh run, a resumed one, or fine-tuning from a checkpoint.

:func:`train_bundle` is ``volsr train``: it reads the bundle's ``configs/train.json`` (what
``python -m monai.bundle run --config_file configs/train.json`` runs), applies the overrides and,
when resuming, keeps what the run was started with (learning rate, warm-up, loss, steps) unless told
otherwise.

Example:
    >>> from volsr.api import train_bundle
    >>> train_bundle("./my_bundle", data="my_hr_scans/", steps=2000)
    >>> train_bundle("./my_bundle", resume=True)        # on from models/checkpoint.pt, as started
"""

from __future__ import annotations

import dataclasses
import pydoc
from pathlib import Path

from volsr.api.bundle_search import find_bundle_root
from volsr.training.gan import GanConfig, train_gan
from volsr.training.trainer import TrainConfig, TrainingRunConfig, train_cnn

__all__ = ["TrainingRunConfig", "TrainConfig", "GanConfig", "train", "train_bundle", "stored_config"]

#: what a resumed run keeps from its checkpoint unless the caller gives a value
RESUMED_FIELDS = ("lr", "warmup", "pixel_loss")


def train(config: TrainingRunConfig, resume: bool = False) -> dict:
    """Train ``config``'s network: the CNN for a :class:`TrainConfig`, the GAN for a :class:`GanConfig`;
    returns the best validation record."""
    if isinstance(config, GanConfig):
        return train_gan(config, resume=resume)
    return train_cnn(config, resume=resume)


def stored_config(checkpoint: str | Path) -> dict:
    """The training config saved in ``checkpoint`` (``{}`` when there is no such file)."""
    path = Path(checkpoint)
    if not path.is_file():
        return {}
    import torch

    return torch.load(path, map_location="cpu", weights_only=False).get("config") or {}


def _config_file(bundle_or_config: str | Path) -> tuple[Path, Path]:
    """``(bundle root, train config)`` from a bundle (name or folder) or a path to its train JSON."""
    path = Path(bundle_or_config)
    if path.suffix == ".json" and path.is_file():
        root = path.parent.parent if path.parent.name == "configs" else path.parent
        return root.resolve(), path.resolve()
    root = find_bundle_root(bundle_or_config, "configs/train.json")
    return root, root / "configs" / "train.json"


def train_bundle(
    bundle_or_config: str | Path = "volsr_cnn3d",
    data: str | Path | None = None,
    steps: int | None = None,
    resume: bool = False,
    init: str | Path | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    pixel_loss: str | None = None,
    device: str = "auto",
) -> dict:
    """Train a bundle's network with its ``configs/train.json``; returns the best validation record.

    Args:
        bundle_or_config: a bundle name (the installed copy's), folder, or the path of a train JSON
            (:mod:`volsr.api.bundle_search`).
        data: folder, image or MONAI datalist JSON of high-resolution scans (the config's
            ``dataset_dir`` otherwise).
        steps: total optimisation steps (the config's ``steps``).
        resume: continue from the run's ``checkpoint.pt``; its learning rate, warm-up, pixel loss and
            steps go on unless given here.
        init: start a fresh run from this checkpoint's weights (fine-tuning).
        lr: peak learning rate; ``warmup``: linear warm-up steps; ``pixel_loss``: ``"l1"`` or ``"mse"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Training writes into the config's ``output_dir`` (the bundle's ``models/``).
    """
    from monai.bundle import ConfigParser

    root, config_file = _config_file(bundle_or_config)
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(root)
    parser["resume"] = resume
    parser["device"] = device
    if data is not None:
        parser["dataset_dir"] = str(data)
    if steps is not None:
        parser["steps"] = steps
    known = {f.name for f in dataclasses.fields(pydoc.locate(parser["config"]["_target_"]))}
    overrides = {"lr": lr, "warmup": warmup, "pixel_loss": pixel_loss}
    if resume:  # the schedule and loss the checkpoint was started with go on, unless told otherwise
        stored = stored_config(Path(parser.get_parsed_content("output_dir")) / "checkpoint.pt")
        for key in RESUMED_FIELDS:
            if overrides[key] is None and key in known:
                overrides[key] = stored.get(key)
        if steps is None and "steps" in stored:
            parser["steps"] = stored["steps"]
    for key, value in overrides.items():
        if value is not None:
            if key not in known:
                raise ValueError(f"{config_file}: its train config has no {key!r}")
            parser[f"config#{key}"] = value
    if init is not None:
        if not Path(init).is_file():
            raise FileNotFoundError(2, "no such checkpoint", str(init))
        parser["config#init"] = str(init)
    results = parser.get_parsed_content("run")  # the config's "run" list: [trainer.run()]
    return results[-1] if isinstance(results, list) else results
