"""``SuperResolver``: a bundle's trained network, ready for whole scans and files.

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
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from volsr import __version__
from volsr.api.bundle_search import DEFAULT_BUNDLE, bundle_weights, find_bundle, is_bundle_path
from volsr.api.outputs import OutputWriter
from volsr.api.request import InferRequest, ResolverOptions
from volsr.data.acquisition import slice_acquisition
from volsr.data.io import load_image
from volsr.data.normalization import PercentileNormalizer
from volsr.data.voxel_checks import coordinate_assumption
from volsr.errors import Option, VolsrInputError, VolsrInputWarning, VolsrOptionError
from volsr.geometry.grids import voxel_spacing
from volsr.geometry.meta import affine_of
from volsr.inference import memory
from volsr.inference.consistency_choice import decide_consistency
from volsr.inference.devices import decide_precision, precision_name, resolve_device
from volsr.inference.sliding_window import output_grid, super_resolve, volume_device, window_budget
from volsr.inference.uncertainty import load_calibration, map_views
from volsr.networks.checkpoint import load_checkpoint

__all__ = ["SuperResolver", "checked_device"]


def warn_if_not_contiguous(image: torch.Tensor) -> None:
    """A :class:`~volsr.errors.VolsrInputWarning` when the header states slices with gaps or overlaps:
    the networks were trained on contiguous slices (data consistency and ``--adapt`` do model them)."""
    acquisition = slice_acquisition(image)
    if acquisition is None or acquisition.contiguous:
        return
    source = getattr(image, "meta", {}).get("filename_or_obj", "the scan")
    warnings.warn(
        VolsrInputWarning(
            f"{source}: {acquisition.describe()}; the network was trained on contiguous slices, so expect "
            "less gain (data consistency and {adapt} model the stated thickness)",
            adapt=Option("adapt=", "--adapt"),
        ),
        stacklevel=3,
    )


def checked_device(device: str | torch.device) -> torch.device:
    """``device`` resolved (:func:`volsr.inference.devices.resolve_device`), refused in one line when it
    does not exist here: a name torch does not know, a CUDA index past the GPUs present, a device
    type volsr does not run on."""
    named = {"device": Option(f"device={str(device)!r}", f"--device {str(device)!r}")}
    try:
        asked = None if str(device) == "auto" else torch.device(device)
    except RuntimeError:  # torch.device("foo")
        raise VolsrOptionError("{device} is not a device: use auto, cpu, cuda or cuda:N", **named) from None
    if asked is not None and asked.type == "cuda" and not torch.cuda.is_available():
        raise VolsrOptionError("{device}: no CUDA GPU is available here", **named)
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise VolsrOptionError("{device} does not exist here: " + f"{count} CUDA GPU(s) present", **named)
    if dev.type not in ("cpu", "cuda"):
        raise VolsrOptionError("{device}: volsr runs on cpu or cuda", **named)
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
        source = getattr(image, "meta", {}).get("filename_or_obj", "the image")
        raise VolsrInputError(source, problem, **memory.REFUSAL_OPTIONS)


def _kspace_bundle(root: Path) -> str | Path | None:
    """The bundle ``root``'s ``configs/inference.json`` hands reduced k-space matrices to
    (``"kspace_bundle"``: a name is the installed copy's, as everywhere; a path is relative to
    ``root``), or ``None``."""
    try:
        named = json.loads((root / "configs" / "inference.json").read_text()).get("kspace_bundle")
    except (OSError, ValueError):
        return None
    if not isinstance(named, str) or not named:
        return None
    return root / named if is_bundle_path(named) else named


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

    ``sr.kspace_resolver``: the resolver a scan acquired with a smaller k-space matrix is handed to
    (:meth:`for_scan`), or ``None``. A bundle names it in ``configs/inference.json``
    (``"kspace_bundle"``); volsr_cnn3d names volsr_kspace3d.
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
        self.kspace_resolver: SuperResolver | None = None

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
        sr = cls.from_checkpoint(bundle_weights(root), **kwargs)
        sr.info["bundle"] = str(root)
        try:
            metadata = json.loads((root / "configs" / "metadata.json").read_text())
            sr.info["bundle_version"] = metadata["version"]
        except (OSError, ValueError, KeyError):
            pass  # a bundle without metadata still runs; its outputs just say less
        kspace = _kspace_bundle(root)
        if kspace is not None:
            sr.kspace_resolver = cls.from_bundle(kspace, **kwargs)
            sr.kspace_resolver.kspace_resolver = None  # one hand-over at most
        return sr

    def for_scan(
        self,
        image: torch.Tensor,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
    ) -> SuperResolver:
        """The resolver for ``image`` on the grid ``spacing`` / ``scale`` give: :attr:`kspace_resolver`
        for a scan acquired with a smaller k-space matrix, as the header states it or, where it states
        nothing, as the grid shows it (every axis up-sampled alike; a ``consistency`` model asked for
        decides instead: :func:`volsr.inference.consistency_choice.decide_consistency`), else this one."""
        if self.kspace_resolver is None:
            return self
        _, _, effective = output_grid(image, scale, spacing)
        asked = self.consistency if self.consistency in ("slices", "kspace") else "auto"
        model = decide_consistency(image, effective, asked).model
        return self.kspace_resolver if model == "kspace" else self

    def __call__(
        self,
        image: torch.Tensor | str | Path,
        spacing: float | Sequence[float | None] | None = None,
        scale: float | Sequence[float] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Super-resolve a MetaTensor or a file/DICOM folder; returns a MetaTensor (float32), or with
        the ``uncertainty`` option ``(output, uncertainty map)``."""
        if isinstance(image, (str, Path)):
            image = load_image(image)
        chosen = self.for_scan(image, spacing=spacing, scale=scale)
        if chosen is not self:
            return chosen(image, spacing=spacing, scale=scale)
        warn_if_not_contiguous(image)
        check_memory(image, self.network, self.options, self.precision, scale=scale, spacing=spacing)
        if self.adapt > 0:
            return self.adapted(image, scale=scale, spacing=spacing)(image, scale=scale, spacing=spacing)
        calibration = None
        if self.uncertainty and self.info.get("bundle"):  # the calibration fitted for this map's views
            calibration = load_calibration(self.info["bundle"], len(map_views(self.tta)))
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
            calibration=calibration,
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
        from volsr.training.adaptation import DEFAULT_ADAPT_STEPS, adapt  # training code: only when adapting

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
        if network is None and self.kspace_resolver is not None:  # adapted weights hand nothing over
            sr.kspace_resolver = self.kspace_resolver.with_options(**changes)
        return sr

    def predict_file(
        self,
        src: str | Path,
        dst: str | Path | None = None,
        request: InferRequest | None = None,
        **keywords,
    ) -> Path:
        """Read ``src``, super-resolve it and write NIfTI to ``dst`` (default ``./<stem>_sr.nii.gz``),
        or with ``dicom`` a new DICOM series to the folder ``dst`` (default ``./<stem>_sr``).

        ``request`` (:class:`~volsr.api.request.InferRequest`) says what to read, on which grid, how
        the network runs (its ``resolver``; ``None``: as this resolver is set up) and where and how to
        write; or its options as keywords (:meth:`~volsr.api.request.InferRequest.of`): ``spacing``,
        ``scale``, ``dtype``, ``overwrite``, ``series_uid``, ``volume``, ``sidecar``, ``dicom``,
        ``modality``.

        The header's codes, units and description are kept; ``dtype="input"`` writes the input's
        data type (rounded and clipped), ``"float32"`` keeps full precision. A DICOM series
        (:func:`volsr.data.dicom_writer.save_dicom_series`) keeps a DICOM source's patient, study and
        frame of reference; ``modality`` (``"MR"`` or ``"CT"``) names it for other sources. With
        ``sidecar``, a JSON sidecar beside the output (``<stem>_sr.json``) records how it was made
        (:meth:`provenance`). Never writes over ``src``.
        """
        if request is None:
            request = InferRequest.of(**keywords)
        elif keywords:
            raise TypeError(f"predict_file takes a request or its options as keywords, not both: {keywords}")
        sr = self if request.resolver is None else self.with_options(**vars(request.resolver))
        writer = OutputWriter(request.output, sr.uncertainty)
        source = request.source
        image, dst = writer.load_checked(src, dst or request.output.path, source.series, source.volume)
        outputs, info = sr.resolve_scan(src, image, spacing=request.spacing, scale=request.scale)
        return writer.write(outputs, image, info, dst)

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
            sr = self.for_scan(image, spacing=spacing, scale=scale)
            result = sr(image, spacing=spacing, scale=scale)
        except VolsrInputError:  # names the scan already
            raise
        except ValueError as e:  # e.g. a scan that --adapt cannot learn from: say which one
            raise ValueError(f"{src}: {e}") from e
        if isinstance(result, tuple):
            outputs = {"image": result[0], "uncertainty": result[1]}
        else:
            outputs = {"image": result}
        return outputs, sr.provenance(src, image, outputs["image"])

    def provenance(self, src: str | Path, image: torch.Tensor, out: torch.Tensor) -> dict:
        """What made ``out`` from ``image`` (read from ``src``): volsr and bundle versions, the
        checkpoint's step, the options, both grids, under ``Consistency`` the data-consistency model
        ``out`` got and why (``{"model": "slices" | "kspace" | None, "reason", "source"}``, from
        ``out.meta["consistency"]``: :meth:`volsr.inference.consistency_choice.ConsistencyChoice.record`)
        and, under ``Assumptions``, what volsr assumed of a header that did not say it (a NIfTI file
        with no coordinate codes). Written as the output's JSON sidecar; it states no SliceThickness,
        since the output was not acquired in slices."""

        def grid(t: torch.Tensor) -> dict:
            return {
                "shape": [int(n) for n in t.shape[1:]],
                "spacing_mm": [round(float(v), 6) for v in voxel_spacing(affine_of(t))],
            }

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
                    "views": len(map_views(self.tta)) if self.uncertainty else 16 if self.tta else 1,
                    "uncertainty_calibrated": bool(self.uncertainty and self.info.get("bundle"))
                    and load_calibration(self.info["bundle"], len(map_views(self.tta))) is not None,
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
            "Consistency": getattr(out, "meta", {}).get("consistency"),
            **({"Assumptions": [assumed]} if assumed else {}),
        }
