"""evaluate() scores a resolver's uncertainty map by how well it ranks the resolver's actual error."""

import math

import numpy as np
import torch
from conftest import make_image, smooth_volume

from volsr.evaluation.comparison import evaluate, restore_baseline
from volsr.evaluation.report import write_report
from volsr.transforms.protocol import ThickSlices


def test_a_map_that_is_the_actual_error_scores_one_and_is_drawn(tmp_path):
    hr = make_image((1000 * smooth_volume((20, 18, 24))).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))

    def oracle(lr, scale):  # cubic B-spline, with its own |error| as the map
        out = restore_baseline(lr, hr.shape[1:], "cubic")
        return out, (out - hr).abs() + 0.0

    def plain(lr, scale):
        return restore_baseline(lr, hr.shape[1:], "linear")

    report = evaluate(hr, ThickSlices(axis=2, factor=4.0), {"oracle": oracle, "plain": plain})
    assert math.isclose(report["methods"]["oracle"]["uncertainty_spearman"], 1.0, abs_tol=1e-6)
    assert "uncertainty_spearman" not in report["methods"]["plain"]
    torch.testing.assert_close(report["methods"]["oracle"]["psnr"], report["methods"]["cubic"]["psnr"])
    files = write_report(report, tmp_path, "scan")
    # a map that is the |error| itself holds every error within 1.96 x map
    assert "oracle: Spearman 1.000, coverage 100.0%" in files["markdown"].read_text()
    assert files["reliability oracle"].read_bytes()[:4] == b"\x89PNG"
    assert "uncertainty" not in files["json"].read_text().split('"methods"')[0]  # no tensors in the JSON
