"""The Markdown of the speed benchmark: the targets, then per device the cases, then memory.

Rendering only: every number comes from the result dict of :mod:`speed` (also written as JSON).
"""

from __future__ import annotations

import importlib

from volsr.inference.sliding_window import MEMORY_TARGET

common = importlib.import_module(f"{__package__}.common" if __package__ else "common")

#: the benchmark issue's targets
MAX_OVERHEAD = 1.5  # (c)/(b)
MIN_FRACTION_CPU = 0.60  # (b) against (a), CPU
MAX_RSS_BYTES = 4e9  # 512x512x480 output
MAX_AMP_CHANGE_DB = 0.05


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(result: dict) -> list[str]:
    """One row per target of the benchmark issue, measured value and verdict."""
    rows = ["| target | measured | |", "| --- | --- | --- |"]
    for dev, r in result["devices"].items():
        ratio = r["ratio_c_over_b"]
        rows.append(f"| {dev}: (c)/(b) <= {MAX_OVERHEAD} | {ratio:.2f} | {_verdict(ratio <= MAX_OVERHEAD)} |")
        if dev == "cpu":
            frac = r["cases"]["b_whole_forward"]["fraction_of_peak"]
            width = r["peak"].get("network_width")
            ceiling = (
                f" (a {width['channels']}-channel conv alone: "
                f"{100 * width['gflops'] / r['peak']['reference_gflops']:.0f} %)"
                if width
                else ""
            )
            rows.append(
                f"| cpu: network >= {100 * MIN_FRACTION_CPU:.0f} % of the conv3d peak | {100 * frac:.0f} %"
                f"{ceiling} | {_verdict(frac >= MIN_FRACTION_CPU)} |"
            )
        if "ratio_e_over_c" in r:
            e_c, prec = r["ratio_e_over_c"], r["precision"]
            rows.append(
                f"| {dev}: the measured precision ({prec['c']}) is the faster: (e)/(c) >= 1 | {e_c:.2f} "
                f"| {_verdict(e_c >= 1.0)} |"
            )
        acc = r.get("amp_accuracy")
        if acc:
            change = abs(acc["change_db"])
            rows.append(
                f"| {dev}: autocast ({acc['autocast']}) changes PSNR by < {MAX_AMP_CHANGE_DB} dB "
                f"| {change:.4f} dB | {_verdict(change < MAX_AMP_CHANGE_DB)} |"
            )
    mem = result.get("memory")
    case = (mem or {}).get("cases", {}).get("c_super_resolve", {})
    if "peak_rss_gib" in case:
        gib = case["peak_rss_gib"]
        shape = "x".join(map(str, mem["output_shape"]))
        rows.append(
            f"| cpu: {shape} output under 4 GB peak RSS | {gib:.2f} GiB ({gib * 2**30 / 1e9:.2f} GB) "
            f"| {_verdict(gib * 2**30 < MAX_RSS_BYTES)} |"
        )
    return rows


def section(result: dict) -> str:
    hw = result["hardware"]
    lines = [
        "## Speed and memory",
        "",
        f"`{result['command']}` on {result['date']}{' (quick)' if result['quick'] else ''}.",
        f"Hardware: {common.hardware_line(hw)}. Network: {result['weights']}. Windows: fitted to the volume "
        "(`volsr.inference.sliding_window.plan_windows`: budget 160^3 voxels, less on a CPU where a large "
        f"volume would take the peak past {MEMORY_TARGET / 2**30:g} GiB (`window_budget`); overlap >= 24 "
        "voxels).",
        "",
        *targets(result),
        "",
    ]
    for dev, r in result["devices"].items():
        peak = r["peak"]
        pb = peak["best"]
        ref = peak["reference_gflops"]
        per_dtype = ", ".join(f"{k} {v['gflops']:.0f}" for k, v in peak["best_by_dtype"].items())
        lines += [
            f"### {dev}" + (f": {hw.get('gpu')}" if dev == "cuda" else ""),
            "",
            f"(a) conv3d peak (32->32, 3x3x3, {'x'.join(map(str, peak['shape']))}): **{ref:.0f} GFLOP/s** "
            f"({pb['dtype']}, channels-last {pb['channels_last']}; best of the sweep and of the same "
            f"convolution timed between the cases: {pb['gflops']:.0f} / {peak['interleaved_gflops']:.0f}); "
            f'sweep\'s best per dtype: {per_dtype} GFLOP/s. "of peak" below is against {ref:.0f}. '
            f"The same convolution at the network's width ({peak['network_width']['channels']}->"
            f"{peak['network_width']['channels']}) runs at {peak['network_width']['gflops']:.0f} GFLOP/s "
            f"({100 * peak['network_width']['gflops'] / ref:.0f} % of peak): the network cannot beat that.",
            "",
            f"Input: {r['input']} {r['input_shape']} -> output {r['output_shape_canonical']} "
            f"(coarse axis last, scale {r['scale']}), {r['output_voxels'] / 1e6:.2f} M voxels, "
            f"{r['flops_per_voxel'] / 1e3:.0f} kFLOP/voxel.",
            "",
            "| case | best s | median s | output Mvoxel/s | GFLOP/s | of peak |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        names = {
            "b_whole_forward": "(b) network, one pass over the whole volume",
            "c_super_resolve": "(c) `super_resolve`, defaults, end to end",
            "d_monai_default": "(d) MONAI `sliding_window_inference` defaults",
            "e_other_precision": f"(e) (c) in {r.get('precision', {}).get('e')}, the precision not chosen",
        }
        for k, c in r["cases"].items():
            lines.append(
                f"| {names[k]} | {c['best_s']:.2f} | {c['median_s']:.2f} | {c['voxels_per_s'] / 1e6:.3f} "
                f"| {c['gflops']:.1f} | {100 * c['fraction_of_peak']:.0f} % |"
            )
        w = r["windows"]
        lines += [
            "",
            f"(c)/(b) = **{r['ratio_c_over_b']:.2f}** (median {r['ratio_c_over_b_median']:.2f}); "
            f"(d)/(c) = **{r['ratio_d_over_c']:.2f}** (median {r['ratio_d_over_c_median']:.2f}). "
            f"Windows: (c) {w['c']['count']} of {w['c']['roi']} at overlap {w['c']['overlap']} "
            f"({w['c']['recomputed']:.2f}x the voxels); (d) {w['d']['count']} of {w['d']['roi']} at "
            f"overlap {w['d']['overlap']} ({w['d']['recomputed']:.2f}x). A fixed 160^3 roi at overlap 0.15 "
            f"would do {w['fixed_160']['count']} windows, {w['fixed_160']['recomputed']:.2f}x.",
            "",
        ]
        if "ratio_e_over_c" in r:
            lines += [
                f"(e)/(c) = **{r['ratio_e_over_c']:.2f}**: CPU autocast chose {r['precision']['c']} here "
                "(`volsr.inference.devices.cpu_prefers_bf16`: measured once, or `VOLSR_CPU_BF16=0/1`).",
                "",
            ]
        acc = r.get("amp_accuracy")
        if acc:
            lines += [
                f"Autocast accuracy: `super_resolve` on {acc['volume']} (x4 boxcar slices along axis 2), "
                f"masked PSNR {acc['psnr_float32']:.4f} dB in float32 and {acc['psnr_autocast']:.4f} dB with "
                f"{acc['autocast']} autocast: {acc['change_db']:+.4f} dB.",
                "",
            ]
    mem = result.get("memory")
    if mem:
        lines += [
            f"Peak resident memory (VmHWM of a subprocess per case; synthetic {mem['shape']} float32 scan, "
            f"x{mem['scale']} -> {mem['output_shape']}, CPU):",
            "",
            "| case | peak RSS (GiB) | RSS before (GiB) | seconds |",
            "| --- | ---: | ---: | ---: |",
        ]
        for k, m in mem["cases"].items():
            if "error" in m:
                lines.append(f"| {k} | {m['error']} | | |")
            else:
                lines.append(
                    f"| {k} | {m['peak_rss_gib']:.2f} | {m['rss_before_gib']:.2f} | {m['seconds']:.0f} |"
                )
        if mem.get("note"):
            lines += ["", mem["note"]]
        lines.append("")
    if result.get("note"):
        lines += [result["note"], ""]
    lines.append(f"Raw numbers: [{result['json']}]({result['json']}).")
    return "\n".join(lines) + "\n"
