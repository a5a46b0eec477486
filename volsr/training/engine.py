"""The training engine: the one step loop behind the CNN trainer, the GAN trainer and per-scan adaptation.

A run plugs in a :class:`TrainingTask`: its optimisation step and its rule for which weights ship.
:func:`fit` does the rest, and reads top to bottom::

    (the GAN only) validate the warm start
    for step in resumed step .. cfg.steps:
        x, y = next(batches)                                        this rank's batch
        scalars = task.step(step, x, y)                             learning rates, forward, backward, EMA
        every log_every steps:        mean of the scalars (one host sync) -> progress bar, TensorBoard
        every checkpoint_every steps: checkpoint.pt (atomic), rank 0
        every val_every steps:        validate task.shipped (rank 0) -> one log line, validation.jsonl,
                                      TensorBoard; model.pt when task.keep(record, best); checkpoint.pt

Distributed data parallel: under ``torchrun``, :func:`distributed` joins the process group (device,
backend and timeout: :mod:`volsr.inference.distributed`) and :meth:`Distributed.replicate` wraps what
is trained in ``torch.nn.parallel.DistributedDataParallel``, which averages the gradients, so every
rank keeps the same weights. Each rank draws its own patches (``batch_size`` per rank: the global
batch is ``batch_size`` x world size). Rank 0 alone writes checkpoints, validates, logs and shows the
progress bar; the others wait at a barrier. Without torchrun, one process trains alone.

Logging goes through :mod:`logging` (loggers ``volsr.training.*``): a bundle's ``configs/logging.conf``
or :func:`console_logging` decides where it ends up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from volsr.data.normalization import PercentileNormalizer
from volsr.errors import VolsrInputError
from volsr.inference import distributed as rank_setup
from volsr.inference.devices import resolve_device
from volsr.networks.checkpoint import remove_stray_temporaries, save_checkpoint, save_model

__all__ = [
    "TrainingTask",
    "Distributed",
    "distributed",
    "require_torchrun",
    "fit",
    "load_state",
    "parameter_groups",
    "load_optimizer_state",
    "progress_bar",
    "console_logging",
    "CHECKPOINT",
    "MODEL",
]

logger = logging.getLogger(__name__)

#: file names in ``cfg.output_dir``: the full training state (``--resume``) and the weights that ship
CHECKPOINT, MODEL = "checkpoint.pt", "model.pt"


# --- the plug-in ---------------------------------------------------------------------------------


class TrainingTask(ABC):
    """What a training run plugs into :func:`fit`: its step and its rule for the weights to keep."""

    #: scalars of :meth:`step` the progress bar shows (every scalar goes to TensorBoard)
    progress_keys: Sequence[str] = ("loss", "lr")

    @property
    @abstractmethod
    def shipped(self) -> nn.Module:
        """The weights validation scores and ``model.pt`` holds (a plain module, never a DDP wrapper)."""

    @abstractmethod
    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One optimisation step at ``step`` (0-based) on this rank's batch ``(x, y)``.

        Returns scalars to log: tensors stay on the device (:func:`fit` reads them once per
        ``log_every`` steps), floats (learning rates) are taken as they are.
        """

    def checkpoint(self) -> tuple[nn.Module, dict]:
        """The network whose weights ``checkpoint.pt`` holds under ``"model"``, and the rest of the
        state to resume from (optimisers, EMA, ...); only asked when the run has an ``output_dir``."""
        raise NotImplementedError(f"{type(self).__name__} writes no checkpoints")

    def keep(self, record: dict, best: dict) -> bool:
        """Whether the weights just validated (``record``) replace ``model.pt`` (``best``: the record of
        the current one). By default: the highest mean PSNR gain over cubic so far."""
        return record["psnr_gain"] > best["psnr_gain"]

    def validates_first(self) -> bool:
        """Whether the weights are validated once before the first step."""
        return False

    def validates_after(self, step: int) -> bool:
        """Whether validation may run after ``step`` steps (it runs every ``val_every`` and at the end)."""
        return True


# --- distributed data parallel -------------------------------------------------------------------


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun) and its device."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    active: bool = False  # inside a process group

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files, validates and logs."""
        return self.rank == 0

    def replicate(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel inside a process group, else ``module`` itself."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.active:
            rank_setup.barrier(self.device)


def require_torchrun() -> None:
    """Raise unless torchrun started this process (the bundles' ``multi_gpu_train.json`` calls it)."""
    if not rank_setup.torchrun_environment():
        raise RuntimeError(
            "multi_gpu_train.json runs under torchrun: torchrun --nproc_per_node N -m monai.bundle run "
            "--config_file \"['configs/train.json','configs/multi_gpu_train.json']\" ..."
        )


@contextlib.contextmanager
def distributed(device: str | torch.device = "auto") -> Iterator[Distributed]:
    """This process's :class:`Distributed`; under torchrun, inside the process group.

    Joins the group from torchrun's environment by the rules of :mod:`volsr.inference.distributed`
    (each rank on ``cuda:LOCAL_RANK`` where ``device`` resolves to CUDA, else the CPU). A group that
    already exists is used and left open; one made here is closed on the way out. Ranks other than 0
    log warnings and errors only.
    """
    if not rank_setup.torchrun_environment():
        yield Distributed(resolve_device(device))
        return
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), rank_setup.local_rank()
    resolved = rank_setup.rank_device(device, local_rank)
    owned = rank_setup.join_process_group(resolved)
    package_logger = logging.getLogger("volsr")
    level = package_logger.level
    if rank != 0:
        package_logger.setLevel(logging.WARNING)
    try:
        yield Distributed(resolved, rank, local_rank, world, active=True)
    finally:
        package_logger.setLevel(level)
        if owned:
            rank_setup.leave_process_group()


# --- optimiser parameters ------------------------------------------------------------------------


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of ``module``'s trainable parameters: weight decay on the weights of convolutions
    and linear layers (2-D and up), none on biases, norm scales and other 1-D or scalar parameters
    (decaying those shrinks offsets and gains towards 0, which regularises nothing useful)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, module: nn.Module) -> None:
    """Load ``saved`` into ``optimizer``, also when it holds a single group over ``module.parameters()``
    in their order (an optimiser made without the groups of :func:`parameter_groups`): its state is
    mapped parameter by parameter onto the groups."""
    groups = optimizer.state_dict()["param_groups"]
    if len(saved["param_groups"]) == len(groups):
        optimizer.load_state_dict(saved)
        return
    flat = {id(p): i for i, p in enumerate(module.parameters())}  # the saved, single-group order
    order = [flat[id(p)] for group in optimizer.param_groups for p in group["params"]]
    state = {new: saved["state"][old] for new, old in enumerate(order) if old in saved["state"]}
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- the loop ------------------------------------------------------------------------------------


def load_state(output_dir: str | Path, resume: bool, device: torch.device, steps: int) -> dict | None:
    """``output_dir/checkpoint.pt`` when resuming and it exists (every rank loads the same file), after
    removing the temporaries a killed run left there.

    Raises:
        VolsrInputError: resuming with ``steps`` at or below the checkpoint's step (nothing to train),
            before anything in ``output_dir`` is written.
    """
    remove_stray_temporaries(output_dir)
    path = Path(output_dir) / CHECKPOINT
    if not (resume and path.exists()):
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    if steps <= state["step"]:
        raise VolsrInputError(
            path,
            f"is at step {state['step']}; --steps {steps} would leave nothing to train: "
            f"give --steps above {state['step']}",
        )
    best = state.get("best") or {}
    so_far = (
        f"best PSNR gain so far {best['psnr_gain']:+.3f} dB at step {best.get('step')}"
        if math.isfinite(best.get("psnr_gain", -math.inf))
        else "not validated yet"
    )
    logger.info("resumed from %s at step %d (%s)", path, state["step"], so_far)
    return state


class _RunningMeans:
    """Sums of the step scalars, kept on their device: reading them is one host sync per interval."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.latest: dict[str, float] = {}

    def add(self, scalars: dict[str, torch.Tensor | float]) -> None:
        for key, value in scalars.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
                self.sums[key] = self.sums[key] + value if key in self.sums else value
                self.counts[key] = self.counts.get(key, 0) + 1
            else:
                self.latest[key] = float(value)

    def pop(self) -> dict[str, float]:
        """The means since the last call (and the latest floats); starts a new interval."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist() if keys else []
        means = {**dict(zip(keys, values, strict=True)), **self.latest}
        self.sums, self.counts, self.latest = {}, {}, {}
        return means


def fit(
    task: TrainingTask,
    cfg,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    dist: Distributed,
    *,
    normalizer: PercentileNormalizer | None = None,
    validator=None,
    step: int = 0,
    best: dict | None = None,
    desc: str = "train",
) -> dict:
    """Run ``task`` from ``step`` to ``cfg.steps`` (a :class:`volsr.training.trainer.TrainingRunConfig`).

    Writes ``checkpoint.pt``, ``model.pt`` with ``model_meta.json`` (the model zoo's form:
    :func:`~volsr.networks.checkpoint.save_model`) and ``validation.jsonl`` to ``cfg.output_dir`` (nothing
    where it is empty), TensorBoard events to ``cfg.log_dir``; ``validator`` (``(network, normalizer,
    device) -> record``) scores ``task.shipped``. Returns the record of the weights in ``model.pt``
    (on every rank: the others read rank 0's from ``checkpoint.pt``).
    """
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if out_dir is not None and dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    best = best or {"psnr_gain": -math.inf}
    means = _RunningMeans()
    t0 = time.time()

    def save_state() -> None:
        if dist.main:
            model, extra = task.checkpoint()
            config = asdict(cfg)
            save_checkpoint(out_dir / CHECKPOINT, model, normalizer, step, **extra, best=best, config=config)
        dist.barrier()

    def validate() -> None:
        nonlocal best
        if dist.main:
            record = validator(task.shipped, normalizer, dist.device)
            record.update(step=step, hours=(time.time() - t0) / 3600)
            _log_validation(out_dir, record, writer)
            if task.keep(record, best):
                best = record
                if out_dir is not None:
                    save_model(out_dir / MODEL, task.shipped, normalizer, step, validation=record)
        dist.barrier()

    with contextlib.ExitStack() as stack:  # the bar and the writer are closed however the loop ends
        writer = stack.enter_context(_tensorboard(cfg.log_dir if dist.main else None))
        bar = stack.enter_context(_progress(cfg, step, desc, dist.main))
        if validator is not None and task.validates_first():
            validate()
        while step < cfg.steps:
            x, y = next(batches)
            means.add(task.step(step, x, y))
            step += 1
            last = step == cfg.steps

            if bar is not None:
                bar.update(1)
            if step % max(1, cfg.log_every) == 0 or last:
                _log_scalars(means.pop(), step, writer, bar, task.progress_keys)
            if out_dir is not None and (step % cfg.checkpoint_every == 0 or last):
                save_state()
            if validator is not None and task.validates_after(step) and (step % cfg.val_every == 0 or last):
                validate()
                if out_dir is not None:
                    save_state()
        if validator is None and out_dir is not None:
            if dist.main:
                save_model(out_dir / MODEL, task.shipped, normalizer, step)
            dist.barrier()
    if not dist.main and out_dir is not None and (out_dir / CHECKPOINT).exists():
        # rank 0's record, from the file rather than a broadcast: a gloo group closed right after a
        # broadcast of Python-made tensors can deadlock (PyTorch issue 56297)
        best = torch.load(out_dir / CHECKPOINT, map_location="cpu", weights_only=False).get("best", best)
    return best


def _log_scalars(scalars: dict[str, float], step: int, writer, bar, progress_keys: Sequence[str]) -> None:
    if writer is not None:
        for key, value in scalars.items():
            writer.add_scalar(f"train/{key}", value, step)
    if bar is not None:
        # a key can be missing from a stretch of steps (no generator loss while only the discriminator trains)
        shown = [k for k in progress_keys if k in scalars]
        bar.set_postfix({k: f"{scalars[k]:.1e}" if k.endswith("lr") else f"{scalars[k]:.4f}" for k in shown},
                        refresh=False)  # fmt: skip
    logger.debug("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))


def _log_validation(out_dir: Path | None, record: dict, writer) -> None:
    """One log line, one line of ``validation.jsonl``, TensorBoard scalars."""
    import json

    volumes = sorted({k.rsplit("/", 1)[0] for k in record if k.endswith("/psnr")})
    per_volume = "; ".join(f"{v} {record[f'{v}/psnr']:.2f} dB / {record[f'{v}/ssim']:.3f}" for v in volumes)
    logger.info(
        "validation at step %d: PSNR gain over cubic %+.3f dB (lowest %+.3f dB); %s",
        record["step"],
        record["psnr_gain"],
        record.get("min_psnr_gain", record["psnr_gain"]),
        per_volume,
    )
    if out_dir is not None:
        with open(out_dir / "validation.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"val/{key}", value, record["step"])


@contextlib.contextmanager
def _tensorboard(log_dir: str | None):
    """A TensorBoard ``SummaryWriter`` on ``log_dir`` (``None`` without one), closed on the way out."""
    if not log_dir:
        yield None
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir)
    try:
        yield writer
    finally:
        writer.close()


def progress_bar(cfg, step: int, desc: str = "train"):
    """A tqdm bar over ``cfg.steps`` from ``step``, or ``None`` without ``cfg.progress``."""
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=step, desc=desc, dynamic_ncols=True, mininterval=5.0)


@contextlib.contextmanager
def _progress(cfg, step: int, desc: str, shown: bool):
    """The run's one progress bar (rank 0, with ``cfg.progress``); log lines go out above it."""
    bar = progress_bar(cfg, step, desc) if shown else None
    if bar is None:
        yield None
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    def prints(lg: logging.Logger) -> bool:
        return any(
            type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr) for h in lg.handlers
        )

    # only loggers that print: tqdm would give the others a handler of their own (each line twice)
    loggers = [lg for lg in (logging.root, logging.getLogger("volsr")) if prints(lg)]
    try:
        with logging_redirect_tqdm(loggers=loggers):
            yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def console_logging(stream=None) -> Iterator[None]:
    """Training messages (``volsr`` loggers, INFO and up) as plain lines on ``stream`` (stderr) while
    the block runs: for the command line, where no ``configs/logging.conf`` is read."""
    package_logger = logging.getLogger("volsr")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
