"""Evaluation against a high-resolution reference: degrade it, restore it, score every method.

The degradation is a protocol (:mod:`volsr.transforms.protocol`): thick slices
(:class:`~volsr.transforms.protocol.ThickSlices`) or a reduced matrix
(:class:`~volsr.transforms.protocol.KSpace`). Methods are classical baselines (``nearest``,
``linear``, ``cubic`` B-spline, ``fourier`` zero-filled k-space) and any number of resolvers
(callables ``(lr, scale=...) -> output``, such as a ``SuperResolver``, handed in by the caller:
:func:`volsr.api.evaluate_files`). Scores are masked PSNR / 3-D SSIM (:mod:`volsr.evaluation.metrics`)
and, for every method, the consistency error (relative L2 between the re-degraded output and the
input, under the slice thickness the degraded scan states: :mod:`volsr.data.acquisition`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from volsr.data.acquisition import thickness_ratios
from volsr.evaluation.calibration import error_bar_scores
from volsr.evaluation.metrics import compare, error_rank_correlation
from volsr.geometry.grids import grid_factors
from volsr.geometry.interpolation import INTERPOLATION_ORDERS, resample
from volsr.geometry.meta import new_image
from volsr.inference.consistency import consistency_error, project_consistent, project_kspace_consistent
from volsr.transforms.protocol import KSpace, Protocol, ThickSlices

__all__ = ["BASELINES", "default_baselines", "degrade", "restore_baseline", "evaluate"]

BASELINES = ("nearest", "linear", "cubic", "fourier")


def default_baselines(protocol: Protocol) -> tuple[str, ...]:
    """The classical methods ``protocol`` is scored against by default: the cubic B-spline everyone
    reports, and the strongest classical method for its degradation (linear for thick slices,
    zero-filled Fourier for a reduced k-space matrix, whose acquired band it keeps exactly)."""
    return ("cubic", "fourier") if isinstance(protocol, KSpace) else ("linear", "cubic")


def degrade(hr: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """The low-resolution image of ``hr`` under ``protocol`` (on its own, smaller grid). A reduced
    k-space matrix states a 3D acquisition, as a scanner's header does, so that volsr is scored as it
    runs on such a scan (:func:`volsr.inference.consistency_choice.decide_consistency`)."""
    lr = protocol.transform()(hr)
    if isinstance(protocol, KSpace) and protocol.reduce_matrix:
        lr.meta["acquisition_type"] = "3D"
        lr.meta["acquisition_stated_by"] = "the evaluation protocol"
    return lr


def restore_baseline(lr: torch.Tensor, shape: Sequence[int], method: str) -> torch.Tensor:
    """A classical up-sampling of ``lr`` onto the grid of ``shape`` (field of view kept)."""
    if method in INTERPOLATION_ORDERS:
        scale = grid_factors(lr.shape[1:], shape)
        return resample(lr, scale=scale, mode=method)
    if method == "fourier":
        from volsr.transforms.kspace import fourier_resample

        return fourier_resample(lr, tuple(shape))
    raise ValueError(f"method must be one of {BASELINES}, got {method!r}")


def _consistent(out: torch.Tensor, lr: torch.Tensor, protocol: Protocol) -> torch.Tensor | None:
    """``out`` projected onto the outputs that reproduce ``lr`` under ``protocol``'s forward model:
    the acquired band of k-space for a :class:`KSpace` protocol, the thick slices otherwise; ``None``
    for a windowed k-space band, whose acquired values the projection does not model."""
    if isinstance(protocol, KSpace):
        if protocol.window != "none" or not protocol.reduce_matrix:
            return None
        return project_kspace_consistent(out.as_tensor(), lr.as_tensor())
    return project_consistent(out.as_tensor(), lr.as_tensor(), thickness_ratio=thickness_ratios(lr))


def _consistency(sr: torch.Tensor, lr: torch.Tensor) -> float:
    return float(consistency_error(sr, lr, thickness_ratio=thickness_ratios(lr)))


def evaluate(
    hr: torch.Tensor,
    protocol: Protocol,
    resolvers: Mapping[str, object] | None = None,
    baselines: Sequence[str] | None = None,
    consistency: bool = False,
) -> dict:
    """Score baselines (default: :func:`default_baselines`) and resolvers on ``hr`` degraded by ``protocol``.

    With ``consistency``, every resolver's output is also scored after the exact data-consistency
    projection (method name suffixed ``+dc``).

    A resolver that returns ``(output, uncertainty map)`` (a ``SuperResolver`` with the
    ``uncertainty`` option) is also scored by how well its map ranks its actual error
    (``"uncertainty_spearman"``, :func:`volsr.evaluation.metrics.error_rank_correlation`) and read as
    an error bar: the share of voxels with |error| <= 1.96 x map (``"uncertainty_coverage"``) and the
    reliability table per decile of the map (``"uncertainty_reliability"``,
    :func:`volsr.evaluation.calibration.error_bar_scores`).

    Returns ``{"protocol", "shape_hr", "shape_lr", "methods": {name: {"psnr", "ssim", "sharpness",
    "consistency"[, "uncertainty_spearman"]}}, "images": {name: tensor}, "uncertainty": {name: map}}``
    (``images`` holds ``lr``, ``reference`` and every method's output, for montages;
    :func:`volsr.evaluation.report.write_report` drops the tensors from the JSON).
    """
    lr = degrade(hr, protocol)
    shape = tuple(hr.shape[1:])
    scale = grid_factors(lr.shape[1:], shape)
    classical = default_baselines(protocol) if baselines is None else baselines
    outputs = {m: restore_baseline(lr, shape, m) for m in classical}
    maps = {}
    for name, sr in (resolvers or {}).items():
        result = sr(lr, scale=scale)
        outputs[name], maps[name] = result if isinstance(result, tuple) else (result, None)
        fixed = _consistent(outputs[name], lr, protocol) if consistency else None
        if fixed is not None:  # a post-process of the same output: no second network pass
            outputs[f"{name}+dc"] = new_image(fixed, outputs[name])
    methods = {}
    for name, out in outputs.items():
        scores = compare(out, hr)
        scores["consistency"] = _consistency(out, lr) if isinstance(protocol, ThickSlices) else None
        if maps.get(name) is not None:
            scores["uncertainty_spearman"] = error_rank_correlation(maps[name], out, hr)
            bar = error_bar_scores(maps[name], out, hr)  # the map read as an error bar
            scores["uncertainty_coverage"] = bar["coverage"]
            scores["uncertainty_reliability"] = bar["reliability"]
        methods[name] = scores
    return {
        "protocol": protocol.to_dict(),
        "protocol_name": protocol.name,
        "shape_hr": list(shape),
        "shape_lr": list(lr.shape[1:]),
        "methods": methods,
        "images": {"lr": resample(lr, scale=scale, mode="nearest"), "reference": hr, **outputs},
        "uncertainty": {name: m for name, m in maps.items() if m is not None},
    }
