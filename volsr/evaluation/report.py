"""Evaluation against a high-resolution reference: degrade it, restore it, score every method.

A *protocol* names the degradation, as a dict:
``{"kind": "thickness", "axis": 2, "factor": 4.0, "profile": "boxcar"}`` (thick slices of
``factor`` x the voxel size; ``"spacing_factor": 1.3`` puts their centres 1.3 x the thickness
apart, leaving gaps) or ``{"kind": "kspace", "fraction": 0.5, "axes": [0, 1, 2],
"window": "none"}`` (a reduced acquisition matrix). Methods are classical baselines (``nearest``,
``linear``, ``cubic`` B-spline, ``fourier`` zero-filled k-space) and any number of
``SuperResolver``s. Scores are masked PSNR / 3-D SSIM (:mod:`volsr.evaluation.metrics`) and, for every method,
the consistency error (relative L2 between the re-degraded output and the input, under the slice
thickness the degraded scan states: :mod:`volsr.data.acquisition`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from volsr.data.acquisition import thickness_ratios
from volsr.evaluation.metrics import compare
from volsr.geometry.grids import grid_factors
from volsr.geometry.interpolation import INTERPOLATION_ORDERS, resample
from volsr.geometry.meta import new_image
from volsr.inference.consistency import consistency_error, project_consistent

__all__ = [
    "BASELINES",
    "degrade",
    "restore_baseline",
    "evaluate",
    "evaluate_files",
    "write_report",
    "protocol_name",
]

BASELINES = ("nearest", "linear", "cubic", "fourier")


def protocol_name(protocol: Mapping) -> str:
    if protocol.get("kind", "thickness") == "thickness":
        name = (
            f"thick x{float(protocol.get('factor', 4)):g} axis {protocol.get('axis', 2)} "
            f"{protocol.get('profile', 'boxcar')}"
        )
        spacing_factor = float(protocol.get("spacing_factor", 1.0))
        return name if spacing_factor == 1.0 else f"{name} spacing x{spacing_factor:g}"
    axes = "".join(str(a) for a in protocol.get("axes", [0, 1, 2]))
    return f"k-space {float(protocol['fraction']):.2g} axes {axes}"


def degrade(hr: torch.Tensor, protocol: Mapping) -> torch.Tensor:
    """The low-resolution image of ``hr`` under ``protocol`` (on its own, smaller grid)."""
    kind = protocol.get("kind", "thickness")
    if kind == "thickness":
        from volsr.transforms.slice_thickness import SliceThickness, thickness_for_factor

        axis = int(protocol.get("axis", 2))
        if "thickness" in protocol:
            thickness = float(protocol["thickness"])
        else:
            thickness = thickness_for_factor(hr, axis, float(protocol.get("factor", 4.0)))
        spacing = float(protocol.get("spacing_factor", 1.0)) * thickness
        return SliceThickness(axis, thickness, spacing, profile=protocol.get("profile", "boxcar"))(hr)
    if kind == "kspace":
        from volsr.transforms import KSpaceTruncation

        return KSpaceTruncation(
            protocol["fraction"],
            axes=protocol.get("axes", (0, 1, 2)),
            window=protocol.get("window", "none"),
            reduce_matrix=True,
        )(hr)
    raise ValueError(f"protocol kind must be 'thickness' or 'kspace', got {kind!r}")


def restore_baseline(lr: torch.Tensor, shape: Sequence[int], method: str) -> torch.Tensor:
    """A classical up-sampling of ``lr`` onto the grid of ``shape`` (field of view kept)."""
    if method in INTERPOLATION_ORDERS:
        scale = grid_factors(lr.shape[1:], shape)
        return resample(lr, scale=scale, mode=method)
    if method == "fourier":
        from volsr.transforms.kspace import fourier_resample

        return fourier_resample(lr, tuple(shape))
    raise ValueError(f"method must be one of {BASELINES}, got {method!r}")


def _consistency(sr: torch.Tensor, lr: torch.Tensor) -> float:
    return float(consistency_error(sr, lr, thickness_ratio=thickness_ratios(lr)))


def evaluate(
    hr: torch.Tensor,
    protocol: Mapping,
    resolvers: Mapping[str, object] | None = None,
    baselines: Sequence[str] = ("linear", "cubic"),
    consistency: bool = False,
) -> dict:
    """Score baselines and resolvers on ``hr`` degraded by ``protocol``.

    With ``consistency``, every resolver's output is also scored after the exact data-consistency
    projection (method name suffixed ``+dc``).

    Returns ``{"protocol", "shape_hr", "shape_lr", "methods": {name: {"psnr", "ssim", "sharpness",
    "consistency"}}, "images": {name: tensor}}`` (``images`` holds ``lr``, ``reference`` and every
    method's output, for montages; :func:`write_report` drops it from the JSON).
    """
    lr = degrade(hr, protocol)
    shape = tuple(hr.shape[1:])
    scale = grid_factors(lr.shape[1:], shape)
    outputs = {m: restore_baseline(lr, shape, m) for m in baselines}
    for name, sr in (resolvers or {}).items():
        outputs[name] = sr(lr, scale=scale)
        if consistency:  # a post-process of the same output: no second network pass
            out, ratios = outputs[name], thickness_ratios(lr)
            fixed = project_consistent(out.as_tensor(), lr.as_tensor(), thickness_ratio=ratios)
            outputs[f"{name}+dc"] = new_image(fixed, out)
    methods = {}
    for name, out in outputs.items():
        scores = compare(out, hr)
        scores["consistency"] = (
            _consistency(out, lr) if protocol.get("kind", "thickness") == "thickness" else None
        )
        methods[name] = scores
    return {
        "protocol": dict(protocol),
        "protocol_name": protocol_name(protocol),
        "shape_hr": list(shape),
        "shape_lr": list(lr.shape[1:]),
        "methods": methods,
        "images": {"lr": resample(lr, scale=scale, mode="nearest"), "reference": hr, **outputs},
    }


def _markdown(report: dict) -> str:
    lines = [
        f"# volsr evaluate: {report.get('name', '')}",
        "",
        f"Protocol: {report['protocol_name']}; reference {report['shape_hr']}, input {report['shape_lr']}.",
        "",
        "| method | masked PSNR (dB) | masked SSIM | sharpness (SR/ref) | consistency error |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in report["methods"].items():
        c = "n/a" if s.get("consistency") is None else f"{s['consistency']:.4f}"
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['sharpness']:.3f} | {c} |")
    return "\n".join(lines) + "\n"


def montage(report: dict, path: Path, axis: int | None = None) -> Path:
    """PNG of an evaluation report: LR, every method, reference, and their error maps."""
    axis = int(report["protocol"].get("axis", 2)) if axis is None else axis
    title = f"{report.get('name', '')}: {report['protocol_name']}"
    return save_montage(report["images"], path, axis, title, report["methods"], reference="reference")


def save_montage(
    images: Mapping[str, torch.Tensor],
    path: str | Path,
    axis: int,
    title: str,
    scores: Mapping[str, Mapping] | None = None,
    reference: str | None = None,
) -> Path:
    """Same-grid images side by side on a plane through ``axis`` (where thick slices show).

    With a ``reference`` key, a second row holds each method's absolute error against it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(images.values()))
    cut = 1 if axis != 1 else 0  # a plane that contains the degraded axis
    idx = first.shape[1 + cut] // 2

    def plane(t: torch.Tensor) -> np.ndarray:
        a = (t.as_tensor() if hasattr(t, "as_tensor") else t)[0].float().numpy()
        return np.rot90(np.take(a, idx, axis=cut))

    shown = images[reference] if reference else first
    vmin, vmax = np.percentile(plane(shown), [0.5, 99.5])
    names = [n for n in images if n != reference] + ([reference] if reference else [])
    rows = 2 if reference else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(2.6 * len(names), 2.8 * rows), squeeze=False)
    ref_plane = plane(images[reference]) if reference else None
    for col, name in enumerate(names):
        p = plane(images[name])
        axes[0, col].imshow(p, cmap="gray", vmin=vmin, vmax=vmax)
        label = name if not scores or name not in scores else f"{name}\n{scores[name]['psnr']:.2f} dB"
        axes[0, col].set_title(label, fontsize=9)
        if reference and name not in ("lr", reference):
            axes[1, col].imshow(np.abs(p - ref_plane), cmap="magma", vmin=0, vmax=0.25 * (vmax - vmin))
            axes[1, col].set_title("|error|", fontsize=8)
        for row in range(rows):
            axes[row, col].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: str | Path, name: str = "evaluate") -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    serial = {k: v for k, v in report.items() if k != "images"}
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(serial, indent=2) + "\n")
    paths["markdown"].write_text(_markdown(report))
    montage(report, paths["png"])
    return paths


class _AdaptedPerScan:
    """``sr`` fine-tuned on each scan it is given, once per scan for ``+adapt`` and ``+adapt+tta``."""

    def __init__(self, sr, steps: int) -> None:
        self.sr, self.steps = sr, steps
        self.scan, self.plain, self.averaged = None, None, None  # holding the scan: its identity is unique

    def _for(self, lr: torch.Tensor, scale: Sequence[float]) -> None:
        if self.scan is not lr:
            self.plain = self.sr.adapted(lr, scale=scale, steps=self.steps)
            self.averaged = self.plain.with_options(tta=True)
            self.scan = lr

    def __call__(self, lr: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        self._for(lr, scale)
        return self.plain(lr, scale=scale)

    def with_tta(self, lr: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
        self._for(lr, scale)
        return self.averaged(lr, scale=scale)


def evaluate_files(
    paths: Sequence[str | Path],
    protocol: Mapping,
    bundles: Sequence[str | Path] = (),
    out_dir: str | Path = "eval",
    device: str = "auto",
    baselines: Sequence[str] = ("linear", "cubic"),
    consistency: bool = False,
    tta: bool = False,
    adapt: int = 0,
) -> dict:
    """Evaluate every scan in ``paths``; write per-scan reports and ``summary.{json,md}``.

    Each bundle is scored as is and, with ``consistency=True``, also with data consistency
    (method name suffixed ``+dc``); with ``tta=True`` also with test-time augmentation (``+tta``);
    with ``adapt`` > 0 also fine-tuned for ``adapt`` steps on each degraded scan (``+adapt``, and
    ``+adapt+tta`` with ``tta``: it sees the low-resolution input only, never the reference).
    Returns the summary dict.
    """
    from volsr.api import SuperResolver, find_bundle
    from volsr.data.io import load_image, scan_stem

    resolvers = {}
    for b in bundles:
        name = find_bundle(b).name
        resolvers[name] = sr = SuperResolver.from_bundle(b, device=device)
        if tta:  # the same loaded network, averaged over flipped views
            resolvers[f"{name}+tta"] = sr.with_options(tta=True)
        if adapt:
            tuned = _AdaptedPerScan(sr, adapt)
            resolvers[f"{name}+adapt"] = tuned
            if tta:
                resolvers[f"{name}+adapt+tta"] = tuned.with_tta
    out = Path(out_dir)
    summary: dict = {"protocol": dict(protocol), "protocol_name": protocol_name(protocol), "scans": {}}
    for p in paths:
        report = evaluate(load_image(p), protocol, resolvers, baselines, consistency=consistency)
        report["name"] = scan_stem(p)
        files = write_report(report, out, name=report["name"])
        summary["scans"][report["name"]] = {
            "methods": report["methods"],
            "files": {k: str(v) for k, v in files.items()},
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """One table: a row per scan and method, with the PSNR gain over cubic B-spline."""
    lines = [
        f"Protocol: {summary['protocol_name']}",
        "",
        "| scan | method | masked PSNR (dB) | gain vs cubic (dB) | masked SSIM | sharpness (SR/ref) "
        "| consistency error |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scan, entry in summary["scans"].items():
        methods = entry["methods"]
        cubic = methods.get("cubic", {}).get("psnr")
        for name, s in methods.items():
            gain = "" if cubic is None else f"{s['psnr'] - cubic:+.2f}"
            c = "n/a" if s.get("consistency") is None else f"{s['consistency']:.4f}"
            scores = f"{s['psnr']:.2f} | {gain} | {s['ssim']:.4f} | {s['sharpness']:.3f} | {c}"
            lines.append(f"| {scan} | {name} | {scores} |")
    return "\n".join(lines) + "\n"
