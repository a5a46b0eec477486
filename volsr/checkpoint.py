"""Checkpoints that rebuild their model alone: weights, network arguments, normalisation, step.

``models/model.pt`` in a bundle is such a dict; its ``"model"`` key is the plain state dict, so
MONAI's ``CheckpointLoader(load_dict={"model": net})`` reads it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from volsr.networks import NETWORKS
from volsr.normalization import PercentileNormalizer

__all__ = ["save_checkpoint", "load_checkpoint", "build_network"]


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


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
