"""Self-supervised adaptation to one scan: fine-tune on the scan's own sharp in-plane detail.

A thick-slice scan is sharp in-plane. Blurring an in-plane axis with the slice profile of its thick
axis turns the scan into training pairs of its own contrast, anatomy and noise (the idea of SMORE,
Zhao et al., 2020). Starting from the shipped weights, a few hundred steps adapt the network to what
its training set did not show; only the scan being restored is used, never a reference. Pairs made
in-plane differ from the through-plane task (their third axis is the scan's blurred thick axis, the
anatomy is seen from another direction), so on scans like the training data a network trained on
the same degradation gains little or loses (the bundle README measures it); a rate well below the
training one and the loss the weights were trained with (``lr``, ``loss``) move it least.
Hand-written: MONAI has no test-time training.

Data flow: scan -> normalised as inference normalises it -> on an isotropic grid at the output
spacing of the thick axis (cubic B-spline along it, box-averaged in-plane where in-plane voxels are
finer) -> :class:`~volsr.training.data.PatchPairSampler` with thick slices of the scan's own slice
thickness along an in-plane axis -> the trainer's step (:class:`~volsr.training.trainer.PixelLossTask`)
in the training engine (:func:`~volsr.training.engine.fit`, without checkpoints) -> the moving average
of the weights (a copy: the given network is left as it was).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from volsr.data.acquisition import thickness_ratios
from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.grids import scaled_grid, voxel_spacing
from volsr.geometry.interpolation import resample_array
from volsr.geometry.meta import affine_of
from volsr.geometry.orientation import coarse_axis
from volsr.inference.devices import decide_precision, resolve_device
from volsr.inference.sliding_window import grid_channels, output_grid
from volsr.networks.input_grid import input_interpolation
from volsr.training.data import PatchPairSampler, patch_batches
from volsr.training.engine import Distributed, fit
from volsr.training.trainer import (
    PixelLossTask,
    TrainConfig,
    loss_function,
    moving_average,
    optimisation_setup,
)
from volsr.transforms import build_degradation
from volsr.transforms.slice_thickness import SliceThickness

__all__ = ["DEFAULT_ADAPT_STEPS", "adaptation_volume", "adaptation_sampler", "adapt"]

#: steps when none are given; about 5.6 CPU-seconds each for volsr_cnn3d (benchmarks/adaptation.py)
DEFAULT_ADAPT_STEPS = 500
#: in-plane voxels up to this much coarser than the output spacing are used as they are
_SPACING_TOLERANCE = 1.1


def adaptation_volume(
    image: torch.Tensor,
    normalizer: PercentileNormalizer | None = None,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
) -> tuple[MetaTensor, int, float]:
    """The scan, normalised, on an isotropic grid at the output spacing of its thick axis.

    Returns ``(volume, thick_axis, thickness_mm)``: the volume's in-plane axes carry the detail to
    learn from; ``thickness_mm`` is the slice thickness the synthetic pairs reproduce: the one the
    header states where the slices are not contiguous (:func:`volsr.data.acquisition.thickness_ratios`),
    else the thick axis's voxel size.
    """
    normalizer = normalizer or PercentileNormalizer()
    affine = affine_of(image)
    _, _, effective = output_grid(image, scale, spacing)
    axis = coarse_axis(effective)
    if axis is None or effective[axis] <= 1.0:
        raise ValueError(
            f"self-supervised adaptation needs one thick axis that is up-sampled more than the others; "
            f"the up-sampling factors are {tuple(round(e, 3) for e in effective)}"
        )
    mm = voxel_spacing(affine)
    out_mm = float(mm[axis]) / effective[axis]

    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    lo, hi = normalizer.fit(data)
    along = [1.0, 1.0, 1.0]
    along[axis] = effective[axis]
    up_affine, up_shape = scaled_grid(affine, image.shape[1:], along)
    volume = MetaTensor(
        resample_array(normalizer.normalize(data.float(), lo, hi), up_shape, "cubic"),
        affine=torch.as_tensor(up_affine),
    )
    for b in (b for b in range(3) if b != axis):
        if mm[b] > out_mm * _SPACING_TOLERANCE:
            raise ValueError(
                f"in-plane voxels along axis {b} ({mm[b]:.3g} mm) are coarser than the output spacing "
                f"({out_mm:.3g} mm): the scan has no finer detail to learn from"
            )
        if out_mm > mm[b] * _SPACING_TOLERANCE:  # finer in-plane: box-average to the output spacing
            volume = SliceThickness(b, out_mm)(volume)
    return volume, axis, float(mm[axis]) * thickness_ratios(image)[axis]


def adaptation_sampler(
    image: torch.Tensor,
    normalizer: PercentileNormalizer | None = None,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
    profile: str = "boxcar",
    patch_size: int = 32,
    grid_encoding: bool = False,
    seed: int = 0,
    interpolation: str = "cubic",
) -> PatchPairSampler:
    """Training pairs from the scan itself: its in-plane axes thickened to its own slice thickness,
    sampled at its own slice spacing (gaps or overlaps as the header states them)."""
    volume, axis, thickness = adaptation_volume(image, normalizer, scale, spacing)
    in_plane = [b for b in range(3) if b != axis]
    factor = thickness / float(np.mean(voxel_spacing(affine_of(volume))[in_plane]))
    gap = float(voxel_spacing(affine_of(image))[axis]) / thickness  # slice spacing / thickness
    slices = {"axis": in_plane, "factor": factor, "gap": gap, "profile": [profile]}
    degradation = build_degradation({"slice_thickness": slices}, seed=seed)
    patch = min(int(patch_size), *volume.shape[1:])  # a small scan: patches of one size still stack
    return PatchPairSampler(
        [volume], degradation, patch, seed=seed, grid_encoding=grid_encoding, interpolation=interpolation
    )


def adapt(
    network: nn.Module,
    image: torch.Tensor,
    normalizer: PercentileNormalizer | None = None,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
    steps: int = DEFAULT_ADAPT_STEPS,
    lr: float = 5e-4,
    loss: str = "l1",
    batch_size: int = 4,
    patch_size: int = 32,
    profile: str = "boxcar",
    device: str | torch.device = "auto",
    amp: bool = True,
    progress: bool = False,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``network`` fine-tuned on ``image``'s own in-plane detail (``image`` as given to
    :func:`volsr.inference.sliding_window.super_resolve`, with the same ``scale`` / ``spacing``).

    ``steps`` of AdamW (warm-up, then cosine to ``lr / 10``), ``loss`` (``"l1"`` or ``"mse"``:
    :data:`~volsr.training.trainer.PIXEL_LOSSES`), batches of ``batch_size`` patches; returns the
    moving average of the weights over about the last tenth of the steps, in eval mode on ``device``.
    """
    if int(steps) < 1:
        raise ValueError(f"adaptation needs at least one step, got {steps}")
    dev = resolve_device(device)
    sampler = adaptation_sampler(
        image,
        normalizer,
        scale,
        spacing,
        profile,
        patch_size,
        grid_encoding=grid_channels(network) > 0,
        seed=seed,
        interpolation=input_interpolation(network),
    )
    cfg = TrainConfig(
        data=[],
        output_dir="",
        steps=int(steps),
        lr=lr,
        min_lr=lr / 10,
        warmup=max(1, steps // 10),
        batch_size=batch_size,
        patch_size=patch_size,
        pixel_loss=loss,
        ema=min(0.99, max(0.0, 1 - 10 / steps)),  # the average spans about the last tenth of the steps
        amp=amp,
        seed=seed,
        progress=progress,
    )
    tuned, optimizer = optimisation_setup(copy.deepcopy(network).train(), cfg, dev)
    averaged = moving_average(tuned, cfg.ema, None)
    precision = decide_precision(dev, amp)
    task = PixelLossTask(tuned, optimizer, loss_function(cfg), cfg, Distributed(dev), averaged, precision)
    fit(task, cfg, patch_batches(sampler, batch_size, seed), Distributed(dev), desc="adapt")
    return task.shipped.eval()
