"""Make ``docs/figures/degradation.png``: a head MR volume, two degradations, and their k-space.

Columns: the high-resolution volume, x4 thick slices along axis 2 (boxcar; re-gridded back with
nearest-neighbour interpolation for display), and k-space truncation to 35 % of the lines in-plane
(axes 0 and 1, zero-filled on the original grid). Rows: a coronal slice (it cuts across axis 2), the
log k-space magnitude of the 3-D volume on the central (k_x, k_z) plane, an axial slice, and the
central (k_x, k_y) plane. K-space axes are in cycles/mm, computed on each volume's own grid.

Usage (from the repository root; takes a few seconds)::

    python scripts/make_degradation_figure.py [--input PATH] [--output PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.data import MetaTensor  # noqa: E402

from volsr.geometry.grids import grid_factors, voxel_spacing  # noqa: E402
from volsr.geometry.interpolation import resample  # noqa: E402
from volsr.geometry.meta import affine_of  # noqa: E402
from volsr.transforms import KSpaceTruncation, SliceThickness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO / "../shared/data/val/T1_head_ext2.nii.gz"
DEFAULT_OUTPUT = REPO / "docs/figures/degradation.png"


def load(path: Path) -> MetaTensor:
    """The volume as a channel-first float32 MetaTensor scaled to its 99.5th percentile."""
    nii = nib.load(str(path))
    data = np.asarray(nii.dataobj, dtype=np.float32)
    data /= np.percentile(data, 99.5)
    return MetaTensor(torch.as_tensor(data)[None], affine=torch.as_tensor(nii.affine, dtype=torch.float64))


def log_kspace(img: torch.Tensor, plane_axes: tuple[int, int]) -> tuple[np.ndarray, list[float]]:
    """``log10 |F|`` of the 3-D volume on the central plane spanned by ``plane_axes``, and its extent."""
    vol = img[0].numpy().astype(np.float64)
    spec = np.fft.fftshift(np.abs(np.fft.fftn(vol)))
    other = ({0, 1, 2} - set(plane_axes)).pop()
    plane = np.take(spec, vol.shape[other] // 2, axis=other)  # DC row of the remaining axis
    spacing = voxel_spacing(affine_of(img))
    extent: list[float] = []
    for ax in plane_axes:
        n, d = vol.shape[ax], spacing[ax]
        freqs = np.fft.fftshift(np.fft.fftfreq(n, d))
        extent += [freqs[0] - 0.5 / (n * d), freqs[-1] + 0.5 / (n * d)]
    return np.log10(plane + 1e-3), extent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    hr = load(args.input)
    d = voxel_spacing(affine_of(hr))
    thick = SliceThickness(axis=2, thickness=4 * d[2], profile="boxcar")(hr)
    thick_display = resample(thick, scale=grid_factors(thick.shape[1:], hr.shape[1:]), mode="nearest")
    kspace = KSpaceTruncation(0.35, axes=(0, 1))(hr)
    columns = [
        (f"HR, {d[0]:.1f} mm isotropic", hr, hr),
        (f"thick slices x4 along S\n(boxcar, {4 * d[2]:.1f} mm)", thick_display, thick),
        ("k-space 35 % of lines\nin-plane (R, A), zero-filled", kspace, kspace),
    ]
    j, k = hr.shape[2] // 2 + 10, hr.shape[3] // 2 + 5
    views = [
        ("coronal", lambda v: v[0, :, j, :].numpy(), (0, 2), ("R (mm)", "S (mm)")),
        ("axial", lambda v: v[0, :, :, k].numpy(), (0, 1), ("R (mm)", "A (mm)")),
    ]
    fig, axes = plt.subplots(4, 3, figsize=(10.5, 14.5), constrained_layout=True)
    for col, (title, shown, own_grid) in enumerate(columns):
        for row, (view, cut, plane, _) in enumerate(views):
            ax = axes[2 * row, col]
            ax.imshow(
                cut(shown).T, cmap="gray", origin="lower", vmin=0, vmax=1, aspect=d[plane[1]] / d[plane[0]]
            )
            ax.set_title(f"{title}\n{view} slice" if row == 0 else f"{view} slice", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            spec, extent = log_kspace(own_grid, plane)
            kax = axes[2 * row + 1, col]
            kax.set_facecolor("black")
            kax.imshow(spec.T, cmap="magma", origin="lower", extent=extent, vmin=-1, vmax=4.5, aspect="auto")
            half = [0.5 / d[a] for a in plane]
            kax.set_xlim(-half[0], half[0])
            kax.set_ylim(-half[1], half[1])
            names = {0: "k_R", 1: "k_A", 2: "k_S"}
            kax.set_xlabel(f"{names[plane[0]]} (cycles/mm)", fontsize=8)
            kax.set_ylabel(f"{names[plane[1]]} (cycles/mm)", fontsize=8)
            kax.tick_params(labelsize=7)
            kax.set_title(
                f"log10 |k-space|, central ({names[plane[0]]}, {names[plane[1]]}) plane", fontsize=9
            )
    fig.suptitle(f"Degradation models on {args.input.name}", fontsize=12)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
