"""Which scans this process runs: a deterministic split of the sorted cohort over processes.

Scan ``i`` of the sorted cohort goes to process ``i mod N``, so every scan is done exactly once
and any process can tell which are its own without talking to the others. The processes are
either torchrun's ranks (``torchrun --nproc_per_node N -m volsr.cli infer ...``, one GPU each,
joined through ``torch.distributed`` to merge the manifest at the end) or the tasks of a job
array (``--shard I/N``: no communication at all).

Example:
    >>> mine = split([0, 1, 2, 3, 4], Process(index=1, count=2))   # [1, 3]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

__all__ = ["Process", "parse_shard", "torchrun_process", "split", "rank_device", "ProcessGroup"]

T = TypeVar("T")
#: how long a rank that is done waits at the final barrier for the slowest one
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Process:
    """Process ``index`` of ``count``; ``kind`` is ``"rank"`` (torchrun), ``"shard"`` (``--shard``)
    or ``"single"``. ``local_rank`` is torchrun's rank on this machine (its GPU)."""

    index: int = 0
    count: int = 1
    kind: str = "single"
    local_rank: int = 0


def parse_shard(text: str) -> Process:
    """``"I/N"`` (``--shard``, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) as a Process.

    Raises:
        ValueError: not two integers with ``0 <= I < N``.
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N with 0 <= I < N (e.g. 3/8), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard takes I/N with 0 <= I < N (e.g. 3/8), got {text!r}")
    return Process(index, count, "shard")


def torchrun_process() -> Process | None:
    """This process's rank when started by torchrun with more than one process, else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    return Process(int(os.environ["RANK"]), world, "rank", int(os.environ.get("LOCAL_RANK", "0")))


def split(items: Sequence[T], process: Process) -> list[T]:
    """Item ``i`` of ``items`` (sorted by the caller) goes to process ``i mod count``."""
    return list(items[process.index :: process.count])


def rank_device(device: str, process: Process) -> str:
    """``cuda:LOCAL_RANK`` for a torchrun rank asked for ``auto``/``cuda`` on a machine with CUDA;
    otherwise ``device`` unchanged."""
    import torch

    if process.kind == "rank" and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{process.local_rank}"
    return device


class ProcessGroup:
    """torch.distributed for torchrun's ranks: gloo on the CPU, nccl on GPUs; only a barrier is used
    (every rank works on its own scans; the manifest parts are merged through the file system)."""

    def __init__(self, device: str) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist
        self.device = torch.device(device)
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        kwargs = {}
        if self.backend == "nccl":
            torch.cuda.set_device(self.device)
            kwargs["device_id"] = self.device
        dist.init_process_group(self.backend, timeout=BARRIER_TIMEOUT, **kwargs)

    def barrier(self) -> None:
        if self.backend == "nccl":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()

    def close(self) -> None:
        self.dist.destroy_process_group()
