"""Sliding-window super-resolution of a whole volume, on the grid that keeps its field of view.

Data flow: scan (MetaTensor, scanner units) -> percentile-normalised -> cubic B-spline onto the
output grid (once) -> coarse axis moved last -> MONAI ``sliding_window_inference`` with gaussian
blending (windows on ``device``; a grid-encoding network gets its position channels built per
window from the window's slices) -> back to the input's orientation and units -> MetaTensor with
the output grid's affine (MONAI's inferer keeps the input's affine; we set it).

Where the whole volume lives (:func:`volume_device`): on a GPU with room for it, the spline, the
blended output and the de-normalisation stay on the GPU (no host/device copy per window); else on
the CPU, so memory is bounded by the window, not the volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from volsr.data.acquisition import thickness_ratios
from volsr.data.normalization import PercentileNormalizer
from volsr.errors import Option, VolsrInputError
from volsr.geometry.grid_encoding import SamplePositions, with_grid_channels
from volsr.geometry.grids import grid_factors, scale_for_spacing, scaled_grid, voxel_spacing
from volsr.geometry.meta import affine_of, new_image
from volsr.geometry.orientation import coarse_axis, from_canonical, to_canonical
from volsr.inference.consistency import project_consistent, project_kspace_consistent
from volsr.inference.consistency_choice import check_request, decide_consistency
from volsr.inference.devices import autocast, decide_precision, resolve_device
from volsr.inference.uncertainty import UncertaintyCalibration, map_views
from volsr.inference.window_progress import WindowProgress, window_count, window_label
from volsr.networks.input_grid import input_interpolation, regrid_input

__all__ = [
    "super_resolve",
    "plan_windows",
    "window_budget",
    "window_margin",
    "default_scale",
    "resolve_device",
    "DEFAULT_ROI",
    "DEFAULT_OVERLAP",
    "target_scale",
    "output_grid",
    "grid_channels",
    "volume_device",
    "uncertainty_map",
    "UNCERTAINTY_SIGMA",
]

# Windows from the receptive field, not habit. By default the window is fitted to each volume: the
# fewest, largest windows within a voxel budget (160^3, less for very large volumes on a CPU: see
# window_budget), overlapping by at least the receptive field (23 voxels for the base network), so
# each output voxel is computed about once.
# MONAI's fixed-roi tiling aligns windows to the volume edges and recomputes far more voxels than
# one whole-volume pass on typical head volumes; benchmarks/speed.py measures both plans.
WINDOW_BUDGET = 160**3
DEFAULT_MARGIN = 24
# Memory on a CPU: the whole volume's buffers (the spline input, MONAI's blended output and count map,
# float32) sit beside one window's live activations, a few feature maps per window voxel. A large enough
# volume leaves less room for the window, so the window budget shrinks to keep the peak resident memory
# under MEMORY_TARGET (the runtime's own included); benchmarks/speed.py measures the peak.
MEMORY_TARGET = int(3.25 * 2**30)
_RUNTIME_BYTES = 2**29
_VOLUME_BYTES_PER_VOXEL = 16
#: feature maps alive per window voxel (float32 or bfloat16 values of ``features`` channels each)
_LIVE_ACTIVATIONS = 5
MIN_WINDOW_BUDGET = 64**3
#: used with an explicit ``roi`` only
DEFAULT_ROI = (160, 160, 160)
DEFAULT_OVERLAP = 0.15


def plan_windows(
    shape: Sequence[int], budget: int = WINDOW_BUDGET, margin: int = DEFAULT_MARGIN
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The window size and per-axis overlap fractions that tile ``shape`` with the least work.

    For ``k`` windows along an axis of ``n`` voxels, the window is ``ceil((n + (k-1) margin) / k)``,
    so neighbours share at least ``margin`` voxels; among the window sizes within ``budget`` voxels
    the plan with the fewest computed voxels wins. Overlaps are given to MONAI as fractions.
    """
    best: tuple[int, tuple[int, ...]] | None = None
    for ks in itertools.product(*[range(1, max(1, math.ceil(n / margin)) + 1) for n in shape]):
        roi = tuple(
            n if k == 1 else math.ceil((n + (k - 1) * margin) / k) for n, k in zip(shape, ks, strict=True)
        )
        if math.prod(roi) <= budget:
            work = math.prod(k * r for k, r in zip(ks, roi, strict=True))
            if best is None or work < best[0]:
                best = (work, roi)
    if best is None:  # an axis too long for the budget even at margin-sized windows: fall back
        roi = tuple(min(n, r) for n, r in zip(shape, DEFAULT_ROI, strict=True))
        return roi, tuple(DEFAULT_OVERLAP for _ in shape)
    roi = best[1]
    overlap = tuple(0.0 if r >= n else (margin - 0.5) / r for n, r in zip(shape, roi, strict=True))
    return roi, overlap


def window_budget(out_voxels: int, network: nn.Module, device: torch.device, precision: torch.dtype) -> int:
    """Window voxels that keep a CPU run's peak memory under :data:`MEMORY_TARGET` (see above) with
    activations in ``precision``, between :data:`MIN_WINDOW_BUDGET` and :data:`WINDOW_BUDGET`; on a
    GPU the windows have its memory to themselves and the budget is :data:`WINDOW_BUDGET`."""
    if device.type != "cpu":
        return WINDOW_BUDGET
    features = int(getattr(getattr(network, "config", None), "features", 32))
    element = precision.itemsize
    free = MEMORY_TARGET - _RUNTIME_BYTES - _VOLUME_BYTES_PER_VOXEL * out_voxels
    return int(min(WINDOW_BUDGET, max(MIN_WINDOW_BUDGET, free // (_LIVE_ACTIVATIONS * features * element))))


#: bytes per output voxel of the whole-volume buffers on the device: the spline input, the blended
#: output and MONAI's count map (float32 each), with room for the de-normalised copy
_DEVICE_BYTES_PER_VOXEL = 16


def volume_device(device: torch.device, out_voxels: int, free_bytes: int | None = None) -> torch.device:
    """``device`` when it is a GPU with room for the whole output volume's buffers beside the windows
    (half its free memory at most), else the CPU. ``free_bytes``: the GPU's free memory (default:
    asked of CUDA)."""
    if device.type != "cuda":
        return torch.device("cpu")
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return device if _DEVICE_BYTES_PER_VOXEL * out_voxels <= free_bytes // 2 else torch.device("cpu")


def window_margin(network: nn.Module) -> int:
    """Voxels neighbouring windows share: :data:`DEFAULT_MARGIN`, or half the network's receptive
    field where that is more, so every voxel that is kept has the network's full context."""
    return max(DEFAULT_MARGIN, int(getattr(network, "receptive_field", 0)) // 2)


def default_scale(affine: np.ndarray) -> tuple[float, float, float]:
    """Isotropic at the finest input spacing (a 0.9 x 0.9 x 4 mm scan goes to 0.9 mm)."""
    return scale_for_spacing(affine, float(voxel_spacing(affine).min()))


def target_scale(image: torch.Tensor, scale, spacing) -> tuple[float, ...]:
    """Per-axis up-sampling factors from ``scale`` or ``spacing`` (at most one), else the default."""
    if scale is not None and spacing is not None:
        raise ValueError("give at most one of scale and spacing")
    affine = affine_of(image)
    if spacing is not None:
        return scale_for_spacing(affine, spacing)
    if scale is not None:
        s = [float(scale)] * 3 if np.isscalar(scale) else [float(v) for v in scale]
        if len(s) != 3 or min(s) <= 0:
            raise ValueError(f"scale needs 3 positive factors, got {scale}")
        return tuple(s)
    return default_scale(affine)


def output_grid(
    image: torch.Tensor, scale=None, spacing=None
) -> tuple[np.ndarray, tuple[int, ...], list[float]]:
    """The output grid's affine and shape for ``scale`` / ``spacing`` (:func:`target_scale`), and the
    effective per-axis factors ``n_out / n_in`` (the rounded grid's, not the requested ones)."""
    target = target_scale(image, scale, spacing)
    out_affine, out_shape = scaled_grid(affine_of(image), image.shape[1:], target)
    return out_affine, out_shape, grid_factors(image.shape[1:], out_shape)


class _Predictor(nn.Module):
    """The network as the inferer calls it.

    CPU: input *and* weights channels-last-3d (oneDNN's fast conv3d layout; the input alone leaves the
    weights reordered on every call). The network runs in ``precision`` (a
    :func:`volsr.inference.devices.decide_precision` dtype: bfloat16 autocast, or float32; the spline
    input and the residual sum stay float32). Returns float32, contiguous.

    ``tta``: also run the window flipped along each axis and with the in-plane axes swapped (the
    symmetries the network is trained with; the coarse axis stays last) and average the outputs
    mapped back: 16 passes instead of 1. ``spread``: the same 16 passes, returning their mean and,
    as further channels, their standard deviation (how much the network's answer depends on the
    view: detail the data does not pin down). Hand-written because MONAI's ``TestTimeAugmentation``
    draws random dictionary transforms for uncertainty estimates, not a fixed symmetric average.

    ``positions``: the whole volume's :class:`SamplePositions` (canonical order), required for a
    network with grid-encoding channels; each window, and each TTA view of it, gets the channels of
    its own crop, flips and swap.
    """

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        precision: torch.dtype,
        tta: bool = False,
        positions: SamplePositions | None = None,
        spread: bool = False,
        views: Sequence[tuple[tuple[int, ...], bool]] | None = None,
    ) -> None:
        super().__init__()
        self.spread = spread
        if device.type == "cpu":
            network = network.to(memory_format=torch.channels_last_3d)
        self.network = network
        self.device = device
        self.precision = precision
        # ``views``: a subset of the symmetries (the cheap map's, volsr.inference.uncertainty.map_views)
        self.views = list(views) if views is not None else _symmetries() if tta or spread else [((), False)]
        takes_grid = grid_channels(network) > 0
        if takes_grid and positions is None:
            raise ValueError("this network takes grid-encoding channels: give the volume's SamplePositions")
        self.positions = positions if takes_grid else None

    def _run(self, x: torch.Tensor, positions: list[SamplePositions] | None) -> torch.Tensor:
        if positions is not None:  # one per window of the batch, in the view's orientation
            x = with_grid_channels(x, positions)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(self.device, self.precision):
            return self.network(x).float()

    def forward(self, x: torch.Tensor, location: Sequence[Sequence[slice]] | None = None) -> torch.Tensor:
        """``x``: windows ``(B, C, *S)``; ``location``: MONAI's ``with_coord`` slices of each window
        (batch, channel, then spatial), or ``None`` for the whole volume."""
        windows = None
        if self.positions is not None:
            whole = [self.positions] * x.shape[0]
            windows = whole if location is None else [self.positions.cropped(loc[2:]) for loc in location]
        total, squares, first = None, None, None
        for flips, swap in self.views:
            v = x.flip(flips) if flips else x
            v = v.transpose(2, 3) if swap else v
            views = None
            if windows is not None:
                views = [p.flipped([d - 2 for d in flips]) for p in windows]
                views = [p.permuted([1, 0, 2]) for p in views] if swap else views
            y = self._run(v, views)
            y = y.transpose(2, 3) if swap else y  # undo in reverse order: swap, then flips
            y = y.flip(flips) if flips else y
            if self.spread:  # moments about the first view: no cancellation when the views agree
                first = y.clone() if first is None else first
                d = y - first
                squares = d.square() if squares is None else squares.add_(d.square())
            total = y if total is None else total.add_(y)
        mean = total.div_(len(self.views))
        if not self.spread:
            return mean.contiguous()
        offset = mean - first
        variance = squares.div_(len(self.views)).sub_(offset.square()).clamp_(min=0)
        return torch.cat([mean, variance.sqrt_()], dim=1)


def grid_channels(network: nn.Module) -> int:
    """How many grid-encoding input channels ``network`` takes after the image (0: none)."""
    return int(getattr(getattr(network, "config", None), "grid_channels", 0))


def _symmetries() -> list[tuple[tuple[int, ...], bool]]:
    """Flips of any of the spatial dims (2, 3, 4) x swapping the in-plane dims 2 and 3: 16 views."""
    flips = [
        tuple(d for d, on in zip((2, 3, 4), bits, strict=True) if on)
        for bits in itertools.product((0, 1), repeat=3)
    ]
    return [(f, swap) for f in flips for swap in (False, True)]


@torch.no_grad()
def super_resolve(
    image: torch.Tensor,
    network: nn.Module,
    normalizer: PercentileNormalizer | None = None,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
    roi: Sequence[int] | None = None,
    overlap: float | None = None,
    device: str | torch.device = "auto",
    precision: torch.dtype | None = None,
    progress: bool = False,
    sw_batch_size: int = 1,
    consistency: bool | str = False,
    tta: bool = False,
    uncertainty: bool = False,
    calibration: UncertaintyCalibration | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Super-resolve a channel-first scan ``(C, X, Y, Z)``.

    Args:
        image: MetaTensor in scanner units; its affine defines the input grid.
        network: a generator mapping a re-gridded, normalised patch to its refinement (the re-gridding its
            weights were trained on: :func:`volsr.networks.input_grid.regrid_input`).
        normalizer: the normalisation the network was trained with (default percentile 0.5/99.5).
        scale: per-axis up-sampling factors (non-integer allowed); or
        spacing: target voxel size in mm (``None`` on an axis keeps it). With neither, the output
            is isotropic at the finest input spacing.
        roi: window size in output voxels, in the network's canonical order (coarse axis last);
            default: fitted to the volume by :func:`plan_windows`, within :func:`window_budget`.
        overlap: window overlap fraction with an explicit ``roi`` (default 0.15); gaussian blending.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``: where windows run; the volume stays on the CPU.
        precision: the dtype the network runs in (``torch.float32`` or ``torch.bfloat16``); ``None``:
            :func:`volsr.inference.devices.decide_precision` with ``amp`` on, i.e. bfloat16 on GPUs
            that support it and on CPUs where it is faster (measured once per machine), else float32.
        progress: show a progress bar over windows.
        sw_batch_size: windows per network call.
        consistency: project the output, in normalised units before de-normalising, onto the volumes
            that reproduce the input exactly under a forward model of the acquisition. ``"slices"``:
            boxcar thick slices on every up-sampled axis, contiguous unless the header stated the
            slice thickness (:func:`volsr.inference.consistency.project_consistent`,
            :func:`volsr.data.acquisition.slice_acquisition`); ``"kspace"``: a smaller acquisition
            matrix, whose acquired band of k-space is kept exactly
            (:func:`volsr.inference.consistency.project_kspace_consistent`); ``"auto"`` (or True): the
            model :func:`volsr.inference.consistency_choice.decide_consistency` picks from the header,
            else the grid, and no projection where an axis is down-sampled; False (the default here:
            this is the network's own output; :class:`volsr.SuperResolver` and ``volsr infer`` ask for
            ``"auto"``): none. The output's ``meta["consistency"]`` records what was done and why
            (:meth:`volsr.inference.consistency_choice.ConsistencyChoice.record`).
        tta: test-time augmentation: average the network over 16 flips and in-plane swaps of each
            window (16x the network time; see ``benchmarks/quality.py`` for what it buys).
        uncertainty: also return the uncertainty map (:func:`uncertainty_map`): the spread of the
            views (:func:`volsr.inference.uncertainty.map_views`: 4 of them, all 16 with ``tta``), whose
            mean is then the output.
        calibration: turns the map into the error's estimated standard deviation in the input's units
            (:meth:`volsr.inference.uncertainty.UncertaintyCalibration.error_bar`; a bundle's
            ``models/uncertainty_calibration.json``, for the map's number of views); ``None``: the raw spread.

    Returns:
        MetaTensor on the output grid (field of view kept), float32 in the input's units; with
        ``uncertainty``, ``(output, map)`` on the same grid, the map in the input's units too.

    Raises:
        VolsrInputError: the output grid is the input grid (an isotropic scan at its own spacing,
            or factors of 1): there is nothing to super-resolve, and the network would only change
            the voxels.
    """
    check_request(consistency)
    normalizer = normalizer or PercentileNormalizer()
    dev = resolve_device(device)
    precision = decide_precision(dev, amp=True) if precision is None else precision
    out_affine, out_shape, effective = output_grid(image, scale, spacing)
    if all(f == 1 for f in effective):  # never hand back silently changed voxels for "nothing to do"
        mm = " x ".join(f"{s:.4g}" for s in voxel_spacing(affine_of(image)))
        raise VolsrInputError(
            getattr(image, "meta", {}).get("filename_or_obj", "the image"),
            f"already has the requested grid ({mm} mm): nothing to super-resolve; "
            "ask for a finer one with {grid}",
            grid=Option("spacing= / scale=", "--spacing / --scale"),
        )
    choice = decide_consistency(image, effective, consistency)

    data = image.as_tensor() if hasattr(image, "as_tensor") else image
    lo, hi = normalizer.fit(data)
    work = volume_device(dev, math.prod(out_shape))  # where the whole volume lives
    x_lr = normalizer.normalize(data.to(work).float(), lo, hi)  # (C, *in_shape)
    # (C, *out_shape): the only whole-volume resampling
    x = regrid_input(x_lr, out_shape, input_interpolation(network))

    axis = coarse_axis(effective)
    x = to_canonical(x[None], axis).contiguous()  # (1, C, ...), coarse axis last
    if roi is None:
        budget = window_budget(math.prod(out_shape), network, dev, precision)
        roi, overlap = plan_windows(x.shape[2:], budget, margin=window_margin(network))
    else:
        roi = tuple(min(int(r), int(n)) for r, n in zip(roi, x.shape[2:], strict=True))
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
    positions = SamplePositions.canonical(image.shape[1:], out_shape, axis)
    views = map_views(tta) if uncertainty else None
    predictor = _Predictor(
        network.to(dev).eval(), dev, precision, tta, positions, spread=uncertainty, views=views
    )
    windows = window_count(x.shape[2:], roi, overlap)  # a labelled bar: MONAI's own has no label
    counted = WindowProgress(predictor, windows, window_label(image), progress)
    y = sliding_window_inference(
        x,
        roi,
        sw_batch_size,
        counted,
        overlap=overlap,
        mode="gaussian",
        sw_device=dev,
        device=work,
        progress=False,
        with_coord=True,
    )
    del x  # the spline volume: one full-size buffer less at the peak
    y = from_canonical(y, axis)[0]  # (C, *out_shape), normalised
    spread = None
    if uncertainty:
        y, spread = y.split(y.shape[0] // 2)
    if choice.model == "kspace":  # a smaller acquisition matrix: keep the acquired band of k-space
        y = project_kspace_consistent(y, x_lr)
    elif choice.model == "slices":  # the input grid is the model's low-resolution grid: same field of view
        y = project_consistent(y, x_lr, thickness_ratio=thickness_ratios(image))
    y = normalizer.denormalize_(y.contiguous(), lo, hi).cpu()
    out = new_image(y, image, out_affine, consistency=choice.record())
    if spread is None:
        return out
    error_bar = uncertainty_map(spread, float(hi - lo))
    if calibration is not None:  # the spread as the error's standard deviation, noise floor included
        error_bar = calibration.error_bar(error_bar, x_lr, effective, float(hi - lo), family=choice.model)
    return out, new_image(error_bar.cpu(), image, out_affine)


#: smoothing of the views' spread, in output voxels: a single voxel's standard deviation over 16 views
#: is a noisy estimate; its neighbourhood average ranks the actual error better (docs/fidelity.md)
UNCERTAINTY_SIGMA = 1.0


def uncertainty_map(spread: torch.Tensor, intensity_range: float) -> torch.Tensor:
    """The per-voxel map ``volsr infer --uncertainty`` writes: the standard deviation of the network's
    output over the 16 symmetric views of each window (``spread``, normalised units, ``(C, *S)``),
    Gaussian-smoothed over :data:`UNCERTAINTY_SIGMA` voxels, in the input's intensity units.

    High where the answer depends on how the network looks at the scan: detail the acquired data
    does not determine (edges across thick slices, fine texture); near 0 where every view agrees.
    """
    from monai.networks.layers import separable_filtering
    from monai.networks.layers.convutils import gaussian_1d

    # MONAI's GaussianSmooth pads with zeros, which would fade the map towards the volume's faces
    kernel = gaussian_1d(torch.tensor(UNCERTAINTY_SIGMA), truncated=4.0, approx="sampled", normalize=True)
    kernel = kernel.to(spread.device)
    smoothed = separable_filtering(spread.float()[None], [kernel] * 3, mode="replicate")[0]
    return smoothed.clamp_(min=0).mul_(intensity_range)
