"""torch.distributed for torchrun's ranks: the one set-up that training and cohort inference share.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT`` in the
environment) each process is one rank, and the rules are the same for every run:

* device (:func:`rank_device`): a device that resolves to CUDA becomes this rank's own GPU,
  ``cuda:LOCAL_RANK`` (one GPU per rank, whatever index was asked for); the CPU stays the CPU.
* backend (:func:`join_process_group`): NCCL on a GPU, bound to that GPU; gloo on the CPU.
* timeout (:data:`BARRIER_TIMEOUT`): how long a rank waits for the others at a barrier.

Training (:func:`volsr.training.engine.distributed`) averages gradients through the group and waits
at barriers while rank 0 validates; a cohort (:mod:`volsr.api.cohort.sharding`) only waits at one
barrier, for the slowest rank's scans, before rank 0 merges the manifest.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as torch_dist

from volsr.inference.devices import resolve_device

__all__ = [
    "BARRIER_TIMEOUT",
    "torchrun_environment",
    "local_rank",
    "rank_device",
    "join_process_group",
    "leave_process_group",
    "barrier",
]

#: a rank that is done waits this long for the others: a cohort's ranks wait for the slowest one's
#: scans, which can take days; training's wait while rank 0 validates. The timeout only bounds a hang:
#: torchrun ends every rank as soon as one fails.
BARRIER_TIMEOUT = timedelta(days=7)


def torchrun_environment() -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    """This rank's index on its machine (``LOCAL_RANK``; ``RANK`` where a launcher leaves it out)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def rank_device(device: str | torch.device, local: int) -> torch.device:
    """The device rank ``local`` (its :func:`local_rank`) runs on: ``cuda:local`` where ``device``
    resolves to CUDA (:func:`volsr.inference.devices.resolve_device`), else the resolved device."""
    resolved = resolve_device(device)
    return torch.device("cuda", local) if resolved.type == "cuda" else resolved


def join_process_group(device: torch.device) -> bool:
    """Join torchrun's process group for a rank on ``device`` (a :func:`rank_device`): NCCL bound to
    the GPU, gloo on the CPU, :data:`BARRIER_TIMEOUT` at barriers. Returns whether this call made the
    group (then the caller closes it with :func:`leave_process_group`); a group that exists is used."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if torch_dist.is_initialized():
        return False
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    torch_dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT, **kwargs
    )
    return True


def leave_process_group() -> None:
    """Close the process group :func:`join_process_group` made."""
    torch_dist.destroy_process_group()


def barrier(device: torch.device) -> None:
    """Wait for every rank (NCCL: on ``device``, the GPU the group is bound to)."""
    if device.type == "cuda":
        torch_dist.barrier(device_ids=[device.index])
    else:
        torch_dist.barrier()
