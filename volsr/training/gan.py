"""Paired SR GAN training: the CNN generator, warm-started, sharpened against a 3D patch discriminator.

Same data, loop, validation, checkpoints and logging as :mod:`volsr.training.trainer` (the loop is
:func:`volsr.training.engine.fit`, distributed data parallel under ``torchrun`` included); what
differs is the step (:func:`gan_step`, plugged in by :class:`GanTask`), which reads top to bottom:

1. generator forward on the spline input ``x``: ``fake = G(x)``;
2. discriminator step on the HR target ``y`` (real) and ``fake.detach()`` (fake), with MONAI's
   ``PatchAdversarialLoss`` (``"least_squares"``, without MONAI's extra activation, or ``"hinge"``);
3. generator step (skipped for the first ``d_warmup`` steps, so the discriminator first learns what
   the CNN's output looks like before its gradients reach the generator), discriminator frozen::

       content_weight * pixel(fake, y)                       (``pixel_loss``, L1 by default; + SSIM)
     + adv_weight     * adversarial(D(fake), real)
     + fm_weight      * mean_l L1(D_l(fake), D_l(y))         feature matching (pix2pixHD)

   Feature matching on the discriminator's own layers stands in for a perceptual loss: the usual
   pretrained networks (VGG, MedicalNet, RadImageNet) would have to be downloaded, and are 2-D or
   trained for other tasks; the discriminator's features are 3-D and learned on this data.

The generator is warm-started from a CNN checkpoint (``init_generator``: its weights, architecture and
intensity normalisation), so the GAN starts at the CNN's fidelity.

Which weights ship (``model.pt``): the generator is validated before training (the warm start) and
every ``val_every`` steps; the *latest* validation whose PSNR gain over cubic stays within
``psnr_tolerance`` dB (default 1) of the warm start's is written. Picking the highest PSNR would
select the least adversarial weights (PSNR rewards the blur the GAN removes), and "just the last" can
ship a generator that has drifted or collapsed; the tolerance bounds the fidelity the GAN may trade for
sharpness, and among the admissible weights the most trained ones win. ``checkpoint.pt`` holds the
full state (both networks, both optimisers, step) for ``resume=True``.

Papers: Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a GAN" (SRGAN, CVPR 2017);
Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs"
(pix2pixHD, CVPR 2018); Chen et al., "Efficient and accurate MRI super-resolution using a generative
adversarial network and 3D multi-level densely connected network" (mDCSRN-GAN, MICCAI 2018).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from monai.losses import PatchAdversarialLoss
from torch import nn

from volsr.data.normalization import PercentileNormalizer
from volsr.inference.devices import autocast, decide_precision
from volsr.networks.checkpoint import build_network, load_checkpoint, network_name
from volsr.training import engine
from volsr.training.trainer import TrainingRunConfig, loss_function, training_batches, training_data
from volsr.transforms.arguments import check_positive, check_probability, parse_choices

__all__ = ["GanConfig", "GanParts", "GanTask", "gan_learning_rates", "gan_step", "train_gan", "ADVERSARIAL"]

logger = logging.getLogger(__name__)

ADVERSARIAL = ("least_squares", "hinge")
_BETAS = (0.5, 0.999)  # pix2pix / pix2pixHD


@dataclass
class GanConfig(TrainingRunConfig):
    """A GAN training run (:func:`train_gan`): a :class:`~volsr.training.trainer.TrainingRunConfig`
    plus the GAN's own fields; stored in every checkpoint.

    The learning rates are the GAN's own (``g_lr``, ``d_lr``: :func:`gan_learning_rates`) and the
    generator itself ships, without a moving average; ``warmup`` is the generator's learning-rate ramp
    after ``d_warmup``; ``pixel_loss`` and ``ssim_weight`` make the content loss as in the CNN trainer;
    ``network`` is only used without ``init_generator``.

    Attributes:
        init_generator: volsr checkpoint (a bundle's ``models/model.pt`` or a ``checkpoint.pt``) whose
            generator, architecture and normalisation the GAN starts from; ``None`` starts from
            ``network`` with fresh weights.
        discriminator: ``{"name": "patch_discriminator", "arguments": {...}}`` (see
            :class:`volsr.networks.PatchDiscriminator3D`).
        g_lr: generator learning rate (Adam, betas 0.5 / 0.999).
        d_lr: discriminator learning rate.
        lr_decay_to: both rates decay by a cosine to this fraction of themselves at ``steps``.
        adversarial: ``"least_squares"`` or ``"hinge"`` (MONAI ``PatchAdversarialLoss`` criteria).
        adv_weight: weight of the generator's adversarial loss.
        fm_weight: weight of the L1 feature-matching loss on the discriminator's layers.
        content_weight: weight of the L1 (+ SSIM) loss to the HR target.
        d_warmup: steps at the start in which only the discriminator trains.
        psnr_tolerance: dB of validation PSNR gain the GAN may lose against the warm start before its
            weights stop being eligible for ``model.pt``.

    Default weights: measured on 32^3 patches (CNN at 300 steps, discriminator after 40 warm-up
    steps), the gradient norm on the generator per unit weight is 2-19x the L1 term's for the
    adversarial loss and 0.14-0.63x for feature matching; ``adv_weight=3e-3`` and ``fm_weight=0.1``
    therefore each contribute a few percent of the content gradient: a gentle GAN (SRGAN uses 1e-3).
    """

    init_generator: str | None = None
    discriminator: dict = field(default_factory=lambda: {"name": "patch_discriminator", "arguments": {}})
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    lr_decay_to: float = 0.1
    adversarial: str = "least_squares"
    adv_weight: float = 3e-3
    fm_weight: float = 0.1
    content_weight: float = 1.0
    d_warmup: int = 500
    psnr_tolerance: float = 1.0
    steps: int = 6000
    warmup: int = 100
    val_every: int = 250

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_choices(self.adversarial, "adversarial", ADVERSARIAL)
        check_positive(self.g_lr, "g_lr")
        check_positive(self.d_lr, "d_lr")
        check_probability(self.lr_decay_to, "lr_decay_to")
        for name in ("adv_weight", "fm_weight", "content_weight", "psnr_tolerance"):
            check_positive(getattr(self, name), name, allow_zero=True)
        for name in ("d_warmup", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def gan_learning_rates(step: int, cfg: GanConfig) -> tuple[float, float]:
    """``(generator, discriminator)`` learning rates at ``step`` (a pure function).

    The discriminator trains alone at ``d_lr`` for ``d_warmup`` steps (generator rate 0). Then the
    generator ramps linearly to ``g_lr`` over ``warmup`` steps (a fresh Adam would otherwise take
    full-size first steps on warm-started weights), and both follow a cosine from their rate down to
    ``lr_decay_to`` times it at ``steps``.
    """
    if step < cfg.d_warmup:
        return 0.0, cfg.d_lr
    t = min(1.0, (step - cfg.d_warmup) / max(1, cfg.steps - cfg.d_warmup))
    decay = cfg.lr_decay_to + 0.5 * (1.0 - cfg.lr_decay_to) * (1.0 + math.cos(math.pi * t))
    ramp = min(1.0, (step - cfg.d_warmup + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    return cfg.g_lr * decay * ramp, cfg.d_lr * decay


@dataclass
class GanParts:
    """Both networks with their optimisers.

    ``g_replica`` / ``d_replica``: what the optimisation passes run through, the networks themselves
    or, in distributed training, their DistributedDataParallel wrappers (:meth:`replicate`).
    """

    generator: nn.Module
    discriminator: nn.Module
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    g_replica: nn.Module | None = None
    d_replica: nn.Module | None = None

    @classmethod
    def create(cls, generator: nn.Module, discriminator: nn.Module, cfg: GanConfig) -> GanParts:
        """AdamW for the generator (``weight_decay``, none on biases and norm parameters), Adam for the
        discriminator."""
        g_opt = torch.optim.AdamW(
            engine.parameter_groups(generator, cfg.weight_decay), lr=cfg.g_lr, betas=_BETAS
        )
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=cfg.d_lr, betas=_BETAS)
        return cls(generator, discriminator, g_opt, d_opt)

    def replicate(self, dist: engine.Distributed) -> None:
        """Run the optimisation passes through ``dist``'s DistributedDataParallel wrappers."""
        self.g_replica, self.d_replica = dist.replicate(self.generator), dist.replicate(self.discriminator)

    def set_learning_rates(self, g_lr: float, d_lr: float) -> None:
        for opt, lr in ((self.g_optimizer, g_lr), (self.d_optimizer, d_lr)):
            for group in opt.param_groups:
                group["lr"] = lr

    def training_state(self) -> dict:
        """Everything of the training state but the generator's weights (``save_checkpoint`` has those)."""
        d = self.discriminator
        return {
            "optimizer": self.g_optimizer.state_dict(),
            "discriminator": {
                "model": {k: v.detach().cpu() for k, v in d.state_dict().items()},
                "network": {"name": network_name(d), "arguments": d.arguments()},
            },
            "d_optimizer": self.d_optimizer.state_dict(),
        }

    def load_training_state(self, state: dict) -> None:
        """Restore from a ``checkpoint.pt`` dict written with :meth:`training_state`. Loss-scaler states
        (``g_scaler``, ``d_scaler``) in a checkpoint are passed over: volsr trains in float32 or
        bfloat16, which need no loss scaling."""
        self.generator.load_state_dict(state["model"])
        self.discriminator.load_state_dict(state["discriminator"]["model"])
        engine.load_optimizer_state(self.g_optimizer, state["optimizer"], self.generator)
        self.d_optimizer.load_state_dict(state["d_optimizer"])


def _optimizer_step(loss: torch.Tensor, optimizer, params, clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def gan_step(
    parts: GanParts,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: GanConfig,
    content_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    adversarial_loss: PatchAdversarialLoss,
    update_generator: bool = True,
    precision: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """One discriminator step and (unless ``update_generator`` is False) one generator step.

    Args:
        parts: networks and optimisers (learning rates already set).
        x: spline-interpolated input patches (B, C, P, P, P), normalised, coarse axis last.
        y: high-resolution target patches (B, C, P, P, P).
        cfg: the weights of the loss terms and ``grad_clip``.
        content_loss: ``(pred, target) -> loss``, e.g. L1.
        adversarial_loss: MONAI ``PatchAdversarialLoss``.
        update_generator: False during the discriminator warm-up.
        precision: the dtype the networks run in (:func:`volsr.inference.devices.decide_precision`).

    Returns:
        Scalars for logging, as 0-d tensors on the device (reading them waits for it): ``d_loss``,
        ``d_real``/``d_fake`` (mean logits) and, with a generator step, ``g_loss``, ``g_content``,
        ``g_adv``, ``g_fm``.
    """
    g, d = parts.generator, parts.discriminator
    # the passes that train a network go through its replica (DDP averages the gradients); the
    # frozen discriminator of the generator step is the plain module, so DDP expects none of its gradients
    g_train, d_train = parts.g_replica or g, parts.d_replica or d

    def ctx():
        return autocast(x.device, precision)

    # 1. generator forward (the graph is kept for the generator step)
    with torch.set_grad_enabled(update_generator), ctx():
        fake = g_train(x)  # (B, C, P, P, P)

    # 2. discriminator: y is real, the generator's output is fake
    d.requires_grad_(True)
    with ctx():
        real_logits, _ = d_train(y)  # (B, 1, *S')
        fake_logits, _ = d_train(fake.detach())  # (B, 1, *S')
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    d_loss = 0.5 * (
        adversarial_loss(real_logits, target_is_real=True, for_discriminator=True)
        + adversarial_loss(fake_logits, target_is_real=False, for_discriminator=True)
    )
    _optimizer_step(d_loss, parts.d_optimizer, d.parameters(), cfg.grad_clip)
    stats = {
        "d_loss": d_loss.detach(),
        "d_real": real_logits.mean().detach(),
        "d_fake": fake_logits.mean().detach(),
    }
    if not update_generator:
        return stats

    # 3. generator: content + adversarial + feature matching, through a frozen discriminator
    d.requires_grad_(False)
    with ctx():
        fake_logits, fake_features = d(fake)  # (B, 1, *S'), [(B, F_l, *S_l)]
        with torch.no_grad():
            _, real_features = d(y)
    g_content = content_loss(fake.float(), y)
    g_adv = adversarial_loss(fake_logits.float(), target_is_real=True, for_discriminator=False)
    g_fm = torch.stack(
        [(f.float() - r.float()).abs().mean() for f, r in zip(fake_features, real_features, strict=True)]
    ).mean()
    g_loss = cfg.content_weight * g_content + cfg.adv_weight * g_adv + cfg.fm_weight * g_fm
    _optimizer_step(g_loss, parts.g_optimizer, g.parameters(), cfg.grad_clip)
    d.requires_grad_(True)
    stats.update(g_loss=g_loss, g_content=g_content, g_adv=g_adv, g_fm=g_fm)
    return {k: v.detach() for k, v in stats.items()}


def adversarial_loss_for(cfg: GanConfig) -> PatchAdversarialLoss:
    """MONAI's loss for ``cfg.adversarial``; least squares on the raw logits (Mao et al.'s LSGAN)."""
    return PatchAdversarialLoss(criterion=cfg.adversarial, no_activation_leastsq=True)


def _initial_generator(cfg: GanConfig, state: dict | None) -> tuple[nn.Module, PercentileNormalizer, dict]:
    """Generator, normaliser and architecture spec: from the resumed state, the CNN, or ``cfg.network``."""
    if state is not None:  # weights are loaded with the rest of the state
        spec = state["network"]
        return build_network(spec), PercentileNormalizer.from_dict(state.get("normalization", {})), spec
    if cfg.init_generator:
        generator, normalizer, ckpt = load_checkpoint(cfg.init_generator)
        logger.info("generator warm-started from %s (step %s)", cfg.init_generator, ckpt.get("step"))
        return generator, normalizer, ckpt["network"]
    return build_network(cfg.network), PercentileNormalizer(), cfg.network


class GanTask(engine.TrainingTask):
    """The GAN's step and its rule for ``model.pt``, for the engine.

    The warm start is validated first and is the reference (``start``); after the discriminator's
    warm-up, the latest validation whose PSNR gain stays within ``psnr_tolerance`` of the reference's
    is kept (see the module docstring for why).
    """

    progress_keys = ("d_loss", "g_loss", "g_lr")

    def __init__(
        self,
        parts: GanParts,
        cfg: GanConfig,
        content_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        adversarial_loss: PatchAdversarialLoss,
        device: torch.device,
        start: dict | None = None,
        precision: torch.dtype = torch.float32,
    ) -> None:
        self.parts, self.cfg, self.device, self.start, self.precision = parts, cfg, device, start, precision
        self.content_loss, self.adversarial_loss = content_loss, adversarial_loss

    @property
    def shipped(self) -> nn.Module:
        return self.parts.generator

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor | float]:
        g_lr, d_lr = gan_learning_rates(step, self.cfg)
        self.parts.set_learning_rates(g_lr, d_lr)
        x, y = x.to(self.device), y.to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
            y = y.contiguous(memory_format=torch.channels_last_3d)
        update_generator = step >= self.cfg.d_warmup
        stats = gan_step(
            self.parts,
            x,
            y,
            self.cfg,
            self.content_loss,
            self.adversarial_loss,
            update_generator,
            self.precision,
        )
        return {**stats, "g_lr": g_lr, "d_lr": d_lr}

    def checkpoint(self) -> tuple[nn.Module, dict]:
        return self.parts.generator, {**self.parts.training_state(), "start": self.start}

    def keep(self, record: dict, best: dict) -> bool:
        if self.start is None:  # the warm start is the reference
            self.start = record
        return record["psnr_gain"] >= self.start["psnr_gain"] - self.cfg.psnr_tolerance

    def validates_first(self) -> bool:
        return self.start is None

    def validates_after(self, step: int) -> bool:
        return step > self.cfg.d_warmup  # once the generator has trained


def train_gan(
    cfg: GanConfig,
    resume: bool = False,
    degradation: Callable[[dict], dict] | None = None,
    loader: Callable[[str], torch.Tensor] | None = None,
) -> dict:
    """Train a generator against a patch discriminator; returns the validation record of ``model.pt``.

    Under ``torchrun --nproc_per_node N`` both networks train with distributed data parallel; the
    global batch is ``cfg.batch_size`` x N (:mod:`volsr.training.engine`).

    Args:
        cfg: the run's :class:`GanConfig`.
        resume: continue from ``output_dir/checkpoint.pt`` when it exists.
        degradation: ``{"hr": crop} -> {"hr", "lr"}``; default ``build_degradation(cfg.degradation)``.
        loader: path -> channel-first MetaTensor; default :func:`volsr.data.io.load_image`.

    Example:
        >>> cfg = GanConfig(data="../shared/data/train", output_dir="runs/gan3d",
        ...                 init_generator="bundles/volsr_cnn3d/models/model.pt")
        >>> train_gan(cfg)
    """
    if loader is None:
        from volsr.data.io import load_image as loader
    with engine.distributed(cfg.device) as dist:
        device = dist.device
        torch.manual_seed(cfg.seed)
        state = engine.load_state(cfg.output_dir, resume, device, cfg.steps)
        generator, normalizer, spec = _initial_generator(cfg, state)
        cfg = replace(cfg, network=spec)  # the stored config names the generator actually trained
        discriminator = build_network(cfg.discriminator)
        generator, discriminator = generator.to(device).train(), discriminator.to(device).train()
        if device.type == "cpu":  # ~1.7x faster conv3d on CPU
            generator = generator.to(memory_format=torch.channels_last_3d)
            discriminator = discriminator.to(memory_format=torch.channels_last_3d)
        parts = GanParts.create(generator, discriminator, cfg)
        step, best, start = 0, None, None
        if state is not None:
            parts.load_training_state(state)
            step, best, start = state["step"], state.get("best"), state.get("start")
        parts.replicate(dist)

        content_loss, adversarial_loss = loss_function(cfg), adversarial_loss_for(cfg)  # fail before loading
        sampler, validator = training_data(cfg, normalizer, step, degradation, loader)
        batches = training_batches(sampler, cfg, step, dist)
        precision = decide_precision(device, cfg.amp)
        task = GanTask(parts, cfg, content_loss, adversarial_loss, device, start, precision)
        return engine.fit(
            task, cfg, batches, dist, normalizer=normalizer, validator=validator, step=step, best=best
        )
