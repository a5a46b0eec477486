"""The script that writes a bundle README's measured tables: rows from the records, blocks replaced."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "record_bundle_results.py"
_spec = importlib.util.spec_from_file_location("record_bundle_results", _PATH)
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


def _record(step: int, psnr: float) -> dict:
    return {
        "step": step,
        "A/psnr": psnr,
        "A/cubic_psnr": 20.0,
        "A/psnr_gain": psnr - 20.0,
        "A/ssim": 0.8,
        "A/cubic_ssim": 0.7,
    }


def test_validation_log_keeps_every_nth_step_and_marks_the_shipped_one():
    records = [_record(s, 20.0 + s / 1000) for s in (500, 1000, 1500, 2000)]
    table = tables.validation_log_table(records, every=1000, shipped=1500).splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 1000", "| **1500**", "| 2000"]
    assert "| 21.50 (20.00) | +1.50 | 0.8000 (0.7000) |" in table[3]


def test_scores_table_gives_gains_against_cubic():
    summary = {
        "scans": {
            "s": {
                "methods": {
                    "cubic": {"psnr": 20.0, "ssim": 0.7, "sharpness": 0.6, "consistency": 0.04},
                    "net+dc": {"psnr": 21.25, "ssim": 0.8, "sharpness": 0.7, "consistency": 0.0},
                    "fourier": {"psnr": 19.5, "ssim": 0.6, "sharpness": 0.5, "consistency": None},
                }
            }
        }
    }
    rows = tables.scores_table(summary).splitlines()
    assert rows[3] == "| s | net+dc | 21.25 | +1.25 | 0.8000 | 0.700 | 0.0000 |"
    assert rows[4] == "| s | fourier | 19.50 | -0.50 | 0.6000 | 0.500 |  |"
    kept = tables.scores_table(summary, keep=lambda name: name != "fourier").splitlines()
    assert kept == rows[:4] and len(rows) == 5  # the other rows as they were


def test_eval_metrics_takes_the_bundle_rows_and_its_variants():
    summary = {
        "protocol": {"kind": "thickness", "axis": 2, "factor": 4.0, "profile": "boxcar"},
        "scans": {
            "s": {
                "methods": {
                    "cubic": {"psnr": 20.0, "ssim": 0.7, "sharpness": 0.6},
                    "net": {"psnr": 21.234, "ssim": 0.81234, "sharpness": 0.75},
                    "net+dc": {"psnr": 21.5, "ssim": 0.8, "sharpness": 0.7},
                    "net+adapt+tta+dc": {"psnr": 22.004, "ssim": 0.8, "sharpness": 0.7},
                    "other": {"psnr": 30.0, "ssim": 0.9, "sharpness": 0.9},
                }
            }
        },
    }
    m = tables.eval_metrics(summary, "net")
    assert "x4.0 boxcar thick slices along axis 2" in m["protocol"]
    assert m["s"] == {
        "psnr": 21.23,
        "ssim": 0.8123,
        "cubic_psnr": 20.0,
        "cubic_ssim": 0.7,
        "sharpness": 0.75,
        "psnr_with_consistency": 21.5,
        "psnr_with_adapt_tta_consistency": 22.0,
    }


def test_replace_block_touches_only_the_marked_lines():
    text = "intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n"
    assert tables.replace_block(text, "t", "new") == "intro\n<!-- t:begin -->\nnew\n<!-- t:end -->\noutro\n"
    with pytest.raises(SystemExit, match="no <!-- u"):
        tables.replace_block(text, "u", "new")
