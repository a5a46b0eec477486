"""Patch training of an SR generator with on-the-fly degradation; reads top to bottom.

One step: sample a batch of (spline input, HR target) patches -> forward (bfloat16 autocast where
:func:`volsr.inference.devices.decide_precision` chooses it, once per run) ->
L1 or MSE (+ optional SSIM) loss -> backward -> clip -> AdamW step with a warm-up + cosine learning rate
-> update of an exponential moving average (EMA) of the weights.
Every ``checkpoint_every`` steps the full state is saved (``--resume`` continues from it); every
``val_every`` steps the validation volumes are degraded with a fixed protocol, super-resolved by
sliding-window inference with the EMA weights and scored (masked PSNR/SSIM), and the best weights
so far are written to ``model.pt`` with their numbers. The EMA is what ships because single
weights wander from step to step: validation PSNR of the raw weights moved by up to 0.2 dB between
checks 500 steps apart.

The loop itself (checkpoints, resume, validation timing, logging, TensorBoard, progress bar,
distributed data parallel under ``torchrun``) is :func:`volsr.training.engine.fit`; this module
plugs in the step (:class:`PixelLossTask`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from volsr.data.normalization import PercentileNormalizer
from volsr.inference.devices import autocast, decide_precision
from volsr.networks.checkpoint import build_network, load_grown_weights, load_weights
from volsr.training.data import PatchPairSampler, list_volumes, load_normalized, patch_batches
from volsr.training.engine import (
    Distributed,
    TrainingTask,
    distributed,
    fit,
    load_optimizer_state,
    load_state,
    parameter_groups,
    progress_bar,
)
from volsr.training.validation import Validator
from volsr.transforms.protocol import QUALITY_BAR, Protocol, as_protocol

__all__ = [
    "TrainingRunConfig",
    "TrainConfig",
    "PixelLossTask",
    "train_cnn",
    "learning_rate",
    "optimisation_setup",
    "optimisation_step",
    "moving_average",
    "progress_bar",
    "data_workers",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainingRunConfig:
    """What every training run uses, the CNN's (:class:`TrainConfig`) and the GAN's
    (:class:`volsr.training.gan.GanConfig`): data, patches, loss, the loop's timing, device, logging.
    Stored in every checkpoint.

    ``contrast_prob`` is the share of crops whose tissue contrast is redrawn
    (:func:`volsr.training.data.random_contrast`). ``workers`` is how many DataLoader processes draw
    the patches (:func:`data_workers`; ``None``: 0 on a CPU, on a GPU every core but one up to 16).
    ``warmup`` is the steps of the learning-rate ramp. ``pixel_loss`` is ``"l1"`` or ``"mse"``
    (:func:`loss_function`). ``val_protocol`` is the validation's degradation
    (:mod:`volsr.transforms.protocol`; its dict form is accepted). ``log_every``: steps between the
    training scalars the progress bar and TensorBoard show (means over those steps; reading them waits
    for the GPU, so not at every step). ``batch_size`` is per process: under ``torchrun`` the global
    batch is ``batch_size`` x the number of processes. ``amp``: bfloat16 autocast where
    :func:`volsr.inference.devices.decide_precision` chooses it.
    """

    data: str | list[str]
    output_dir: str
    network: dict = field(default_factory=lambda: {"name": "residual_sr", "arguments": {}})
    degradation: dict = field(
        default_factory=lambda: {
            "slice_thickness": {"axis": [0, 1, 2], "factor": [2.0, 6.0], "profile": ["boxcar", "gaussian"]}
        }
    )
    val_data: list[str] = field(default_factory=list)
    val_protocol: Protocol = QUALITY_BAR
    patch_size: int = 32
    zoom: tuple[float, float] = (1.0, 1.0)
    contrast_prob: float = 0.0
    batch_size: int = 4
    steps: int = 20000
    warmup: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ssim_weight: float = 0.0
    pixel_loss: str = "l1"
    checkpoint_every: int = 100
    val_every: int = 500
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    log_dir: str | None = None
    progress: bool = True
    workers: int | None = None
    log_every: int = 10

    def __post_init__(self) -> None:
        # JSON configs and stored checkpoints give the protocol as a dict: typed once, here
        self.val_protocol = as_protocol(self.val_protocol)


@dataclass
class TrainConfig(TrainingRunConfig):
    """A CNN training run (:func:`train_cnn`): a :class:`TrainingRunConfig` plus the CNN's schedule,
    moving average, start and choice of the weights that ship; stored in every checkpoint.

    ``lr`` is the peak learning rate after ``warmup``, decaying by a cosine to ``min_lr`` at ``steps``
    (:func:`learning_rate`). ``ema`` is the decay of the moving average of the weights that validation
    scores and ``model.pt`` holds (0.999: about the last 1,000 steps); ``0`` ships the raw weights.
    ``init`` is a checkpoint whose weights start a fresh run (fine-tuning; a network with more input
    channels or features is grown from it by :func:`volsr.networks.checkpoint.load_grown_weights`, so
    it starts as the checkpoint's network). ``ship`` is which validated weights ``model.pt`` holds:
    ``"best"`` (the highest PSNR gain) or ``"last"`` (the final step, so the numbers validation
    reports never chose it).
    """

    lr: float = 1e-3
    min_lr: float = 2e-5
    ema: float = 0.999
    init: str | None = None
    ship: str = "best"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ship not in ("best", "last"):
            raise ValueError(f"ship must be 'best' or 'last', got {self.ship!r}")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))


PIXEL_LOSSES: dict[str, Callable[[], nn.Module]] = {"l1": nn.L1Loss, "mse": nn.MSELoss}


def loss_function(cfg: TrainingRunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``pixel_loss`` (+ ``ssim_weight`` x SSIM). L1 is robust early on; MSE is the loss whose
    minimiser (the conditional mean) maximises PSNR, for fine-tuning towards the PSNR report."""
    if cfg.pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss must be one of {sorted(PIXEL_LOSSES)}, got {cfg.pixel_loss!r}")
    pixel = PIXEL_LOSSES[cfg.pixel_loss]()
    if cfg.ssim_weight <= 0:
        return pixel
    from monai.losses import SSIMLoss

    ssim = SSIMLoss(spatial_dims=3, data_range=1.0, win_size=7)
    return lambda p, y: pixel(p, y) + cfg.ssim_weight * ssim(p, y)


class PixelLossTask(TrainingTask):
    """The CNN's step (pixel loss, AdamW on the warm-up + cosine schedule, EMA) for the engine; also
    per-scan adaptation's. ``model.pt`` holds the EMA (or the raw weights without one)."""

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        cfg: TrainConfig,
        dist: Distributed,
        averaged: AveragedModel | None,
        precision: torch.dtype,
    ) -> None:
        self.network, self.optimizer, self.loss_fn = network, optimizer, loss_fn
        self.cfg, self.device, self.averaged, self.precision = cfg, dist.device, averaged, precision
        self.replica = dist.replicate(network)  # what the step runs: DDP averages its gradients

    @property
    def shipped(self) -> nn.Module:
        return self.averaged.module if self.averaged is not None else self.network

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor | float]:
        lr = learning_rate(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = optimisation_step(
            self.replica, self.optimizer, self.loss_fn, x, y, self.cfg, self.device, self.precision
        )
        if self.averaged is not None:
            self.averaged.update_parameters(self.network)
        return {"loss": loss, "lr": lr}

    def keep(self, record: dict, best: dict) -> bool:
        return self.cfg.ship == "last" or super().keep(record, best)

    def checkpoint(self) -> tuple[nn.Module, dict]:
        ema = self.averaged.state_dict() if self.averaged is not None else None
        return self.network, {"optimizer": self.optimizer.state_dict(), "ema": ema}


def train_cnn(
    cfg: TrainConfig,
    resume: bool = False,
    degradation: Callable[[dict], dict] | None = None,
    loader: Callable[[str], torch.Tensor] | None = None,
) -> dict:
    """Train ``cfg.network`` on ``cfg.data``; returns the best validation record.

    Under ``torchrun --nproc_per_node N`` the N processes train one network with distributed data
    parallel (:mod:`volsr.training.engine`): each draws ``cfg.batch_size`` patches of its own per
    step, so the global batch is ``cfg.batch_size`` x N.
    """
    if loader is None:
        from volsr.data.io import load_image as loader
    with distributed(cfg.device) as dist:
        device = dist.device
        torch.manual_seed(cfg.seed)
        network, optimizer = optimisation_setup(build_network(cfg.network), cfg, device)
        normalizer = PercentileNormalizer()
        step, best = 0, None
        state = load_state(cfg.output_dir, resume, device, cfg.steps)
        if state is not None:
            network.load_state_dict(state["model"])
            if state.get("optimizer") is not None:
                load_optimizer_state(optimizer, state["optimizer"], network)
            else:  # a checkpoint shipped in git leaves AdamW's moments out to stay small
                logger.info("the checkpoint holds no optimiser state: AdamW's moments start afresh")
            step, best = state["step"], state.get("best")
        elif cfg.init:
            load_grown_weights(network, load_weights(cfg.init, map_location=device))
            logger.info("initialised from %s", cfg.init)
        averaged = moving_average(network, cfg.ema, state)

        loss_fn = loss_function(cfg)  # before the volumes load: a bad pixel_loss fails at once
        sampler, validator = training_data(cfg, normalizer, step, degradation, loader)
        batches = training_batches(sampler, cfg, step, dist)
        precision = decide_precision(device, cfg.amp)
        task = PixelLossTask(network, optimizer, loss_fn, cfg, dist, averaged, precision)
        return fit(task, cfg, batches, dist, normalizer=normalizer, validator=validator, step=step, best=best)


def training_batches(
    sampler: PatchPairSampler, cfg: TrainingRunConfig, step: int, dist: Distributed
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's endless batches of ``sampler`` from step ``step`` on, in :func:`data_workers`
    processes; seeds follow ``cfg.seed``, ``step`` and the rank (:func:`patch_batches`)."""
    workers, pin_memory = data_workers(cfg, dist.device), dist.device.type == "cuda"
    return patch_batches(sampler, cfg.batch_size, cfg.seed + step, workers, pin_memory, dist.rank)


def data_workers(cfg: TrainingRunConfig, device: torch.device) -> int:
    """DataLoader processes for the patches: ``cfg.workers``, or by default none on a CPU (the step
    itself uses every core) and, beside a GPU, every core but one, up to 16, shared between the
    processes torchrun starts on the machine (``LOCAL_WORLD_SIZE``)."""
    if cfg.workers is not None:
        return max(0, int(cfg.workers))
    cores = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return 0 if device.type == "cpu" else max(0, min(16, cores - 1))


def optimisation_setup(
    network: nn.Module, cfg: TrainConfig, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``network`` on ``device`` (channels-last on CPU) and its AdamW (no weight decay on biases and
    norm parameters: :func:`volsr.training.engine.parameter_groups`). No loss scaler: volsr trains in
    float32 or bfloat16, whose float32-sized exponent needs none."""
    network = network.to(device)
    if device.type == "cpu":
        network = network.to(memory_format=torch.channels_last_3d)  # ~1.7x faster conv3d on CPU
    optimizer = torch.optim.AdamW(parameter_groups(network, cfg.weight_decay), lr=cfg.lr)
    return network, optimizer


def optimisation_step(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainingRunConfig,
    device: torch.device,
    precision: torch.dtype,
) -> torch.Tensor:
    """One clipped optimiser step on a batch (channels-last on CPU, the forward pass in ``precision``,
    a :func:`volsr.inference.devices.decide_precision` dtype); returns the loss."""
    x, y = x.to(device), y.to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with autocast(device, precision):
        pred = network(x)
    loss = loss_fn(pred.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(network.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


def moving_average(network: nn.Module, decay: float, state: dict | None) -> AveragedModel | None:
    """The EMA of ``network``'s weights (``None`` when ``decay`` is 0), restored from a resumed state.

    A checkpoint without an EMA state (from a run with ``ema`` 0) starts a fresh average at the
    resumed weights.
    """
    if not decay:
        return None
    averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state is not None and state.get("ema") is not None:
        averaged.load_state_dict(state["ema"])
    return averaged


def training_data(
    cfg: TrainingRunConfig,
    normalizer: PercentileNormalizer,
    step: int,
    degradation: Callable[[dict], dict] | None,
    loader: Callable[[str], torch.Tensor],
) -> tuple[PatchPairSampler, Validator | None]:
    """The patch sampler over ``cfg.data`` and the validator over ``cfg.val_data`` (shared with the GAN).

    Seeds follow ``cfg.seed + step`` so a resumed run draws new patches rather than repeating.
    """
    items = list_volumes(cfg.data)
    volumes = load_normalized([it["hr"] for it in items], normalizer, loader)
    if degradation is None:
        from volsr.transforms import build_degradation

        degradation = build_degradation(cfg.degradation, seed=cfg.seed + step)
    arguments = cfg.network.get("arguments", {})  # what the network is given, as it was trained
    sampler = PatchPairSampler(
        volumes,
        degradation,
        cfg.patch_size,
        zoom=tuple(cfg.zoom),
        seed=cfg.seed + step,
        contrast_prob=cfg.contrast_prob,
        grid_encoding=arguments.get("grid_channels", 0) > 0,
        interpolation=arguments.get("input_interpolation", "cubic"),
    )
    validator = Validator(cfg.val_data, cfg.val_protocol, loader) if cfg.val_data else None
    return sampler, validator
