"""The progress bar counts what MONAI's inferer runs: the windows of one scan, named in its label."""

from __future__ import annotations

import re

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from volsr.inference.sliding_window import super_resolve
from volsr.inference.window_progress import WindowProgress, window_count, window_label


class _Counting:
    """An identity predictor that counts the windows it is handed."""

    def __init__(self) -> None:
        self.windows = 0

    def __call__(self, x: torch.Tensor, *args) -> torch.Tensor:
        self.windows += x.shape[0]
        return x


@pytest.mark.parametrize(
    "shape, roi, overlap",
    [
        ((20, 17, 9), (8, 8, 8), 0.15),
        ((20, 17, 9), (20, 6, 9), (0.0, 0.5, 0.0)),  # a window spanning an axis: one step there
        ((5, 30, 12), (8, 10, 4), 0.25),  # an axis shorter than the window: padded
        ((16, 16, 16), (16, 16, 16), 0.15),
        ((31, 7, 13), (4, 4, 4), 0.9),  # a step below one voxel: 1
    ],
)
def test_window_count_is_what_monai_runs(shape, roi, overlap):
    counting = _Counting()
    sliding_window_inference(torch.zeros(1, 1, *shape), roi, 3, counting, overlap=overlap)
    assert window_count(shape, roi, overlap) == counting.windows


def test_the_bar_is_labelled_with_the_scan_and_ends_at_its_window_count(capsys):
    image = MetaTensor(torch.rand(1, 12, 10, 4), affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    image.meta["filename_or_obj"] = "/data/sub-01/thick.nii.gz"
    assert window_label(image) == "windows of thick.nii.gz"
    network = torch.nn.Conv3d(1, 1, 3, padding=1)
    calls = []
    network.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    super_resolve(image, network, roi=(8, 8, 8), device="cpu", precision=torch.float32, progress=True)
    err = capsys.readouterr().err
    done = re.findall(r"windows of thick\.nii\.gz: 100%\|[^|]*\| (\d+)/(\d+) ", err)
    assert done and done[-1] == (str(sum(calls)), str(sum(calls))), err
    assert sum(calls) > 1


def test_no_bar_without_progress(capsys):
    counted = WindowProgress(_Counting(), 2, "windows of x", enabled=False)
    counted(torch.zeros(2, 1, 4, 4, 4))
    assert capsys.readouterr().err == ""
