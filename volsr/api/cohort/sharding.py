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
from typing import TypeVar

from volsr.errors import Option, VolsrOptionError

#: ``shard``, as Python and the command line spell it
SHARD = Option("shard=", "--shard")

__all__ = ["Process", "parse_shard", "torchrun_process", "split", "rank_device", "ProcessGroup"]

T = TypeVar("T")


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
        raise VolsrOptionError(
            "{shard} takes I/N with 0 <= I < N (e.g. 3/8), got " + repr(text), shard=SHARD
        ) from None
    if not 0 <= index < count:
        raise VolsrOptionError("{shard} takes I/N with 0 <= I < N (e.g. 3/8), got " + repr(text), shard=SHARD)
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
    """A torchrun rank's device by :func:`volsr.inference.distributed.rank_device` (``cuda:LOCAL_RANK``
    where ``device`` resolves to CUDA); otherwise ``device`` unchanged."""
    from volsr.inference import distributed

    if process.kind == "rank":
        return str(distributed.rank_device(device, process.local_rank))
    return device


class ProcessGroup:
    """torch.distributed for torchrun's ranks (:mod:`volsr.inference.distributed`); only a barrier is
    used (every rank works on its own scans; the manifest parts are merged through the file system)."""

    def __init__(self, device: str) -> None:
        import torch

        from volsr.inference import distributed

        self.distributed = distributed
        self.device = torch.device(device)
        self.owned = distributed.join_process_group(self.device)

    def barrier(self) -> None:
        self.distributed.barrier(self.device)

    def close(self) -> None:
        if self.owned:
            self.distributed.leave_process_group()
