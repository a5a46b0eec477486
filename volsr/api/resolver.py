"""``SuperResolver``: a bundle's trained network, ready for whole scans and files; bundles found by name.

Example:
    >>> from volsr import SuperResolver
    >>> sr = SuperResolver.from_bundle("volsr_cnn3d")
    >>> out = sr("scan.nii.gz", spacing=1.0)      # MetaTensor on a 1 mm grid, affine exact
    >>> sr.predict_file("scan.nii.gz")            # writes ./scan_sr.nii.gz, never over the input
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from volsr.data.acquisition import slice_acquisition
from volsr.data.normalization import PercentileNormalizer
from volsr.errors import VolsrInputError, VolsrInputWarning
from volsr.inference.devices import decide_precision, precision_name, resolve_device
from volsr.inference.sliding_window import super_resolve
from volsr.networks.checkpoint import load_checkpoint

__all__ = [
    "SuperResolver",
    "ResolverOptions",
    "find_bundle",
    "find_bundle_root",
    "DEFAULT_BUNDLE",
    "output_path_for",
    "dicom_folder_for",
    "series_outputs",
]

DEFAULT_BUNDLE = "volsr_cnn3d"


def bundle_search_path() -> list[Path]:
    """Where bundle names are looked up, in order: ./bundles, the source tree, the install prefix."""
    return [
        Path.cwd() / "bundles",
        Path(__file__).resolve().parents[2] / "bundles",  # the source tree: volsr/api/resolver.py -> ./
        Path(sys.prefix) / "share" / "volsr" / "bundles",
    ]


def find_bundle_root(bundle: str | Path, need: str = "configs/metadata.json") -> Path:
    """A bundle folder from a path or a name in ``bundles/``, holding the file ``need``."""
    candidates = [Path(bundle)] + [d / str(bundle) for d in bundle_search_path()]
    for c in candidates:
        if (c / need).is_file():
            return c.resolve()
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{bundle}: no bundle with {need} found (looked in {searched})")


def find_bundle(bundle: str | Path) -> Path:
    """A bundle folder with trained weights (``models/model.pt``)."""
    return find_bundle_root(bundle, "models/model.pt")


def output_path_for(
    src: str | Path, out_dir: str | Path | None = None, suffix: str = "_sr", dicom: bool = False
) -> Path:
    """``<stem>_sr.nii.gz`` in ``out_dir`` (default: the current folder); with ``dicom`` the series
    folder ``<stem>_sr``."""
    from volsr.data.io import scan_stem

    name = f"{scan_stem(src)}{suffix}"
    return Path(out_dir or Path.cwd()) / (name if dicom else f"{name}.nii.gz")


def dicom_folder_for(path: str | Path) -> Path:
    """The DICOM series folder for a NIfTI output name: ``out/scan_sr.nii.gz`` -> ``out/scan_sr``."""
    from volsr.data.io import scan_stem

    p = Path(path)
    return p.with_name(scan_stem(p))


def _derivation(provenance: dict) -> str:
    """One line for DerivationDescription: what made the series, from :meth:`SuperResolver.provenance`."""
    made = provenance["GeneratedBy"]
    options = [name for name in ("tta", "consistency") if made["Options"][name]]
    if made["Options"]["adapt"]:
        options.append(f"adapt {made['Options']['adapt']}")
    bundle = Path(str(made["Bundle"])).name if made["Bundle"] else "a checkpoint"
    return (
        f"super-resolved by volsr {made['Version']} with {bundle} {made['BundleVersion'] or ''}".rstrip()
        + (f" ({', '.join(options)})" if options else "")
    )


def series_outputs(folder: str | Path, out_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """``(SeriesInstanceUID, output path)`` for every DICOM series in ``folder``, by SeriesNumber:
    ``<folder>_<number>_<description>_sr.nii.gz`` in ``out_dir`` (default: the current folder),
    the description reduced to letters, digits, ``-`` and ``_`` so the name is safe and readable."""
    from volsr.data.dicom import list_series

    found = list_series(folder)
    if not found:
        raise VolsrInputError(folder, "holds no DICOM series (--series all reads a DICOM folder)")
    jobs = []
    for index, info in enumerate(found, start=1):
        number = info["number"] if info["number"] is not None else index
        label = re.sub(r"[^A-Za-z0-9_-]+", "_", info["description"]).strip("_")[:40]
        suffix = f"_{number}" + (f"_{label}" if label else "")
        jobs.append((info["uid"], output_path_for(folder, out_dir, suffix=f"{suffix}_sr")))
    if len({dst for _, dst in jobs}) < len(jobs):  # repeated SeriesNumber and description: use the index
        jobs = [(uid, output_path_for(folder, out_dir, f"_s{i}_sr")) for i, (uid, _) in enumerate(jobs, 1)]
    return jobs


def warn_if_not_contiguous(image: torch.Tensor) -> None:
    """A :class:`~volsr.errors.VolsrInputWarning` when the header states slices with gaps or overlaps:
    the networks were trained on contiguous slices (``--consistency`` and ``--adapt`` do model them)."""
    acquisition = slice_acquisition(image)
    if acquisition is None or acquisition.contiguous:
        return
    source = getattr(image, "meta", {}).get("filename_or_obj", "the scan")
    warnings.warn(
        f"{source}: {acquisition.describe()}; the network was trained on contiguous slices, so expect "
        "less gain (--consistency and --adapt model the stated thickness)",
        VolsrInputWarning,
        stacklevel=3,
    )


@dataclass(frozen=True)
class ResolverOptions:
    """How a :class:`SuperResolver` runs its network over a scan.

    Args:
        roi: sliding-window size in output voxels (coarse axis last); default: fitted to each volume
            (:func:`volsr.inference.sliding_window.plan_windows`).
        overlap: window overlap fraction with an explicit ``roi``.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        amp: bfloat16 autocast where it is native and fast (:func:`volsr.inference.devices.decide_precision`).
        progress: progress bar over windows.
        consistency: make every output reproduce its input exactly under the boxcar thick-slice
            model (:func:`volsr.inference.consistency.project_consistent`); ``"kspace"``: under a
            smaller acquisition matrix instead, keeping the acquired band of k-space
            (:func:`volsr.inference.consistency.project_kspace_consistent`); ``"auto"``: the one the
            scan's header points to (:func:`volsr.data.acquisition.consistency_model`).
        tta: average the network over 16 flips and in-plane swaps of each window.
        uncertainty: also make the uncertainty map (:func:`volsr.inference.sliding_window.uncertainty_map`):
            the spread of those 16 views, whose mean is then the output (so it implies ``tta``); the
            resolver then returns ``(output, map)``, and :meth:`SuperResolver.predict_file` writes the
            map beside the output.
        adapt: before restoring each scan, fine-tune a copy of the network for this many steps on
            the scan's own in-plane detail (:func:`volsr.training.adaptation.adapt`; 0: off). The
            loaded network is not changed.
        max_memory: bytes (or a size such as ``"8G"``) a scan's run may take at its peak
            (:mod:`volsr.inference.memory`); a scan whose output grid needs more is refused before
            anything is allocated. Default: the memory available when the scan starts.

    Raises:
        ValueError: a ``roi`` that is not 3 positive sizes, an ``overlap`` outside [0, 1), a
            negative ``adapt``, a ``max_memory`` below 1 byte.
    """

    roi: tuple[int, ...] | None = None
    overlap: float | None = None
    device: str | torch.device = "auto"
    amp: bool = True
    progress: bool = False
    consistency: bool | str = False
    tta: bool = False
    uncertainty: bool = False
    adapt: int = 0
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        # frozen: normalising the given values once, here
        object.__setattr__(self, "roi", _window_size(self.roi))
        object.__setattr__(self, "overlap", _overlap_fraction(self.overlap))
        object.__setattr__(self, "adapt", _count(self.adapt, "adapt (--adapt)"))
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", _memory_size(self.max_memory))


def _finite(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _count(value, name: str, least: int = 0) -> int:
    number = _finite(value, name)
    if number != int(number) or number < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    return int(number)


def _memory_size(size: int | str) -> int:
    """Bytes from a number of bytes or a size such as ``"8G"`` (:func:`volsr.inference.memory.parse_size`)."""
    from volsr.inference.memory import parse_size

    if isinstance(size, str):
        return parse_size(size, "max_memory (--max-memory)")
    return _count(size, "max_memory (--max-memory)", least=1)


def _window_size(roi: Sequence[int] | None) -> tuple[int, ...] | None:
    """``roi`` as 3 positive window sizes in voxels (``None``: fitted to each volume)."""
    if roi is None:
        return None
    if isinstance(roi, (str, bytes)) or len(tuple(roi)) != 3:
        raise ValueError(f"roi (--roi) takes 3 window sizes in voxels, got {roi!r}")
    return tuple(_count(r, "roi (--roi)", least=1) for r in roi)


def _overlap_fraction(overlap: float | None) -> float | None:
    """``overlap`` as a fraction in [0, 1): MONAI's windows step by ``roi * (1 - overlap)``."""
    if overlap is None:
        return None
    fraction = _finite(overlap, "overlap (--overlap)")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"overlap (--overlap) is a fraction of the window in [0, 1), got {overlap!r}")
    return fraction


def checked_device(device: str | torch.device) -> torch.device:
    """``device`` resolved (:func:`volsr.inference.devices.resolve_device`), refused in one line when it
    does not exist here: a name torch does not know, a CUDA index past the GPUs present, a device
    type volsr does not run on."""
    named = f"device (--device) {str(device)!r}"
    try:
        asked = None if str(device) == "auto" else torch.device(device)
    except RuntimeError:  # torch.device("foo")
        raise ValueError(f"{named} is not a device: use auto, cpu, cuda or cuda:N") from None
    if asked is not None and asked.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{named}: no CUDA GPU is available here")
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"{named} does not exist here: {count} CUDA GPU(s) present")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{named}: volsr runs on cpu or cuda")
    return dev


def check_memory(
    image: torch.Tensor,
    network: nn.Module,
    options: ResolverOptions,
    precision: torch.dtype,
    scale: float | Sequence[float] | None = None,
    spacing: float | Sequence[float | None] | None = None,
) -> None:
    """Refuse, before anything is allocated, a run whose peak memory (:mod:`volsr.inference.memory`)
    exceeds ``options.max_memory`` or, without it, the memory available now."""
    from volsr.geometry.grids import voxel_spacing
    from volsr.inference import memory
    from volsr.inference.sliding_window import output_grid, volume_device, window_budget

    out_affine, out_shape, _ = output_grid(image, scale, spacing)
    voxels = math.prod(int(n) for n in out_shape)
    device = options.device if isinstance(options.device, torch.device) else checked_device(options.device)
    on_host = volume_device(device, voxels) == torch.device("cpu")
    window = 0
    if device.type == "cpu":
        features = int(getattr(getattr(network, "config", None), "features", 32))
        windows = math.prod(options.roi) if options.roi else window_budget(voxels, network, device, precision)
        window = memory.window_bytes(min(windows, voxels), features, precision.itemsize)
    channels = 2 if options.uncertainty else 1
    need = memory.estimate_peak(voxels, channels, 4, True, window, on_host)
    limit = options.max_memory if options.max_memory is not None else memory.available_memory()
    spacing_mm = [float(v) for v in voxel_spacing(out_affine)]
    problem = memory.memory_refusal(need, limit, out_shape, spacing_mm, options.max_memory is not None)
    if problem is not None:
        raise VolsrInputError(getattr(image, "meta", {}).get("filename_or_obj", "the image"), problem)


def uncertainty_path_for(output: str | Path, dicom: bool = False) -> Path:
    """Where the uncertainty map of an output goes: ``scan_sr.nii.gz`` -> ``scan_sr_uncertainty.nii.gz``;
    a DICOM series folder ``scan_sr`` -> ``scan_sr_uncertainty``."""
    p = Path(output)
    if dicom:
        return p.with_name(f"{p.name}_uncertainty")
    ending = ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix  # outputs are NIfTI
    return p.with_name(f"{p.name[: len(p.name) - len(ending)]}_uncertainty{ending}")


#: how each output of a resolver is stored as a DICOM series: the label ending its description, the
#: SeriesNumber offset from the source's, and what its DerivationDescription starts with
_DICOM_SERIES = {"image": ("SR", 1000, ""), "uncertainty": ("uncertainty", 2000, "uncertainty map of: ")}

#: what the sidecar says of the map
UNCERTAINTY_RECORD = {
    "Method": "standard deviation of the network over its 16 symmetric views, Gaussian-smoothed (1 voxel)",
    "Units": "the output's intensity units",
}


@dataclasses.dataclass(frozen=True)
class OutputTarget:
    """How an output is written: the steps :meth:`SuperResolver.predict_file` runs around the network,
    also used one at a time by pipelines that read ahead and write behind (:mod:`volsr.api.cohort`).

    ``dtype``, ``overwrite``, ``sidecar``, ``dicom`` and ``modality``: as in
    :meth:`SuperResolver.predict_file`; ``uncertainty``: the outputs also hold an uncertainty map,
    written beside the output (:func:`uncertainty_path_for`; float32, or a second DICOM series).
    """

    dtype: str = "input"
    overwrite: bool = False
    sidecar: bool = True
    dicom: bool = False
    modality: str | None = None
    uncertainty: bool = False

    def load_checked(
        self, src: str | Path, dst: str | Path | None = None, series_uid: str | None = None,
        volume: int | None = None,
    ) -> tuple[torch.Tensor, Path]:  # fmt: skip
        """Read ``src`` and check where its output goes (``dst``, default beside the current folder):
        everything that would be refused is refused before the work."""
        from volsr.data.io import check_output, load_image, sidecar_path
        from volsr.data.output_names import input_files

        image = load_image(src, series_uid=series_uid, volume=volume)
        if self.dicom:
            from volsr.data.dicom_writer import check_dicom_output

            dst = Path(dst or output_path_for(src, dicom=True))
            self.check_not_inputs(dst, input_files([src], sidecar_path))
            dst = check_dicom_output(
                dst, image, self.overwrite, self.sidecar, self.modality, self.dtype,
            )  # fmt: skip
            if self.uncertainty:
                map_dst = uncertainty_path_for(dst, dicom=True)
                check_dicom_output(map_dst, image, self.overwrite, False, self.modality)
            return image, dst
        dst = Path(dst or output_path_for(src))
        self.check_not_inputs(dst, input_files([src], sidecar_path))
        dst = check_output(dst, image, self.dtype, self.overwrite, self.sidecar)
        if self.uncertainty:
            check_output(uncertainty_path_for(dst), image, "float32", self.overwrite)
        return image, dst

    def outputs_of(self, dst: str | Path) -> tuple[list[Path], list[Path]]:
        """Every path written for the output ``dst``: ``(files, folders)``, the folders being DICOM
        series (the image's, the map's); the files the NIfTI image, map and the JSON sidecar."""
        from volsr.data.io import sidecar_path

        dst = Path(dst)
        images = [dst, *([uncertainty_path_for(dst, self.dicom)] if self.uncertainty else [])]
        sidecars = [sidecar_path(dst, folder=self.dicom)] if self.sidecar else []
        return (sidecars, images) if self.dicom else (images + sidecars, [])

    def check_not_inputs(self, dst: str | Path, inputs: dict[Path, Path]) -> None:
        """Refuse, before the work, an output of ``dst`` that would write over one of ``inputs``
        (:func:`volsr.data.output_names.input_files`) or that the file system cannot name."""
        from volsr.data.output_names import check_outputs

        files, folders = self.outputs_of(dst)
        check_outputs(files, inputs)
        check_outputs(folders, inputs, folders=True)

    def write(self, outputs: dict[str, torch.Tensor], image: torch.Tensor, info: dict, dst: Path) -> Path:
        """Write ``outputs["image"]`` (made from ``image``; provenance ``info``) to ``dst``, its
        uncertainty map (``outputs["uncertainty"]``, when there is one) and its sidecar: all or none."""
        from volsr.data.io import discard_output, write_sidecar

        written = self._save("image", outputs["image"], image, info, dst, self.dtype)
        extra: list[Path] = []
        try:
            if "uncertainty" in outputs:
                path = uncertainty_path_for(written, self.dicom)
                extra.append(
                    self._save("uncertainty", outputs["uncertainty"], image, info, path, "float32", written)
                )
                info = info | {"Uncertainty": {"File": path.name, **UNCERTAINTY_RECORD}}
            if self.sidecar:
                write_sidecar(written, info, overwrite=self.overwrite, folder=self.dicom)
        except BaseException:
            for path in [written, *extra]:
                discard_output(path)  # no output without its map and its record
            raise
        return written

    def _save(
        self, kind: str, out: torch.Tensor, image: torch.Tensor, info: dict, dst: Path, dtype: str,
        joins: Path | None = None,
    ) -> Path:  # fmt: skip
        """Write one output (``kind``: a key of :data:`_DICOM_SERIES`) as NIfTI or as a DICOM series."""
        from volsr.data.io import save_image

        if not self.dicom:
            return save_image(out, dst, dtype=dtype, overwrite=self.overwrite)
        from volsr.data.dicom_writer import save_dicom_series

        label, offset, derived = _DICOM_SERIES[kind]
        return save_dicom_series(
            out, dst, reference=image, dtype=dtype, derivation=derived + _derivation(info),
            modality=self.modality, overwrite=self.overwrite, label=label, series_offset=offset, joins=joins,
        )  # fmt: skip


def _read_weights(path: str | Path) -> tuple[nn.Module, PercentileNormalizer, dict]:
    """:func:`volsr.networks.checkpoint.load_checkpoint`, its failures as one
    :class:`~volsr.errors.VolsrInputError` naming the file: torch's unpickler and the network builder
    raise anything from ``EOFError`` to ``RuntimeError`` on a bad file."""
    if not Path(path).is_file():
        raise VolsrInputError(path, "no such weights file")
    try:
        return load_checkpoint(path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except PermissionError as exc:
        raise VolsrInputError(path, f"cannot be read: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad weights file
        detail = " ".join(str(exc).split()).removeprefix(f"{path}: ")[:200] or type(exc).__name__
        raise VolsrInputError(
            path, f"is not a volsr checkpoint that loads (corrupt, truncated or another program's): {detail}"
        ) from None


class SuperResolver:
    """A trained generator with the normalisation it was trained with, ready for whole scans.

    Args:
        network: the torch module (``sr.network``).
        normalizer: intensity normalisation stored with the weights.
        options: how it runs (:class:`ResolverOptions`); keyword arguments (``roi=...``, ``tta=True``,
            ...) change single options.

    ``sr.info`` is the provenance of the weights (bundle, bundle version, checkpoint step); every
    resolver derived from this one (:meth:`with_options`, :meth:`adapted`) keeps it.
    """

    def __init__(
        self,
        network: nn.Module,
        normalizer: PercentileNormalizer | None = None,
        options: ResolverOptions | None = None,
        **changes,
    ) -> None:
        options = dataclasses.replace(options or ResolverOptions(), **changes)
        self.options = dataclasses.replace(options, device=checked_device(options.device))
        self.precision = decide_precision(self.device, self.amp)  # once: every window and the sidecar
        self.network = network.eval().to(self.device)
        self.normalizer = normalizer or PercentileNormalizer()
        self.info: dict = {}

    roi = property(lambda self: self.options.roi)
    overlap = property(lambda self: self.options.overlap)
    device = property(lambda self: self.options.device)
    amp = property(lambda self: self.options.amp)
    progress = property(lambda self: self.options.progress)
    consistency = property(lambda self: self.options.consistency)
    tta = property(lambda self: self.options.tta)
    uncertainty = property(lambda self: self.options.uncertainty)
    adapt = property(lambda self: self.options.adapt)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> SuperResolver:
        """Load the weights file ``path``; a file that is not a volsr checkpoint (corrupt, truncated,
        another program's) is refused in one line naming it."""
        network, normalizer, ckpt = _read_weights(path)
        sr = cls(network, normalizer, **kwargs)
        sr.info = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}
        return sr

    @classmethod
    def from_bundle(cls, bundle: str | Path = DEFAULT_BUNDLE, **kwargs) -> SuperResolver:
        """Load ``models/model.pt`` of a bundle given by name (``bundles/NAME``) or path."""
        root = find_bundle(bundle)
        sr = cls.from_checkpoint(root / "models" / "model.pt", **kwargs)
        sr.info["bundle"] = str(root)
        try:
            metadata = json.loads((root / "configs" / "metadata.json").read_text())
            sr.info["bundle_version"] = metadata["version"]
        except (OSError, ValueError, KeyError):
            pass  # a bundle without metadata still runs; its outputs just say less
        return sr

    def __call__(
        self,
        image: torch.Tensor | str | Path,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Super-resolve a MetaTensor or a file/DICOM folder; returns a MetaTensor (float32), or with
        the ``uncertainty`` option ``(output, uncertainty map)``."""
        if isinstance(image, (str, Path)):
            from volsr.data.io import load_image

            image = load_image(image)
        warn_if_not_contiguous(image)
        check_memory(image, self.network, self.options, self.precision, scale=scale, spacing=spacing)
        if self.adapt > 0:
            return self.adapted(image, scale=scale, spacing=spacing)(image, scale=scale, spacing=spacing)
        return super_resolve(
            image,
            self.network,
            self.normalizer,
            scale=scale,
            spacing=spacing,
            roi=self.roi,
            overlap=self.overlap,
            device=self.device,
            precision=self.precision,
            progress=self.progress,
            consistency=self.consistency,
            tta=self.tta,
            uncertainty=self.uncertainty,
        )

    def adapted(
        self,
        image: torch.Tensor,
        scale: float | Sequence[float] | None = None,
        spacing: float | Sequence[float | None] | None = None,
        steps: int | None = None,
        **options,
    ) -> SuperResolver:
        """A resolver like this one whose network is a copy fine-tuned on ``image`` (a MetaTensor, with
        the ``scale`` / ``spacing`` it will be restored at) for ``steps`` (default ``self.adapt``, else
        :data:`~volsr.training.adaptation.DEFAULT_ADAPT_STEPS`); ``options`` override the others."""
        from volsr.training.adaptation import DEFAULT_ADAPT_STEPS, adapt

        tuned = adapt(
            self.network,
            image,
            self.normalizer,
            scale=scale,
            spacing=spacing,
            steps=steps or self.adapt or DEFAULT_ADAPT_STEPS,
            device=self.device,
            amp=self.amp,
            progress=self.progress,
        )
        return self.with_options(network=tuned, **options)

    def with_options(self, network: nn.Module | None = None, **changes) -> SuperResolver:
        """A resolver like this one (same normaliser and provenance; ``network`` if given) with the
        options in ``changes`` changed (:class:`ResolverOptions`); it does not adapt again
        (``adapt=0``) unless told to."""
        sr = SuperResolver(network or self.network, self.normalizer, self.options, **{"adapt": 0, **changes})
        sr.info = dict(self.info)
        return sr

    def predict_file(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
        dtype: str = "input",
        overwrite: bool = False,
        series_uid: str | None = None,
        volume: int | None = None,
        sidecar: bool = True,
        dicom: bool = False,
        modality: str | None = None,
    ) -> Path:
        """Read ``src``, super-resolve it and write NIfTI to ``dst`` (default ``./<stem>_sr.nii.gz``),
        or with ``dicom`` a new DICOM series to the folder ``dst`` (default ``./<stem>_sr``).

        The header's codes, units and description are kept; ``dtype="input"`` writes the input's
        data type (rounded and clipped), ``"float32"`` keeps full precision. A DICOM series
        (:func:`volsr.data.dicom_writer.save_dicom_series`) keeps a DICOM source's patient, study and
        frame of reference; ``modality`` (``"MR"`` or ``"CT"``) names it for other sources. With
        ``sidecar``, a JSON sidecar beside the output (``<stem>_sr.json``) records how it was made
        (:meth:`provenance`). Never writes over ``src``.
        """
        target = OutputTarget(dtype, overwrite, sidecar, dicom, modality, self.uncertainty)
        image, dst = target.load_checked(src, dst, series_uid, volume)
        outputs, info = self.resolve_scan(src, image, spacing=spacing, scale=scale)
        return target.write(outputs, image, info, dst)

    def resolve_scan(
        self,
        src: str | Path,
        image: torch.Tensor,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """The outputs for ``image`` (read from ``src``): ``{"image": output}``, with the
        ``uncertainty`` option also ``"uncertainty"``; and their provenance (:meth:`provenance`). An
        error about the scan names ``src``."""
        try:
            result = self(image, spacing=spacing, scale=scale)
        except VolsrInputError:  # names the scan already
            raise
        except ValueError as e:  # e.g. a scan that --adapt cannot learn from: say which one
            raise ValueError(f"{src}: {e}") from e
        if isinstance(result, tuple):
            outputs = {"image": result[0], "uncertainty": result[1]}
        else:
            outputs = {"image": result}
        return outputs, self.provenance(src, image, outputs["image"])

    def provenance(self, src: str | Path, image: torch.Tensor, out: torch.Tensor) -> dict:
        """What made ``out`` from ``image`` (read from ``src``): volsr and bundle versions, the
        checkpoint's step, the options, both grids and, under ``Assumptions``, what volsr assumed of
        a header that did not say it (a NIfTI file with no coordinate codes). Written as the output's
        JSON sidecar; it states no SliceThickness, since the output was not acquired in slices."""
        from volsr import __version__
        from volsr.geometry.grids import voxel_spacing
        from volsr.geometry.meta import affine_of

        def grid(t: torch.Tensor) -> dict:
            return {
                "shape": [int(n) for n in t.shape[1:]],
                "spacing_mm": [round(float(v), 6) for v in voxel_spacing(affine_of(t))],
            }

        from volsr.data.voxel_checks import coordinate_assumption

        uid = getattr(image, "meta", {}).get("dicom_series_uid")
        series = {"SeriesInstanceUID": uid} if uid else {}
        assumed = coordinate_assumption(getattr(image, "meta", {}).get("nifti_header"))
        return {
            "Sources": [str(src)],
            "GeneratedBy": {
                "Name": "volsr",
                "Version": __version__,
                "Bundle": self.info.get("bundle"),
                "BundleVersion": self.info.get("bundle_version"),
                "CheckpointStep": self.info.get("step"),
                "Options": {
                    "tta": self.tta or self.uncertainty,
                    "uncertainty": self.uncertainty,
                    "consistency": self.consistency,
                    "adapt": self.adapt,
                    "amp": self.amp,
                    "precision": precision_name(self.precision),
                    "device": str(self.device),
                    "roi": None if self.roi is None else list(self.roi),
                },
            },
            "Input": grid(image) | series,
            "Output": grid(out),
            **({"Assumptions": [assumed]} if assumed else {}),
        }
