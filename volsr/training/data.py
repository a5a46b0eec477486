"""Training pairs synthesised on the fly from high-resolution volumes.

Each sample: a random crop of a high-resolution volume (foreground-weighted) -> optionally a random
intensity remapping (new tissue contrasts: T1-like training data also teaches T2-like images) ->
the degradation pipeline (``{"hr": crop} -> {"hr", "lr"}``) -> the low-resolution crop re-gridded
back with the same cubic B-spline inference uses -> coarse axis moved last (as at inference) ->
centre patch (dropping a margin where crop edges would disturb the degradation) -> random flips and
an in-plane transpose. Degrading crops instead of whole volumes costs milliseconds per sample, so
every sample gets a fresh factor, axis, profile and noise draw.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from volsr.data.io import VOLUME_SUFFIXES
from volsr.data.normalization import PercentileNormalizer
from volsr.geometry.grid_encoding import SamplePositions
from volsr.geometry.grids import grid_factors, index_map
from volsr.geometry.interpolation import apply_along_axis
from volsr.geometry.meta import affine_of
from volsr.geometry.orientation import coarse_axis, to_canonical
from volsr.networks.input_grid import regrid_input
from volsr.transforms.slice_thickness import slice_profile_matrix

__all__ = ["list_volumes", "PatchPairSampler", "PatchBatches", "patch_batches", "random_contrast"]

#: normalised intensities at which :func:`random_contrast` draws new values (0 stays 0: background)
CONTRAST_KNOTS = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)


def _is_image(p: Path) -> bool:
    return p.is_file() and any(p.name.endswith(s) for s in VOLUME_SUFFIXES)


def list_volumes(source: str | Path | Sequence[str | Path], key: str = "training") -> list[dict]:
    """High-resolution training items as ``[{"hr": path}]`` (or ``{"hr", "lr"}`` for paired data).

    ``source`` is a folder (every image in it), a list of paths, or a MONAI datalist JSON whose
    ``key`` list holds ``{"image": path}`` / ``{"hr": path}`` items, optionally with ``"lr"`` for
    paired low-resolution scans. Relative paths in a datalist are relative to the JSON file.
    """
    if isinstance(source, (list, tuple)):
        return [{"hr": str(p)} for p in source]
    src = Path(source)
    if src.is_dir():
        items = [{"hr": str(p)} for p in sorted(src.iterdir()) if _is_image(p)]
    elif src.suffix == ".json":
        entries = json.loads(src.read_text())[key]
        items = []
        for e in entries:
            e = {"hr": e} if isinstance(e, str) else dict(e)
            hr = e.pop("hr", e.pop("image", None))
            if hr is None:
                raise ValueError(f"{src}: datalist item {e} has no 'hr' or 'image' entry")
            item = {"hr": str((src.parent / hr).resolve())}
            if "lr" in e:
                item["lr"] = str((src.parent / e["lr"]).resolve())
            items.append(item)
    elif _is_image(src):
        items = [{"hr": str(src)}]
    else:
        raise ValueError(f"{src}: not a folder, an image or a datalist JSON")
    if not items:
        raise ValueError(f"{src}: no training volumes found (looked for {', '.join(VOLUME_SUFFIXES)})")
    return items


def random_contrast(t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random piecewise-linear remapping of normalised intensities: 0 stays 0 (background), every
    other knot of :data:`CONTRAST_KNOTS` gets a value drawn from U(0.05, 1), intensities above 1 keep
    the last knot's value.

    Why: the training volumes are T1, FLAIR, T2*-fusion and CT; a T2-weighted scan (bright fluid) is
    a contrast none of them has. Remapping tissue intensities (as SynthSR does) teaches the network
    edges whatever their contrast; applied before the degradation, so the pair stays consistent.
    """
    values = np.concatenate([[0.0], rng.uniform(0.05, 1.0, len(CONTRAST_KNOTS) - 1)])
    data = t.as_tensor() if hasattr(t, "as_tensor") else t
    mapped = np.interp(data.numpy(), CONTRAST_KNOTS, values).astype(np.float32)
    out = torch.from_numpy(mapped)
    return MetaTensor(out, affine=t.affine) if isinstance(t, MetaTensor) else out


class PatchPairSampler:
    """Draws ``(input, target)`` patch pairs of shape ``(1, P, P, P)`` in canonical orientation.

    Args:
        volumes: normalised high-resolution MetaTensors ``(1, X, Y, Z)`` (their affines give spacing).
        degradation: callable mapping ``{"hr": crop}`` to a dict with ``"lr"`` (e.g. the Compose
            from :func:`volsr.transforms.build_degradation`), seeded by its owner.
        patch_size: edge of the cubic training patch in high-resolution voxels.
        margin: voxels cropped on each side after degradation.
        foreground: normalised intensity above which a voxel counts as foreground.
        foreground_prob: probability that a patch is centred on foreground.
        contrast_prob: probability that a crop's intensities are remapped by :func:`random_contrast`.
        zoom: range of a random coarsening of the high-resolution crop (box-averaged), drawn per
            axis, so a network trained on 0.5-1 mm scans also meets anatomy at 1-2 mm per voxel and
            anisotropic references (1 x 1 x 2 mm); ``(1, 1)`` disables it.
        seed: seed of the crop positions and flips.
        grid_encoding: append the channels of :mod:`volsr.geometry.grid_encoding` (where each voxel
            sits on the low-resolution grid, after the same crop, flips and swap) to the input.
        interpolation: how the low-resolution crop is re-gridded into the network's input
            (:func:`volsr.networks.input_grid.regrid_input`: the network's ``input_interpolation``).
    """

    def __init__(
        self,
        volumes: Sequence[torch.Tensor],
        degradation: Callable[[dict], dict],
        patch_size: int = 32,
        margin: int = 8,
        foreground: float = 0.1,
        foreground_prob: float = 0.9,
        zoom: tuple[float, float] = (1.0, 1.0),
        seed: int = 0,
        contrast_prob: float = 0.0,
        grid_encoding: bool = False,
        interpolation: str = "cubic",
    ) -> None:
        self.volumes = list(volumes)
        self.grid_encoding = grid_encoding
        self.interpolation = interpolation
        self.contrast_prob = float(contrast_prob)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.degradation = degradation
        self.patch = int(patch_size)
        self.margin = int(margin)
        self.foreground = foreground
        self.foreground_prob = foreground_prob
        self.rng = np.random.default_rng(seed)
        # volumes weighted by foreground size so large scans are not under-sampled
        sizes = np.array([float((v > foreground).sum()) + 1.0 for v in self.volumes])
        self.weights = sizes / sizes.sum()

    def _crop(self, vol: torch.Tensor) -> MetaTensor:
        edge = self.patch + 2 * self.margin
        # one draw per axis: anatomy also appears stretched, as in an anisotropic reference
        zooms = self.rng.uniform(*self.zoom, size=3)
        size = [min(round(edge * z), n) for z, n in zip(zooms, vol.shape[1:], strict=True)]
        want_fg = self.rng.random() < self.foreground_prob
        for _ in range(20):
            start = [int(self.rng.integers(0, n - s + 1)) for n, s in zip(vol.shape[1:], size, strict=True)]
            centre = tuple(st + s // 2 for st, s in zip(start, size, strict=True))
            if not want_fg or vol[(0, *centre)] > self.foreground:
                break
        sl = tuple(slice(st, st + s) for st, s in zip(start, size, strict=True))
        affine = affine_of(vol).copy()
        affine[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=float) + affine[:3, 3]
        data = vol.as_tensor() if hasattr(vol, "as_tensor") else vol
        crop = data[(slice(None), *sl)].clone()
        for ax, n in enumerate(size):  # coarsen by box averaging (anti-aliased), affine to match
            n_out = min(edge, n)
            if n_out != n:
                w = torch.as_tensor(slice_profile_matrix(n, n_out, n / n_out, "boxcar"), dtype=crop.dtype)
                crop = apply_along_axis(crop, w, 1 + ax)
                step, offset = index_map(n, n_out)
                affine[:3, 3] += affine[:3, ax] * offset
                affine[:3, ax] *= step
        return MetaTensor(crop, affine=torch.as_tensor(affine))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        vol = self.volumes[self.rng.choice(len(self.volumes), p=self.weights)]
        hr = self._crop(vol)
        if self.contrast_prob and self.rng.random() < self.contrast_prob:
            hr = random_contrast(hr, self.rng)
        out = self.degradation({"hr": hr})
        lr = out["lr"]
        scale = grid_factors(lr.shape[1:], hr.shape[1:])
        x = regrid_input(lr.as_tensor().float(), hr.shape[1:], self.interpolation)
        y = hr.as_tensor()
        axis = coarse_axis(scale)
        x, y = to_canonical(x, axis), to_canonical(y, axis)
        positions = SamplePositions.canonical(lr.shape[1:], hr.shape[1:], axis)
        centre = self._centre(x.shape[1:])
        x, y, positions = x[(slice(None), *centre)], y[(slice(None), *centre)], positions.cropped(centre)
        x, y, positions = self._augment(x, y, positions)
        if self.grid_encoding:
            x = torch.cat([x, positions.channels(x.dtype)])
        history = lr.meta.get("degradation", []) if hasattr(lr, "meta") else []
        return x.contiguous(), y.contiguous(), {"degradation": history, "scale": scale}

    def _centre(self, shape: Sequence[int]) -> tuple[slice, ...]:
        """The central ``patch``-sized slices of a crop of ``shape``."""
        starts = [max(0, (n - self.patch) // 2) for n in shape]
        return tuple(slice(st, st + self.patch) for st in starts)

    def _augment(
        self, x: torch.Tensor, y: torch.Tensor, positions: SamplePositions
    ) -> tuple[torch.Tensor, torch.Tensor, SamplePositions]:
        flips = [d for d in (1, 2, 3) if self.rng.random() < 0.5]
        if flips:
            x, y = x.flip(flips), y.flip(flips)
            positions = positions.flipped([d - 1 for d in flips])
        if self.rng.random() < 0.5:  # in-plane transpose; the coarse axis stays last
            x, y = x.transpose(1, 2), y.transpose(1, 2)
            positions = positions.permuted([1, 0, 2])
        return x, y, positions

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample() for _ in range(batch_size)]
        x = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
        return x, y

    def reseeded(self, seed: int) -> PatchPairSampler:
        """A sampler over the same volumes whose crops, flips and degradation draws follow ``seed``
        (the degradation is copied, so two reseeded samplers never share a random state)."""
        twin = copy.copy(self)
        twin.rng = np.random.default_rng(seed)
        twin.degradation = copy.deepcopy(self.degradation)
        if hasattr(twin.degradation, "set_random_state"):
            twin.degradation.set_random_state(seed=seed % 2**32)
        return twin


class PatchBatches(torch.utils.data.IterableDataset):
    """Endless ``(input, target)`` batches of ``sampler``, for a ``DataLoader`` with worker processes.

    Worker ``i`` of ``n`` draws from ``sampler.reseeded(seed_i)``, ``seed_i`` derived from ``seed`` and
    ``i`` (:class:`numpy.random.SeedSequence`), so workers never repeat each other's patches and a
    run is reproducible from its seed and worker count; the loader hands batches out in worker order.
    Without workers, the sampler itself is drawn from, as it was seeded. ``rank`` (the process's rank
    in distributed training) enters every seed but rank 0's, so the processes draw different patches
    and rank 0 draws what a single process would.
    """

    def __init__(self, sampler: PatchPairSampler, batch_size: int, seed: int, rank: int = 0) -> None:
        super().__init__()
        self.sampler, self.batch_size, self.seed, self.rank = sampler, int(batch_size), int(seed), int(rank)

    def worker_seed(self, worker: int) -> int:
        key = [self.seed, worker] if self.rank == 0 else [self.seed, worker, self.rank]
        return int(np.random.SeedSequence(key).generate_state(1)[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            sampler = self.sampler.reseeded(self.worker_seed(info.id))
            torch.set_num_threads(1)  # workers share the machine with the training step
        else:
            sampler = self.sampler if self.rank == 0 else self.sampler.reseeded(self.worker_seed(0))
        while True:
            yield sampler.batch(self.batch_size)


def patch_batches(
    sampler: PatchPairSampler,
    batch_size: int,
    seed: int,
    workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``sampler`` drawn in ``workers`` DataLoader processes (0: in this process), seeded
    from ``seed`` and the distributed ``rank`` (:class:`PatchBatches`).

    Why workers: a training step on a GPU takes milliseconds, drawing and degrading a batch of
    crops on one CPU core takes longer, so with the sampler in the training process the GPU waits.
    """
    dataset = PatchBatches(sampler, batch_size, seed, rank)
    if workers <= 0:
        return iter(dataset)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory, prefetch_factor=4,
        persistent_workers=True,
    )  # fmt: skip
    return iter(loader)


def load_normalized(
    paths: Sequence[str], normalizer: PercentileNormalizer, loader: Callable[[str], torch.Tensor]
) -> list[torch.Tensor]:
    """Load and normalise each high-resolution volume once (they stay in memory)."""
    out = []
    for p in paths:
        img = loader(p)
        lo, hi = normalizer.fit(img)
        out.append(MetaTensor(normalizer.normalize(img.as_tensor().float(), lo, hi), affine=img.affine))
    return out
