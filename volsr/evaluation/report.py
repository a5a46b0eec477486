"""Reports of an evaluation: per-scan ``.json`` / ``.md`` / ``.png`` montage, and the summary table.

:func:`volsr.evaluation.comparison.evaluate` makes the report dict these write;
:func:`volsr.api.evaluate_files` runs both over files and bundles.
"""

from __future__ import annotations

import io
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
    ranked = {n: s for n, s in report["methods"].items() if "uncertainty_spearman" in s}
    if ranked:
        lines += [
            "",
            "Uncertainty map against the actual |error| (foreground voxels): Spearman's rank correlation, and"
            " its coverage as an error bar (the share of voxels with |error| <= 1.96 x map; target 95 %):",
            "",
        ]
        lines += [
            f"- {name}: Spearman {s['uncertainty_spearman']:.3f}, "
            f"coverage {_share(s.get('uncertainty_coverage'))}"
            for name, s in ranked.items()
        ]
    return "\n".join(lines) + "\n"


def montage(report: dict, path: Path, axis: int | None = None) -> Path:
    """PNG of an evaluation report: LR, every method, reference, and their error maps."""
    axis = int(report["protocol"].get("axis", 2)) if axis is None else axis
    title = f"{report.get('name', '')}: {report['protocol_name']}"
    return save_montage(
        report["images"], path, axis, title, report["methods"], reference="reference",
        uncertainty=report.get("uncertainty"),
    )  # fmt: skip


def save_montage(
    images: Mapping[str, torch.Tensor],
    path: str | Path,
    axis: int,
    title: str,
    scores: Mapping[str, Mapping] | None = None,
    reference: str | None = None,
    uncertainty: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Same-grid images side by side on the three central planes, voxels drawn at their physical aspect.

    The planes that contain ``axis`` (where thick slices show) come first. A method's column title
    carries its masked PSNR and SSIM from ``scores``. With a ``reference`` key, each image row is
    followed by the methods' absolute error against it, with a colour bar in the images' units.
    ``uncertainty`` (method name -> map) adds a row of each method's map under its error, on a
    colour scale of its own.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(images.values()))
    spacing = _spacing(first)
    centre = [n // 2 for n in first.shape[1:]]
    cuts = sorted(range(3), key=lambda a: (a == axis, a))  # planes containing `axis` first

    def plane(t: torch.Tensor, cut: int) -> np.ndarray:
        a = (t.as_tensor() if hasattr(t, "as_tensor") else t)[0].float().numpy()
        return np.rot90(np.take(a, centre[cut], axis=cut))  # rows: the 2nd remaining axis, flipped

    shown = images[reference] if reference else first
    vmin, vmax = np.percentile(shown[0].float().numpy(), [0.5, 99.5])
    emax = 0.25 * (vmax - vmin)
    names = [n for n in images if n != reference] + ([reference] if reference else [])
    errors = [n for n in names if reference and n not in ("lr", reference)]
    maps = dict(uncertainty or {})
    kinds = ("image",) + (("error",) if errors else ()) + (("uncertainty",) if maps else ())
    row_kinds = [(cut, kind) for cut in cuts for kind in kinds]
    umax = max((float(np.percentile(m[0].float().numpy(), 99.5)) for m in maps.values()), default=1.0)
    # panel heights in mm, so every row is drawn at the same physical scale
    extent = [float(n * s) for n, s in zip(first.shape[1:], spacing, strict=True)]
    widths = {cut: max(extent[a] for a in range(3) if a != cut) for cut in cuts}
    heights = [[extent[a] for a in range(3) if a != cut][1] for cut, _ in row_kinds]
    panel_w = 2.2
    fig_h = sum(panel_w * h / max(widths.values()) for h in heights) + 0.25 * len(row_kinds) + 0.9
    fig, axes = plt.subplots(
        len(row_kinds),
        len(names),
        figsize=(panel_w * len(names) + 0.8, fig_h),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
    )
    error_image, map_image = None, None
    for row, (cut, kind) in enumerate(row_kinds):
        a, b = [x for x in range(3) if x != cut]
        aspect = spacing[b] / spacing[a]  # rot90: image rows step along b, columns along a
        ref_plane = plane(images[reference], cut) if reference else None
        for col, name in enumerate(names):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if kind == "image":
                ax.imshow(plane(images[name], cut), cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect)
                if row == 0:
                    ax.set_title(_column_title(name, scores), fontsize=8)
            elif kind == "error" and name in errors:
                diff = np.abs(plane(images[name], cut) - ref_plane)
                error_image = ax.imshow(diff, cmap="magma", vmin=0, vmax=emax, aspect=aspect)
            elif kind == "uncertainty" and name in maps:
                shown_map = plane(maps[name], cut)
                map_image = ax.imshow(shown_map, cmap="viridis", vmin=0, vmax=umax, aspect=aspect)
            elif col != 0:
                ax.axis("off")
            if col == 0:
                row_label = {"image": "", "error": "\n|error|", "uncertainty": "\nuncertainty"}[kind]
                label = f"plane {'XYZ'[a]}{'XYZ'[b]}" + row_label
                ax.set_ylabel(label, fontsize=8)
    if error_image is not None:  # every error map shares one scale: 0 to a quarter of the display range
        bar = fig.colorbar(error_image, ax=axes, shrink=0.4, aspect=30, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("|error| (image units)", fontsize=8)
    if map_image is not None:
        bar = fig.colorbar(map_image, ax=axes, shrink=0.4, aspect=30, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("uncertainty (image units)", fontsize=8)
    fig.suptitle(title + f"  (spacing {' x '.join(f'{v:.2f}' for v in spacing)} mm)", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_palette_png(fig, path, dpi=110)
    plt.close(fig)
    return path


def _save_palette_png(fig, path: Path, dpi: int) -> None:
    """``fig`` as a 256-colour palette PNG: about half the bytes of the RGBA file matplotlib writes
    (which has no palette option), for reports that are kept and shared."""
    from PIL import Image  # matplotlib's own image library

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as rgba:
        rgba.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)


def _spacing(image: torch.Tensor) -> tuple[float, float, float]:
    """Voxel size in mm from a MetaTensor's affine (1 mm for a bare tensor)."""
    affine = getattr(image, "affine", None)
    if affine is None:
        return (1.0, 1.0, 1.0)
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.linalg.norm(m, axis=0))


def _column_title(name: str, scores: Mapping[str, Mapping] | None) -> str:
    s = (scores or {}).get(name)
    if not s:
        return name
    return f"{name}\nPSNR {s['psnr']:.2f} dB\nSSIM {s['ssim']:.3f}"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def write_report(report: dict, out_dir: str | Path, name: str = "evaluate") -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out_dir``, and for each method
    with an uncertainty map its reliability diagram, ``<name>_<method>_reliability.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    serial = {k: v for k, v in report.items() if k not in ("images", "uncertainty")}
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(serial, indent=2) + "\n")
    paths["markdown"].write_text(_markdown(report))
    montage(report, paths["png"])
    for method, s in report["methods"].items():
        if s.get("uncertainty_reliability"):
            from volsr.evaluation.calibration import save_reliability_diagram

            png = out / f"{name}_{method}_reliability.png"
            paths[f"reliability {method}"] = save_reliability_diagram(
                s["uncertainty_reliability"], png, title=f"{name}: {method}, {report['protocol_name']}"
            )
    return paths


def summary_markdown(summary: dict) -> str:
    """One table: a row per scan and method, with the PSNR gain over cubic B-spline and, for a method
    with an uncertainty map, the map's Spearman correlation with the actual |error|."""
    lines = [
        f"Protocol: {summary['protocol_name']}",
        "",
        "| scan | method | masked PSNR (dB) | gain vs cubic (dB) | masked SSIM | sharpness (SR/ref) "
        "| consistency error | uncertainty vs error (Spearman) | error bar coverage |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scan, entry in summary["scans"].items():
        methods = entry["methods"]
        cubic = methods.get("cubic", {}).get("psnr")
        for name, s in methods.items():
            gain = "" if cubic is None else f"{s['psnr'] - cubic:+.2f}"
            c = "n/a" if s.get("consistency") is None else f"{s['consistency']:.4f}"
            rho = "" if s.get("uncertainty_spearman") is None else f"{s['uncertainty_spearman']:.3f}"
            scores = f"{s['psnr']:.2f} | {gain} | {s['ssim']:.4f} | {s['sharpness']:.3f} | {c} | {rho}"
            scores += f" | {_share(s.get('uncertainty_coverage'))}"
            lines.append(f"| {scan} | {name} | {scores} |")
    return "\n".join(lines) + "\n"
