"""Saving and loading networks with what rebuilds them: architecture, normalisation, step.

Two forms, both read by :func:`load_checkpoint`:

- **A bundle's shipped model** (:func:`save_model`), the MONAI model zoo's layout:
  ``models/model.pt`` is the network's state dict alone (``torch.save(net.state_dict())``), so
  ``monai.bundle ckpt_export`` and ``CheckpointLoader`` read it with their defaults;
  ``models/model_meta.json`` beside it (:func:`metadata_path`) holds the rest as JSON::

      {"network": {"name": "residual_sr", "arguments": {...}},   # build_network() rebuilds it
       "normalization": {"name": "percentile", "lower": 0.5, "upper": 99.5},
       "step": 2800,                                              # the training step of the weights
       "validation": {...}}                                       # their validation record, if any

- **One file holding everything** (:func:`save_checkpoint`): a dict with the state dict under
  ``"model"`` and ``"network"``, ``"normalization"``, ``"step"`` and any extra entries beside it.
  Training writes its resumable ``checkpoint.pt`` so (optimiser state, moving average, config); a
  ``model.pt`` in this form loads as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import NETWORKS

__all__ = [
    "save_checkpoint",
    "save_model",
    "split_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint",
    "metadata_path",
    "build_network",
    "load_grown_weights",
    "remove_stray_temporaries",
]

#: the names :func:`save_checkpoint` and :func:`save_model` write before renaming
#: (``.model.pt.1a2b3c4d.tmp``, ``.model_meta.json.1a2b3c4d.tmp``), and ``tmpXXXXXXXX.tmp`` of
#: ``tempfile.mkstemp``: what a save killed half-way leaves behind
_TEMPORARY = re.compile(r"\.[^/]+\.(?:pt|json)\.[0-9a-f]{8}\.tmp|tmp[a-z0-9_]{8}\.tmp")


def network_name(network: nn.Module) -> str:
    for name, cls in NETWORKS.items():
        if type(network) is cls:
            return name
    raise ValueError(f"{type(network).__name__} is not a registered network: {sorted(NETWORKS)}")


def build_network(spec: dict) -> nn.Module:
    """Rebuild a network from ``{"name": ..., "arguments": {...}}``."""
    name = spec["name"]
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETWORKS)}")
    return NETWORKS[name](**spec.get("arguments", {}))


def save_checkpoint(
    path: str | Path, network: nn.Module, normalizer: PercentileNormalizer, step: int, **extra
) -> Path:
    """Write everything in one file (training's resumable ``checkpoint.pt``), atomically."""
    state = {
        "model": _cpu_state(network),
        "network": {"name": network_name(network), "arguments": network.arguments()},
        "normalization": normalizer.to_dict(),
        "step": int(step),
        **extra,
    }
    return _write_atomically(Path(path), lambda tmp: torch.save(state, tmp))


def save_model(
    path: str | Path, network: nn.Module, normalizer: PercentileNormalizer, step: int, **extra
) -> Path:
    """Write the model zoo's form: the state dict to ``path``, the rest (network, normalisation, step,
    JSON-serialisable ``extra`` such as ``validation``) to :func:`metadata_path`, each atomically."""
    metadata = {
        "network": {"name": network_name(network), "arguments": network.arguments()},
        "normalization": normalizer.to_dict(),
        "step": int(step),
        **extra,
    }
    return _write_model(Path(path), _cpu_state(network), metadata)


def split_checkpoint(path: str | Path, destination: str | Path | None = None) -> Path:
    """Rewrite a one-file checkpoint in the model zoo's form at ``destination`` (default: in place):
    the same tensors, byte for byte, and its other entries (JSON-serialisable) in the metadata file."""
    ckpt = read_checkpoint(path)
    state = ckpt.pop("model")
    return _write_model(Path(destination or path), state, ckpt)


def _write_model(path: Path, state: dict[str, torch.Tensor], metadata: dict) -> Path:
    text = json.dumps(metadata, indent=2) + "\n"  # before any write: what JSON cannot hold fails here
    _write_atomically(path, lambda tmp: torch.save(state, tmp))
    _write_atomically(metadata_path(path), lambda tmp: tmp.write_text(text))
    return path


def metadata_path(weights: str | Path) -> Path:
    """Where :func:`save_model` puts what a state dict lacks: ``model.pt`` -> ``model_meta.json``."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}_meta.json")


def _cpu_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


def _write_atomically(path: Path, write) -> Path:
    """``write(tmp)`` then rename over ``path``, so an interrupted save never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def remove_stray_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` left in ``folder`` (only names of
    its own making); returns them."""
    folder = Path(folder)
    stray = (
        [p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file()]
        if folder.is_dir()
        else []
    )
    for p in stray:
        p.unlink(missing_ok=True)
    return stray


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, PercentileNormalizer, dict]:
    """``(network, normalizer, checkpoint dict)`` from either form; the network is in eval mode on
    ``map_location``. The dict is the one-file form's: the state dict under ``"model"``, and
    ``"network"``, ``"normalization"``, ``"step"`` and the rest of the metadata beside it."""
    ckpt = read_checkpoint(path, map_location)
    network = build_network(ckpt["network"])
    network.load_state_dict(ckpt["model"])
    network.eval()
    return network, PercentileNormalizer.from_dict(ckpt.get("normalization", {})), ckpt


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict of a file in either form (``--init``: weights to start training from)."""
    stored = torch.load(path, map_location=map_location, weights_only=False)
    if _is_state_dict(stored):
        return stored
    if isinstance(stored, Mapping) and _is_state_dict(stored.get("model")):
        return stored["model"]
    raise ValueError(f"{path}: neither a state dict nor a volsr checkpoint (a dict with 'model')")


def _is_state_dict(stored) -> bool:
    return (
        isinstance(stored, Mapping)
        and bool(stored)
        and all(isinstance(v, torch.Tensor) for v in stored.values())
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict of :func:`load_checkpoint` without building the network: from a state dict
    and its :func:`metadata_path`, or a one-file checkpoint as it is."""
    path = Path(path)
    stored = torch.load(path, map_location=map_location, weights_only=False)
    if isinstance(stored, Mapping) and "network" in stored and "model" in stored:
        return dict(stored)
    if not _is_state_dict(stored):
        raise ValueError(
            f"{path}: not a volsr checkpoint (a state dict, or a dict with 'model' and 'network')"
        )
    meta = metadata_path(path)
    try:
        metadata = json.loads(meta.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{path}: a state dict without {meta.name} beside it (its network, normalisation and step)"
        ) from None
    except ValueError as e:
        raise ValueError(f"{meta}: not valid JSON ({e})") from None
    if not isinstance(metadata, dict) or "network" not in metadata:
        raise ValueError(f"{meta}: needs a 'network' entry ({{'name': ..., 'arguments': {{...}}}})")
    return {"model": stored, **metadata}


def load_grown_weights(network: nn.Module, state: dict[str, torch.Tensor], std: float = 1e-2) -> None:
    """Load ``state`` into ``network``, which may be wider (more features) or take more input channels.

    Net2Net-style growth that keeps the function: every weight is ``(out, in, ...)``, so entries for
    new *inputs* (dim 1) start at zero and the old outputs do not see the new channels; entries for
    new *outputs* (dim 0 rows, biases) start at N(0, ``std``) / zero, so the new channels carry a
    signal and their zero input weights downstream get a gradient (all-zero growth would never train).
    Parameters ``state`` lacks (a new module, e.g. a :class:`~volsr.networks.residual_sr.CoarseBranch`
    whose output conv starts at zero) keep their initialisation, except that a new module with a
    ``start_as_identity()`` method (an added :class:`~volsr.networks.residual_sr.ResidualBlock`: a
    deeper network) is set to pass its input through unchanged.
    The grown network computes exactly what the old one did until training moves them.
    """
    own = network.state_dict()
    if set(state) - set(own):
        raise ValueError(f"parameters the network does not have: {sorted(set(state) - set(own))}")
    grown = {}
    for name, target in own.items():
        if name not in state:
            grown[name] = target
            continue
        source = state[name]
        if source.shape != target.shape:
            if source.ndim != target.ndim or any(
                a > b for a, b in zip(source.shape, target.shape, strict=True)
            ):
                raise ValueError(f"{name}: cannot grow {tuple(source.shape)} into {tuple(target.shape)}")
            if target.ndim >= 2:
                new = torch.randn_like(target) * std
                new[:, source.shape[1] :] = 0  # new inputs: invisible to every output
            else:
                new = torch.zeros_like(target)
            new[tuple(slice(0, n) for n in source.shape)] = source
            source = new
        grown[name] = source
    network.load_state_dict(grown)
    for name, module in network.named_modules():
        if name and hasattr(module, "start_as_identity") and not any(k.startswith(name + ".") for k in state):
            module.start_as_identity()
