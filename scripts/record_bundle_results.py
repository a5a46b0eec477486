"""Write a bundle's measured numbers from the files that hold the measurements.

With ``--evaluation``, ``eval_metrics`` of ``configs/metadata.json`` is rewritten from a ``volsr
evaluate`` summary (the bundle's own rows). Two marked blocks of ``docs/README.md`` are replaced,
nothing else (the prose around them is written by hand):

- ``<!-- validation-log:begin -->`` ... ``end``: the validation record of training, from
  ``models/validation.jsonl`` (every ``--every`` steps, plus the shipped step);
- ``<!-- scores:begin -->`` ... ``end``: the per-method scores of a ``volsr evaluate`` run, from
  its ``summary.json``;
- with ``--adaptation`` (a ``volsr evaluate --adapt N`` summary), ``<!-- adaptation-scores:begin -->``
  ... ``end``: its cubic and ``+adapt`` rows for this bundle, whose PSNRs also join ``eval_metrics``.

Usage:
    python scripts/record_bundle_results.py bundles/volsr_cnn3d \
        --evaluation docs/evaluation/thick_x4_axis2/summary.json --every 1000
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path


def validation_log_table(records: list[dict], every: int, shipped: int | None) -> str:
    names = sorted({k.split("/")[0] for r in records for k in r if k.endswith("/psnr")})
    head = "| step | " + " | ".join(f"{n} PSNR (cubic) | gain | SSIM (cubic)" for n in names) + " |"
    rule = "| ---: |" + " ---: | ---: | ---: |" * len(names)
    rows = [head, rule]
    for r in records:
        if r["step"] % every and r["step"] != shipped:
            continue
        cells = []
        for n in names:
            cells += [
                f"{r[n + '/psnr']:.2f} ({r[n + '/cubic_psnr']:.2f})",
                f"{r[n + '/psnr_gain']:+.2f}",
                f"{r[n + '/ssim']:.4f} ({r[n + '/cubic_ssim']:.4f})",
            ]
        step = f"**{r['step']}**" if r["step"] == shipped else str(r["step"])
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def scores_table(summary: dict, keep: Callable[[str], bool] = lambda name: True) -> str:
    rows = [
        "| scan | method | masked PSNR (dB) | gain vs cubic (dB) | masked SSIM | sharpness (SR/ref) "
        "| consistency error |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scan, entry in summary["scans"].items():
        methods = entry["methods"]
        cubic = methods["cubic"]["psnr"]
        for name, m in methods.items():
            if not keep(name):
                continue
            consistency = "" if m.get("consistency") is None else f"{m['consistency']:.4f}"
            rows.append(
                f"| {scan} | {name} | {m['psnr']:.2f} | {m['psnr'] - cubic:+.2f} | {m['ssim']:.4f} "
                f"| {m['sharpness']:.3f} | {consistency} |"
            )
    return "\n".join(rows)


#: method-name suffix -> eval_metrics key
VARIANT_KEYS = (
    ("+dc", "psnr_with_consistency"),
    ("+tta", "psnr_with_tta"),
    ("+adapt", "psnr_with_adapt"),
    ("+adapt+tta+dc", "psnr_with_adapt_tta_consistency"),
)


def eval_metrics(summary: dict, bundle: str) -> dict:
    """``{protocol, <scan>: {psnr, ssim, cubic_psnr, cubic_ssim, sharpness, ...}}`` for ``bundle``."""
    from volsr.transforms.protocol import ThickSlices, protocol_from_dict

    p = protocol_from_dict(summary["protocol"])
    if isinstance(p, ThickSlices):
        size = f"x{p.factor}" if p.factor is not None else f"{p.thickness} mm"
        what = f"{size} {p.profile} thick slices along axis {p.axis}"
    else:
        what = f"k-space truncation {p.to_dict()}"
    out: dict = {"protocol": f"shared/data/val, {what}; masked PSNR (dB) / SSIM; volsr evaluate"}
    for scan, entry in summary["scans"].items():
        m, cubic = entry["methods"], entry["methods"]["cubic"]
        row = {
            "psnr": round(m[bundle]["psnr"], 2),
            "ssim": round(m[bundle]["ssim"], 4),
            "cubic_psnr": round(cubic["psnr"], 2),
            "cubic_ssim": round(cubic["ssim"], 4),
            "sharpness": round(m[bundle]["sharpness"], 3),
        }
        for suffix, key in VARIANT_KEYS:
            if bundle + suffix in m:
                row[key] = round(m[bundle + suffix]["psnr"], 2)
        out[scan] = row
    return out


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- {name}:begin/end --> block in the README")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--evaluation", type=Path, help="summary.json of a volsr evaluate run")
    parser.add_argument("--adaptation", type=Path, help="summary.json of a volsr evaluate --adapt N run")
    parser.add_argument("--every", type=int, default=1000, help="steps between validation rows")
    args = parser.parse_args()

    readme = args.bundle / "docs" / "README.md"
    text = readme.read_text()
    log = args.bundle / "models" / "validation.jsonl"
    if log.exists() and "<!-- validation-log:begin -->" in text:  # the GAN README has none
        from volsr.networks.checkpoint import read_checkpoint

        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        shipped = read_checkpoint(args.bundle / "models" / "model.pt")  # its step: models/model_meta.json
        table = validation_log_table(records, args.every, shipped.get("step"))
        text = replace_block(text, "validation-log", table)
    if args.evaluation:
        summary = json.loads(args.evaluation.read_text())
        text = replace_block(text, "scores", scores_table(summary))
        meta_path = args.bundle / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        name = args.bundle.resolve().name
        meta["eval_metrics"] = eval_metrics(summary, name)
        if args.adaptation:
            adapted = json.loads(args.adaptation.read_text())
            keep = lambda m: m == "cubic" or m.startswith(name + "+adapt")  # noqa: E731
            text = replace_block(text, "adaptation-scores", scores_table(adapted, keep))
            for scan, row in eval_metrics(adapted, name).items():
                if scan in meta["eval_metrics"] and isinstance(row, dict):
                    meta["eval_metrics"][scan].update({k: v for k, v in row.items() if "adapt" in k})
        meta_path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")
        print(f"updated {meta_path}")
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
