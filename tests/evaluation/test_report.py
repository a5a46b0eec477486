"""The evaluation montage: three planes at the voxels' physical aspect, PSNR and SSIM, an error colour bar."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pytest
from conftest import make_image, smooth_volume
from PIL import Image

from volsr.evaluation.report import save_montage


@pytest.fixture
def drawn(monkeypatch):
    """The figures save_montage saves, kept open for inspection."""
    figures = []
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def test_montage_draws_three_planes_at_physical_aspect_with_scores_and_an_error_colour_bar(tmp_path, drawn):
    spacing = (0.9, 0.8, 3.0)  # thick slices along axis 2
    hr = make_image(smooth_volume((20, 18, 12)).astype(np.float32), np.diag([*spacing, 1.0]))
    images = {"lr": hr * 0.9, "cubic": hr * 0.95, "reference": hr}
    scores = {"lr": {"psnr": 17.1, "ssim": 0.61}, "cubic": {"psnr": 18.88, "ssim": 0.726}}
    path = save_montage(images, tmp_path / "m.png", 2, "test", scores, reference="reference")
    assert path.is_file() and path.stat().st_size > 0
    (fig,) = drawn
    with Image.open(path) as png:  # a 256-colour palette, the figure's size at 110 dpi
        assert png.mode == "P" and png.size == tuple(int(110 * v) for v in fig.get_size_inches())
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    image_panels = [ax for ax in panels if ax.images[0].get_cmap().name == "gray"]
    error_panels = [ax for ax in panels if ax.images[0].get_cmap().name == "magma"]
    assert len(image_panels) == 3 * 3 and len(error_panels) == 3 * 1  # 3 planes; cubic's error only
    # rot90 of a plane: rows step along its second axis, columns along its first
    aspects = sorted({round(float(ax.get_aspect()), 6) for ax in image_panels})
    expected = sorted({round(spacing[b] / spacing[a], 6) for a, b in ((1, 2), (0, 2), (0, 1))})
    assert aspects == expected  # 3.0 / 0.8, 3.0 / 0.9, 0.8 / 0.9: the slice axis is drawn 3.3-3.75x taller
    titles = [ax.get_title() for ax in image_panels if ax.get_title()]
    assert "cubic\nPSNR 18.88 dB\nSSIM 0.726" in titles and "lr\nPSNR 17.10 dB\nSSIM 0.610" in titles
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "error" in bars[0].get_ylabel()


def test_montage_adds_a_row_of_uncertainty_maps_with_a_colour_bar_of_its_own(tmp_path, drawn):
    hr = make_image(smooth_volume((20, 18, 12)).astype(np.float32), np.diag([0.9, 0.8, 3.0, 1.0]))
    images = {"lr": hr * 0.9, "sr": hr * 0.95, "reference": hr}
    save_montage(images, tmp_path / "m.png", 2, "test", reference="reference", uncertainty={"sr": hr * 0.05})
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    maps = [ax for ax in panels if ax.images[0].get_cmap().name == "viridis"]
    assert len(maps) == 3  # one per plane, for the one method with a map
    labels = {ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()}
    assert any(label.endswith("uncertainty") for label in labels)
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert sorted(bars) == ["uncertainty (image units)", "|error| (image units)"]
