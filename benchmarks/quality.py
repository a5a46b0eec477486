"""Quality benchmark: masked PSNR / 3-D SSIM of every baseline and bundle on the validation volumes.

Every volume in ``--data`` (default ``../shared/data/val``) is degraded by each protocol (boxcar thick
slices x2 and x4 along axes 0, 1, 2; 3-voxel slices every 4 voxels along axis 2, with gaps; k-space
truncation keeping 1/2 and 1/3 of the matrix on all axes, and 1/2 on axis 2), restored by nearest,
linear, cubic B-spline and zero-filled k-space (fourier) interpolation and by every bundle of
``bundles/`` that has ``models/model.pt`` (with and without data consistency), and scored against the
original with :func:`volsr.evaluation.comparison.evaluate`.

Writes ``<out>/quality.json``, ``<out>/psnr_gain.png`` (PSNR gain over cubic) and the section
between ``<!-- quality:begin -->`` and ``<!-- quality:end -->`` of ``<out>.md``.

    python benchmarks/quality.py                      # all bundles, all volumes (minutes)
    python benchmarks/quality.py --quick --out /tmp/q # one cropped volume, two protocols (seconds)
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from volsr.data.io import VOLUME_SUFFIXES, scan_stem
from volsr.errors import VolsrInputWarning
from volsr.evaluation.comparison import evaluate
from volsr.transforms.protocol import KSpace, Protocol, ThickSlices

# imported as ``benchmarks.<script>`` (tests) or run as ``python benchmarks/<script>.py``
common = importlib.import_module(f"{__package__}.common" if __package__ else "common")

QUICK_CROP = (64, 64, 48)


def kspace_available() -> bool:
    try:
        from volsr.transforms.kspace import KSpaceTruncation, fourier_resample  # noqa: F401
    except ImportError:
        return False
    return True


def baselines() -> list[str]:
    """nearest, linear, cubic and, once :mod:`volsr.transforms.kspace` is there, fourier."""
    return ["nearest", "linear", "cubic"] + (["fourier"] if kspace_available() else [])


def protocols(quick: bool = False) -> list[Protocol]:
    """Thick slices x2 / x4 on each axis, slices with gaps, then k-space truncation to 1/2 and 1/3
    on all axes and to 1/2 on axis 2 (a 3D acquisition with fewer partitions)."""
    thick = [ThickSlices(axis=axis, factor=factor) for factor in (2.0, 4.0) for axis in (0, 1, 2)]
    # a clinical pattern (e.g. 3 mm slices every 4 mm): what the gap-aware data consistency is for
    gaps = [ThickSlices(axis=2, factor=3.0, spacing_factor=4 / 3)]
    kspace = [KSpace(f) for f in (1 / 2, 1 / 3)] + [KSpace(1 / 2, axes=(2,))]
    if not kspace_available():
        kspace = []
    if quick:
        return [thick[5]] + (kspace[:1] or [thick[0]])
    return thick + gaps + kspace


def find_bundles(names: Sequence[str] = ("all",), root: Path = common.ROOT / "bundles") -> dict[str, Path]:
    """``{name: bundle folder}`` for the bundles under ``root`` with ``models/model.pt``."""
    found = {p.parent.parent.name: p.parent.parent for p in sorted(root.glob("*/models/model.pt"))}
    if list(names) == ["none"]:
        return {}
    if list(names) == ["all"]:
        return found
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"no models/model.pt for bundle(s) {missing} in {root}; found {sorted(found)}")
    return {n: found[n] for n in names}


def resolvers(bundles: Mapping[str, Path], checkpoints: Sequence[Path] = (), device: str = "cpu") -> dict:
    """``{method name: SuperResolver}`` for each bundle and checkpoint (``+dc`` variants are added by
    ``evaluate(..., consistency=True)`` as a post-process of the same output)."""
    from volsr.api import SuperResolver

    out = {name: SuperResolver.from_bundle(path, device=device) for name, path in bundles.items()}
    out.update({scan_stem(c): SuperResolver.from_checkpoint(c, device=device) for c in checkpoints})
    return out


def volume_paths(data: Path) -> list[Path]:
    paths = sorted(p for p in Path(data).iterdir() if p.name.endswith(VOLUME_SUFFIXES))
    if not paths:
        raise SystemExit(f"no volumes in {data}")
    return paths


def volume_name(path: Path) -> str:
    return scan_stem(path)


def run(
    volumes: Mapping[str, torch.Tensor],
    protocol_list: Sequence[Protocol],
    resolver_map: Mapping[str, object] | None = None,
    baseline_list: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """One row per (volume, protocol, method): ``psnr``, ``ssim``, ``consistency``, ``gain_psnr``
    (over cubic), ``seconds`` (restoration and scoring of the whole protocol)."""
    baseline_list = list(baseline_list or baselines())
    rows = []
    for vname, hr in volumes.items():
        for protocol in protocol_list:
            t0 = time.perf_counter()
            with warnings.catch_warnings():  # slices with gaps are this protocol's point, not news
                warnings.simplefilter("ignore", VolsrInputWarning)
                report = evaluate(hr, protocol, resolver_map or {}, baselines=baseline_list, consistency=True)
            seconds = time.perf_counter() - t0
            ref = report["methods"].get("cubic", {}).get("psnr")
            for method, s in report["methods"].items():
                rows.append(
                    {
                        "volume": vname,
                        "degradation": report["protocol_name"],
                        "protocol": protocol.to_dict(),
                        "shape_hr": report["shape_hr"],
                        "shape_lr": report["shape_lr"],
                        "method": method,
                        "psnr": s["psnr"],
                        "ssim": s["ssim"],
                        "consistency": s.get("consistency"),
                        "gain_psnr": None if ref is None else s["psnr"] - ref,
                        "seconds": seconds,
                    }
                )
            if log:
                best = max(report["methods"].items(), key=lambda kv: kv[1]["psnr"])
                log(
                    f"{vname:>14} | {report['protocol_name']:<28} best {best[0]} {best[1]['psnr']:.2f} dB "
                    f"({seconds:.1f} s)"
                )
    return rows


def methods_of(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


def markdown_table(rows: Sequence[Mapping]) -> str:
    """One row per (volume, degradation), one column per method: ``PSNR / SSIM``; best PSNR bold,
    then the mean PSNR gain over cubic per method."""
    methods = methods_of(rows)
    cells: dict[tuple[str, str], dict[str, Mapping]] = {}
    for r in rows:
        cells.setdefault((r["volume"], r["degradation"]), {})[r["method"]] = r
    lines = [
        "| volume | degradation | " + " | ".join(methods) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in methods) + " |",
    ]
    for (vname, deg), by_method in cells.items():
        best = max(v["psnr"] for v in by_method.values())
        out = []
        for m in methods:
            r = by_method.get(m)
            if r is None:
                out.append("")
                continue
            p = f"{r['psnr']:.2f}"
            out.append(f"**{p}** / {r['ssim']:.3f}" if r["psnr"] == best else f"{p} / {r['ssim']:.3f}")
        lines.append(f"| {vname} | {deg} | " + " | ".join(out) + " |")
    gains = []
    for m in methods:
        g = [r["gain_psnr"] for r in rows if r["method"] == m and r["gain_psnr"] is not None]
        gains.append(f"{sum(g) / len(g):+.2f} dB" if g else "")
    lines.append("| **mean gain over cubic** | | " + " | ".join(gains) + " |")
    return "\n".join(lines) + "\n"


def plot_gain(rows: Sequence[Mapping], path: Path) -> Path:
    """Bar chart of PSNR gain over cubic: one group per degradation, one bar per volume x method
    (methods other than the spline baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"nearest", "linear", "cubic"}
    rows = [r for r in rows if r["method"] not in skip and r["gain_psnr"] is not None]
    degradations = list(dict.fromkeys(r["degradation"] for r in rows))
    series = list(dict.fromkeys((r["volume"], r["method"]) for r in rows))
    gain = {(r["degradation"], r["volume"], r["method"]): r["gain_psnr"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(degradations) + 2), 4.2))
    width = 0.8 / max(1, len(series))
    cmap = plt.get_cmap("tab20")
    for i, (vname, method) in enumerate(series):
        xs = [d + (i - (len(series) - 1) / 2) * width for d in range(len(degradations))]
        ys = [gain.get((deg, vname, method), math.nan) for deg in degradations]
        ax.bar(xs, ys, width, label=f"{vname}: {method}", color=cmap(i % 20))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(degradations)))
    ax.set_xticklabels(
        [d.replace(" boxcar", "").replace(" axes 012", "") for d in degradations],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("PSNR gain over cubic B-spline (dB)")
    ax.set_title("volsr quality benchmark: masked PSNR gain over cubic", fontsize=10)
    if series:
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(result: Mapping, png: Path | None, json_path: Path, markdown: Path) -> str:
    hw = result["hardware"]
    lines = [
        "## Quality",
        "",
        f"`{result['command']}` on {result['date']}"
        + (" (quick: cropped, 2 protocols)." if result["quick"] else "."),
        f"Hardware: {common.hardware_line(hw)}. Total {result['seconds']:.0f} s.",
        "",
        "Masked PSNR (dB) / masked 3-D SSIM against the original (foreground of the reference, "
        "intensities on its 0.5-99.5 percentile scale; `volsr.evaluation.metrics`). Degradations by "
        "`volsr.evaluation.comparison.degrade`; best PSNR per row in bold. `+dc` is the same output after "
        "the exact data-consistency projection of the protocol's forward model: boxcar thick slices "
        "(with the `spacing x1.33333` gaps, the 3-voxel slabs the degraded scan states, "
        "`volsr.data.acquisition`), or the acquired band of k-space for the k-space rows.",
        f"Volumes: {', '.join(f'{k} {v}' for k, v in result['volumes'].items())}. Weights: "
        + (", ".join(f"{k} ({v})" for k, v in result["weights"].items()) or "none (baselines only)")
        + ".",
        "",
        markdown_table(result["rows"]),
    ]
    rel = json_path.relative_to(markdown.parent) if json_path.is_relative_to(markdown.parent) else json_path
    lines.append(f"Raw numbers: [{rel}]({rel}).")
    if png is not None:
        rel_png = png.relative_to(markdown.parent) if png.is_relative_to(markdown.parent) else png
        lines += ["", f"![PSNR gain over cubic]({rel_png})"]
    return "\n".join(lines) + "\n"


def weights_info(resolver_map: Mapping[str, object]) -> dict[str, str]:
    info = {}
    for name, sr in resolver_map.items():
        if name.endswith("+dc"):
            continue
        meta = getattr(sr, "info", {})
        info[name] = f"step {meta.get('step', '?')}"
    return info


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=common.DATA / "val", help="folder of high-resolution volumes"
    )
    parser.add_argument(
        "--bundles", nargs="+", default=["all"], help="bundle names in bundles/, 'all' or 'none'"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="also score this volsr checkpoint (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="one cropped volume and two protocols")
    parser.add_argument(
        "--out",
        type=Path,
        default=common.ROOT / "docs" / "benchmarks",
        help="folder for quality.json and psnr_gain.png; the section goes to <out>.md",
    )
    parser.add_argument("--device", default="cpu", help="where the networks run (cpu, cuda, auto)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    paths = volume_paths(args.data)[:1] if args.quick else volume_paths(args.data)
    volumes = {}
    for p in paths:
        v = common.load_volume(p)
        volumes[volume_name(p)] = common.crop(v, QUICK_CROP) if args.quick else v
    resolver_map = resolvers(find_bundles(args.bundles), args.checkpoint, args.device)
    if not resolver_map:
        print("no bundle with models/model.pt: scoring the baselines only")
    protocol_list = protocols(args.quick)
    rows = run(volumes, protocol_list, resolver_map)
    result = {
        "command": common.command_line(),
        "date": common.now(),
        "quick": args.quick,
        "hardware": common.hardware(),
        "volumes": {k: list(v.shape[1:]) for k, v in volumes.items()},
        "protocols": [p.name for p in protocol_list],
        "methods": methods_of(rows),
        "weights": weights_info(resolver_map),
        "rows": rows,
    }
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "quality.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    png = None if args.no_plot else plot_gain(rows, out / "psnr_gain.png")
    markdown = out.with_suffix(".md")
    common.write_section(markdown, "quality", section(result, png, json_path, markdown))
    print(markdown_table(rows))
    print(
        f"wrote {common.display_path(json_path)}, {common.display_path(markdown)}"
        + (f", {common.display_path(png)}" if png else "")
    )
    return result


if __name__ == "__main__":
    main()
