"""Checkpoints that rebuild their model alone: weights, network arguments, normalisation, step.

``models/model.pt`` in a bundle is such a dict; its ``"model"`` key is the plain state dict, so
MONAI's ``CheckpointLoader(load_dict={"model": net})`` reads it too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

import torch
from torch import nn

from volsr.data.normalization import PercentileNormalizer
from volsr.networks import NETWORKS

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "build_network",
    "load_grown_weights",
    "remove_stray_temporaries",
]

#: the names :func:`save_checkpoint` writes before renaming (``.model.pt.1a2b3c4d.tmp``; the older
#: ``tmpXXXXXXXX.tmp`` of ``tempfile.mkstemp`` too): what a save killed half-way leaves behind
_TEMPORARY = re.compile(r"\.[^/]+\.pt\.[0-9a-f]{8}\.tmp|tmp[a-z0-9_]{8}\.tmp")


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
    """Write atomically (temporary file + rename) so an interrupted save never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "network": {"name": network_name(network), "arguments": network.arguments()},
        "normalization": normalizer.to_dict(),
        "step": int(step),
        **extra,
    }
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        torch.save(state, tmp)
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
    """``(network, normalizer, checkpoint dict)``; the network is in eval mode on ``map_location``."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "network" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a volsr checkpoint (needs 'model' and 'network' entries)")
    network = build_network(ckpt["network"])
    network.load_state_dict(ckpt["model"])
    network.eval()
    return network, PercentileNormalizer.from_dict(ckpt.get("normalization", {})), ckpt


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
