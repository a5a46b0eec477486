"""Reports of an evaluation: per-scan ``.json`` / ``.md`` / ``.png`` montage, and the summary table.

:func:`volsr.evaluation.protocol.evaluate` makes the report dict these write;
:func:`volsr.api.evaluate_files` runs both over files and bundles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = ["write_report", "montage", "save_montage", "summary_markdown"]


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
