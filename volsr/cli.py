"""The ``volsr`` command line: a thin shell over the Python API, one function per command.

Each command parses its options, calls the library and prints a short summary. Heavy modules
(torch, MONAI, nibabel) are imported inside the commands, so ``volsr --help`` is instant. Bad input
(a missing or unreadable file, conflicting options) ends with one line on stderr,
``volsr: error: <message>``, and exit status 2; a traceback means a bug in volsr.

Adding a command: a function decorated with ``@app.command()`` then ``@_input_errors``, its options
as ``Annotated`` parameters (reuse :data:`Scan`, :data:`Volume`, :data:`Series`), its imports inside.

Example:
    $ volsr info scan.nii.gz
    $ volsr degrade scan.nii.gz -o thick.nii.gz --thickness 4 --axis 2
    $ volsr degrade scan.nii.gz -o low.nii.gz --kspace 0.5 --axes 0,1 --window hamming --reduce-matrix
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from volsr.errors import VolsrInputError, VolsrInputWarning, one_line

try:  # typer vendors click from 0.2x on; older releases use click itself
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_errors

__all__ = ["app", "main"]
#: click's "no command given": shown as the help, not as an error (click >= 8.2)
_NO_ARGS = getattr(_click_errors, "NoArgsIsHelpError", ())


class _OneLineUsageErrors(TyperGroup):
    """The command group with click's usage errors (a bad option value, a missing argument) as one
    ``volsr: error: ...`` line and exit status 2, instead of typer's framed usage box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS as exc:  # plain `volsr`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
            print(f"volsr: error: {one_line(Exception(exc.format_message()))}{hint}", file=sys.stderr)
            sys.exit(2 if isinstance(exc, _click_errors.UsageError) else exc.exit_code)
        except typer.Abort:
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # the exit status typer.Exit carried, else 0


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="volsr",
    help="3D super-resolution of medical volumes (MONAI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # click's plain help: it wraps to any width, where rich's boxes cut option names at 80 columns
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from volsr import __version__

        typer.echo(f"volsr {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


#: errors that blame the user's input or options: reported in one line, exit status 2
_INPUT_ERRORS = (VolsrInputError, FileNotFoundError, ValueError)
_F = TypeVar("_F", bound=Callable)
_PYTHON_SHOW_WARNING = warnings.showwarning

Scan = Annotated[
    Path, typer.Argument(help="NIfTI, MGH, NRRD or MetaImage file, or a DICOM folder.", show_default=False)
]
Volume = Annotated[int | None, typer.Option("--volume", min=0, help="Volume to read from a 4-D image.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")]
Series = Annotated[
    str | None, typer.Option("--series", help="SeriesInstanceUID, for a folder of several series.")
]


class ConsistencyModel(str, Enum):
    auto = "auto"
    slices = "slices"
    kspace = "kspace"


class Profile(str, Enum):
    boxcar = "boxcar"
    gaussian = "gaussian"


class PixelLoss(str, Enum):  # volsr.training.trainer.PIXEL_LOSSES, named here to keep torch out of --help
    l1 = "l1"
    mse = "mse"


class OutputDtype(str, Enum):
    """``--dtype``: the input's own type, or a NIfTI integer/float type (volsr.data.io.OUTPUT_DTYPES)."""

    input = "input"
    float32 = "float32"
    float64 = "float64"
    int8 = "int8"
    uint8 = "uint8"
    int16 = "int16"
    uint16 = "uint16"
    int32 = "int32"
    uint32 = "uint32"
    int64 = "int64"
    uint64 = "uint64"


class Baseline(str, Enum):  # volsr.evaluation.comparison.BASELINES, named here to keep torch out of --help
    nearest = "nearest"
    linear = "linear"
    cubic = "cubic"
    fourier = "fourier"


class Window(str, Enum):
    none = "none"
    hamming = "hamming"
    tukey = "tukey"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Input warnings as one ``volsr: warning: ...`` line; any other warning as Python shows it."""
    if issubclass(category, VolsrInputWarning):
        print(f"volsr: warning: {one_line(message, cli=True)}", file=sys.stderr)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


def _input_errors(command: _F) -> _F:
    """Turn bad input raised inside ``command`` into ``volsr: error: ...`` on stderr and exit status 2,
    the settings it names in the command line's words (``--overwrite``, not ``overwrite=True``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():  # restores Python's own display afterwards
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except _INPUT_ERRORS as exc:
            typer.echo(f"volsr: error: {one_line(exc, cli=True)}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # the system refused a path the user gave (too long, no permission, ...)
            if exc.filename is None:
                raise
            typer.echo(f"volsr: error: {exc.filename}: {exc.strerror or one_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except RuntimeError as exc:
            if (cause := _wrapped_input_error(exc)) is None:
                raise
            typer.echo(f"volsr: error: {one_line(cause, cli=True)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _wrapped_input_error(exc: BaseException) -> VolsrInputError | None:
    """The :class:`VolsrInputError` inside ``exc``'s chain of causes (MONAI's config parser wraps what
    the expressions it evaluates raise, e.g. ``train`` refusing a resume), or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, VolsrInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _format_scaling(scaling: tuple[float, float] | None) -> str:
    if scaling is None:
        return "none"
    slope, inter = scaling
    return f"value = stored x {slope:.6g} {'-' if inter < 0 else '+'} {abs(inter):.6g}"


def _format_info(d: dict) -> str:
    fov = " x ".join(f"{n * s:.4g}" for n, s in zip(d["shape"], d["spacing"], strict=True))
    rows = [
        ("file", d["path"]),
        ("shape", " x ".join(str(n) for n in d["shape"]) + " voxels"),
        ("spacing", " x ".join(f"{s:.4g}" for s in d["spacing"]) + " mm"),
        ("field of view", fov + " mm"),
        ("orientation", d["orientation"] + (" (sheared axes)" if d["sheared"] else "")),
        ("slices", d["slices"] or "thickness not stated (taken as contiguous)"),
        ("stored type", d["source_dtype"]),
        (
            "scaling",
            _format_scaling(d["scaling"]),
        ),
        (
            "range" if d["scaling"] is None else "scaled range",
            f"{d['min']:.6g} .. {d['max']:.6g} (mean {d['mean']:.6g})",
        ),
    ]
    return "\n".join(f"{name + ':':<15}{value}" for name, value in rows)


@app.command()
@_input_errors
def info(scan: Scan, volume: Volume = None, series: Series = None) -> None:
    """Print a scan's grid (shape, spacing, orientation), data type and intensity range."""
    from volsr.api.files import describe

    typer.echo(_format_info(describe(scan, series_uid=series, volume=volume)))


def _parse_axes(values: list[str] | None) -> tuple[int, ...]:
    """``["0,1", "2"]`` -> ``(0, 1, 2)``; all three axes when none are given."""
    if not values:
        return (0, 1, 2)
    items = [s for v in values for s in v.replace(",", " ").split()]
    try:
        return tuple(int(s) for s in items)
    except ValueError:
        raise ValueError(f"--axes takes axis numbers such as 0,1,2; got {' '.join(values)!r}") from None


def _check_mode(
    thickness: float | None,
    factor: float | None,
    kspace: float | None,
    slice_options: dict,
    kspace_options: dict,
) -> None:
    """Exactly one degradation, and no option that belongs to the other one (never ignored)."""
    if thickness is not None and factor is not None:
        raise ValueError("--thickness and --factor are mutually exclusive; give one")
    slices = thickness is not None or factor is not None
    if slices == (kspace is not None):
        raise ValueError("give either --thickness/--factor (thick slices) or --kspace (k-space truncation)")
    stray = [name for name, value in (kspace_options if slices else slice_options).items() if value]
    if stray:
        raise ValueError(f"{', '.join(stray)} do(es) not apply to {'thick slices' if slices else '--kspace'}")


#: a protocol's argument names (volsr.api.ThickSlices, KSpace) as the options that set them
_FLAGS = {
    "axis": "--axis",
    "factor": "--factor",
    "thickness": "--thickness",
    "profile": "--profile",
    "spacing_factor": "--spacing-factor",
    "fraction": "--kspace",
    "axes": "--axes",
    "window": "--window",
}

Thickness = Annotated[float | None, typer.Option(help="Slice thickness in mm (FWHM for gaussian).")]
Factor = Annotated[float | None, typer.Option(help="Slice thickness as a multiple of the voxel size.")]
Axis = Annotated[int | None, typer.Option(help="Array axis (0, 1 or 2) across the thick slices.")]
ProfileOption = Annotated[Profile | None, typer.Option("--profile", help="Slice profile [default: boxcar].")]
SpacingFactor = Annotated[
    float | None, typer.Option(help="Slice spacing / thickness: >1 leaves gaps, <1 overlaps [default: 1].")
]
KSpaceFraction = Annotated[
    float | None, typer.Option("--kspace", help="Fraction of k-space lines kept, in (0, 1].")
]
Axes = Annotated[
    list[str] | None, typer.Option(help="K-space axes: --axes 0,1 or --axes 0 --axes 1 [default: 0,1,2].")
]
WindowOption = Annotated[Window | None, typer.Option("--window", help="K-space apodisation [default: none].")]


def _protocol(
    thickness: float | None,
    factor: float | None,
    axis: int | None,
    profile: Profile | None,
    spacing_factor: float | None,
    kspace: float | None,
    axes: list[str] | None,
    window: Window | None,
    reduce_matrix: bool | None = None,
):
    """The degradation protocol the options name (``volsr.api.ThickSlices`` or ``KSpace``), built here
    for both ``degrade`` and ``evaluate``; errors name the option. ``reduce_matrix=None``: the command
    has no ``--reduce-matrix`` and a k-space protocol writes the smaller matrix."""
    slice_options = {"--axis": axis is not None, "--profile": profile, "--spacing-factor": spacing_factor}
    kspace_options = {"--axes": axes, "--window": window, "--reduce-matrix": reduce_matrix}
    _check_mode(thickness, factor, kspace, slice_options, kspace_options)
    from volsr.transforms.protocol import KSpace, ThickSlices

    try:
        if kspace is None:
            if axis is None:
                raise ValueError("--axis is required with --thickness/--factor")
            return ThickSlices(
                axis=axis,
                factor=factor,
                thickness=thickness,
                profile=(profile or Profile.boxcar).value,
                spacing_factor=1.0 if spacing_factor is None else spacing_factor,
            )
        matrix = {} if reduce_matrix is None else {"reduce_matrix": reduce_matrix}
        return KSpace(kspace, axes=_parse_axes(axes), window=(window or Window.none).value, **matrix)
    except ValueError as exc:  # "factor must be > 0" -> "--factor must be > 0"
        message = re.sub(r"^\w+", lambda m: _FLAGS.get(m.group(0), m.group(0)), str(exc))
        raise ValueError(message) from None


@app.command()
@_input_errors
def degrade(
    scan: Scan,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output NIfTI file (.nii.gz).", show_default=False)
    ],
    thickness: Thickness = None,
    factor: Factor = None,
    axis: Axis = None,
    profile: ProfileOption = None,
    spacing_factor: SpacingFactor = None,
    kspace: KSpaceFraction = None,
    axes: Axes = None,
    window: WindowOption = None,
    reduce_matrix: Annotated[
        bool, typer.Option("--reduce-matrix", help="Write the smaller k-space grid (same field of view).")
    ] = False,
    dtype: Annotated[
        OutputDtype,
        typer.Option(
            help="Stored type: input (the scan's), or a type whose range holds the output's values."
        ),
    ] = OutputDtype.float32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    volume: Volume = None,
    series: Series = None,
) -> None:
    """Simulate a low-resolution acquisition: thick slices along one axis, or a k-space truncation.

    Thick slices: `--thickness MM` (or `--factor F`, F times the voxel size) along `--axis`, their
    centres `--spacing-factor` x thickness apart. K-space: `--kspace FRACTION` of the central lines
    along `--axes`. The output keeps the field of view; its affine follows the new grid.
    """
    protocol = _protocol(
        thickness, factor, axis, profile, spacing_factor, kspace, axes, window, reduce_matrix
    )
    from volsr.api.files import degrade_file

    result = degrade_file(
        scan, output, protocol, dtype=dtype.value, overwrite=overwrite, series_uid=series, volume=volume
    )
    shape = " x ".join(str(n) for n in result.shape)
    spacing_mm = " x ".join(f"{s:.4g}" for s in result.spacing_mm)
    typer.echo(f"wrote {result.path}: {shape} voxels of {spacing_mm} mm")
    if result.sidecar is not None:
        typer.echo(f"wrote {result.sidecar}: {result.slices}")


Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
#: volsr.api.bundle_search.BUNDLE_RULE, written out to keep the CLI's imports light
Bundle = Annotated[
    str,
    typer.Option(
        help="The bundle: a name is a bundle of the installed copy (the bundles that came with this "
        "volsr), the same from any folder; a path (with a /, e.g. bundles/volsr_cnn3d or ./my_bundle) "
        "names that folder."
    ),
]


@app.command()
@_input_errors
def infer(
    scans: Annotated[
        list[Path],
        typer.Argument(
            help="Scans: files, DICOM folders, folders of scans, list files (.txt, JSON datalist), "
            "BIDS roots.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (one scan; with --dicom a new series folder) or the folder for a cohort's "
            "outputs and manifest.jsonl [default: ./STEM_sr.nii.gz, ./STEM_sr with --dicom; "
            "a BIDS root: ROOT/derivatives/volsr].",
        ),
    ] = None,
    bundle: Bundle = "volsr_cnn3d",
    spacing: Annotated[
        tuple[float, float, float] | None, typer.Option(help="Target voxel size in mm (X Y Z).")
    ] = None,
    scale: Annotated[
        tuple[float, float, float] | None, typer.Option(help="Per-axis up-sampling factors (X Y Z).")
    ] = None,
    device: Device = "auto",
    roi: Annotated[
        tuple[int, int, int] | None, typer.Option(help="Window size in output voxels [default: fitted].")
    ] = None,
    overlap: Annotated[
        float | None, typer.Option(help="Window overlap fraction, with --roi [default: 0.15].")
    ] = None,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="bfloat16 where native and fast (sidecar says).")
    ] = True,
    progress: Progress = True,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency/--no-consistency",
            help="Data consistency: project the output so re-degrading it gives the input (sidecar says "
            "which model and why).",
        ),
    ] = True,
    consistency_model: Annotated[
        ConsistencyModel,
        typer.Option(
            help="What data consistency assumes: thick slices, a smaller k-space matrix, or auto: what "
            "the header states (MRAcquisitionType in DICOM or a dcm2niix sidecar), else k-space when "
            "every axis is up-sampled alike and slices otherwise; none on a grid coarser than the input."
        ),
    ] = ConsistencyModel.auto,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average 16 flipped/swapped passes (16x the network time).")
    ] = False,
    uncertainty: Annotated[
        bool,
        typer.Option(
            "--uncertainty",
            help="Also write STEM_sr_uncertainty.nii.gz: the error bar, an estimated standard deviation of "
            "the output's error in the scan's units (4 network passes, whose mean is then the output; all 16 "
            "with --tta; docs/fidelity.md).",
        ),
    ] = False,
    adapt: Annotated[
        int,
        typer.Option(
            help="Fine-tune on each scan's own in-plane detail for this many steps first (0: off; seconds "
            "a step on a CPU; for scans unlike the training data: on the validation scans it does not "
            "beat plain inference).",
            min=0,
        ),
    ] = 0,
    dtype: Annotated[
        OutputDtype,
        typer.Option(
            help="Stored type: input (the scan's, clipped to its range), float32 (full precision), or a "
            "type whose range holds the output's values; --dicom takes input or float32."
        ),
    ] = OutputDtype.input,
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Refuse a scan whose run would need more memory than this (e.g. 8G, 500M) "
            "[default: the memory available now]."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    sidecar: Annotated[
        bool, typer.Option(help="Write OUTPUT_STEM.json: the volsr and bundle versions and options used.")
    ] = True,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Skip scans whose output exists.")
    ] = False,
    volume: Volume = None,
    series: Annotated[
        str | None,
        typer.Option(
            "--series",
            help="SeriesInstanceUID, for a folder of several series; 'all': each series to its own "
            "FOLDER_NUMBER_DESCRIPTION_sr.nii.gz.",
        ),
    ] = None,
    dicom: Annotated[
        bool,
        typer.Option(
            "--dicom",
            help="Write each output as a new DICOM series (a folder of slices) in the source's study, "
            "for a PACS.",
        ),
    ] = False,
    modality: Annotated[
        str | None,
        typer.Option(
            help="MR or CT: the modality of a --dicom series whose source is not DICOM [default: MR]."
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: run part I of N of the cohort (job arrays; torchrun splits it by itself)."),
    ] = None,
) -> None:
    """Super-resolve scans with a bundle; by default to isotropic voxels at the finest input spacing.

    The output keeps the field of view and the header; the input is never overwritten. The default
    bundle hands a scan acquired with a smaller 3D k-space matrix to volsr_kspace3d. Each scan
    written gets a few lines on stdout: both grids, the time, device and precision, the bundle and
    where it came from, the data-consistency model, and every file written. A scan or
    series that cannot be used is named on stderr and skipped, and the exit status is 2. A cohort's
    folder gets manifest.jsonl; running the same command again skips what is done. Under
    `torchrun --nproc_per_node N -m volsr.cli infer ...` the ranks share the cohort.
    """
    if spacing is not None and scale is not None:
        raise ValueError("--spacing and --scale are mutually exclusive; give one")
    from volsr.api.cohort.runner import infer_cohort
    from volsr.api.request import InferRequest, OutputOptions, ResolverOptions, ScanSource

    request = InferRequest(
        source=ScanSource(series=series, volume=volume),
        spacing=spacing,
        scale=scale,
        resolver=ResolverOptions(
            roi=roi,
            overlap=overlap,
            device=device,
            amp=amp,
            progress=progress,
            consistency=consistency and consistency_model.value,  # "auto", "slices", "kspace"; False: off
            tta=tta,
            uncertainty=uncertainty,
            adapt=adapt,
            max_memory=max_memory,  # "8G": the resolver's options parse it
        ),
        output=OutputOptions(
            path=output,
            dtype=dtype.value,
            overwrite=overwrite,
            sidecar=sidecar,
            dicom=dicom,
            modality=modality,
            skip_existing=skip_existing,
        ),
    )
    result = infer_cohort(scans, request=request, bundle=bundle, shard=shard, echo=typer.echo, cli_words=True)
    failed, counts = result.counts["failed"], result.counts
    if result.jobs > 1 or result.manifest is not None:
        done = f"{counts['done']} written, {counts['skipped'] + counts['exists']} skipped, {failed} failed"
        typer.echo(f"{done} of {result.jobs}" + (f"; manifest: {result.manifest}" if result.manifest else ""))
    if failed and result.reports:  # under torchrun, rank 0 counts every rank's scans
        if result.jobs > 1:
            typer.echo(f"volsr: {failed} of {result.jobs} scans failed", err=True)
        raise typer.Exit(2)


@app.command()
@_input_errors
def train(
    bundle: Bundle = "bundles/volsr_cnn3d",
    data: Annotated[
        str | None, typer.Option(help="Folder, image or datalist JSON of high-resolution scans.")
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Total optimisation steps.")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from models/checkpoint.pt (its learning rate, warm-up and steps unless given).",
        ),
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option(help="Start from this checkpoint's weights (fine-tuning, e.g. on your own scans)."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="Peak learning rate (fine-tuning: lower than the config's).")
    ] = None,
    warmup: Annotated[int | None, typer.Option(min=0, help="Linear warm-up steps.")] = None,
    pixel_loss: Annotated[
        PixelLoss | None,
        typer.Option(help="Pixel loss: l1 (the configs' usual), or mse (what PSNR scores; for fine-tuning)."),
    ] = None,
    device: Device = "auto",
) -> None:
    """Train a bundle's network with its configs/train.json (what `monai.bundle run` runs)."""
    from volsr.api.resolver import checked_device
    from volsr.api.training import train_bundle
    from volsr.training.engine import console_logging

    checked_device(device)  # a device that is not here: one line now, not a traceback from the engine

    # training messages as plain lines; under torchrun every rank runs this command and rank 0 speaks
    with console_logging():
        best = train_bundle(
            bundle,
            data=data,
            steps=steps,
            resume=resume,
            init=init,
            lr=lr,
            warmup=warmup,
            pixel_loss=pixel_loss.value if pixel_loss else None,
            device=device,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"done; best validation: {best}")


@app.command()
@_input_errors
def evaluate(
    scans: Annotated[list[Path], typer.Argument(help="High-resolution reference scans.", show_default=False)],
    thickness: Thickness = None,
    factor: Factor = None,
    axis: Axis = None,
    profile: ProfileOption = None,
    spacing_factor: SpacingFactor = None,
    kspace: KSpaceFraction = None,
    axes: Axes = None,
    window: WindowOption = None,
    bundle: Annotated[list[str] | None, typer.Option(help="Bundles to score [default: volsr_cnn3d].")] = None,
    baseline: Annotated[
        list[Baseline] | None,
        typer.Option(
            help="Classical methods to score (repeat the option) [default: linear and cubic for thick "
            "slices; cubic and zero-filled fourier for --kspace].",
            show_default=False,
        ),
    ] = None,
    consistency: Annotated[
        bool, typer.Option("--consistency", help="Also score with data consistency.")
    ] = False,
    tta: Annotated[
        bool, typer.Option("--tta", help="Also score each bundle with test-time augmentation (+tta).")
    ] = False,
    adapt: Annotated[
        int,
        typer.Option(help="Also score bundles fine-tuned N steps on each degraded scan (+adapt).", min=0),
    ] = 0,
    uncertainty: Annotated[
        bool,
        typer.Option(
            "--uncertainty",
            help="Also make +tta's uncertainty map and score it against the actual error: Spearman, and "
            "its coverage as an error bar (share of voxels with |error| <= 1.96 x map), with a reliability "
            "diagram.",
        ),
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path("volsr_eval"),
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """Degrade reference scans, super-resolve them, and score volsr against classical interpolation.

    The degradation takes the options of `volsr degrade`, with the same defaults (`--axis` is
    required with `--thickness`/`--factor`); k-space truncation always writes the smaller matrix.
    With no degradation option: x4 boxcar thick slices along axis 2 (`--factor 4 --axis 2`, the
    quality bar). Writes per scan a JSON, a Markdown table and a PNG montage, plus summary.json /
    summary.md.
    """
    from volsr.api.evaluation import evaluate_files
    from volsr.transforms.protocol import QUALITY_BAR

    options = (thickness, factor, axis, profile, spacing_factor, kspace, axes, window)
    protocol = QUALITY_BAR if all(o is None for o in options) else _protocol(*options)
    summary = evaluate_files(
        [str(s) for s in scans],
        protocol,
        bundles=bundle or ["volsr_cnn3d"],
        out_dir=output,
        baselines=[b.value for b in baseline] if baseline else None,
        device=device,
        consistency=consistency,
        tta=tta,
        adapt=adapt,
        progress=progress,
        uncertainty=uncertainty,
    )
    from volsr.evaluation.report import summary_markdown

    typer.echo(summary_markdown(summary))
    typer.echo(f"reports in {output}/")


@app.command()
@_input_errors
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the result.")] = Path("."),
    bundle: Bundle = "volsr_cnn3d",
    device: Device = "auto",
) -> None:
    """Run the default bundle on the sample thick-slice scan shipped with volsr (no download)."""
    from volsr.demo import run_demo

    r = run_demo(output, bundle=bundle, device=device)
    shape_in = " x ".join(map(str, r["shape_in"]))
    shape_out = " x ".join(map(str, r["shape_out"]))
    typer.echo(
        f"{r['input'].name}: {shape_in} -> {shape_out} voxels in {r['seconds']:.1f} s on {r['device']}"
    )
    for written in (r["output"], r["sidecar"], r["png"]):
        typer.echo(f"wrote {written}")


def _exit_with(exc: BaseException) -> NoReturn:
    print(f"volsr: error: {one_line(exc, cli=True)}", file=sys.stderr)
    sys.exit(2)


def _terminate(signum: int, frame) -> NoReturn:
    """SIGTERM as SIGINT: unwind, so every writer's clean-up removes its temporary files, then exit
    with 128 + the signal's number (143)."""
    signal.signal(signum, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point (``volsr``): run the app; bad input ends in one stderr line and status 2;
    SIGINT ends with status 130 and SIGTERM with 143, each leaving no temporary file behind."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except _INPUT_ERRORS as exc:  # raised outside a command (commands report their own)
        _exit_with(exc)
    except (SystemExit, KeyboardInterrupt) as exc:
        code = exc.code if isinstance(exc, SystemExit) else 130
        if code in (130, 128 + signal.SIGTERM):  # interrupted: a background writer may still hold a file
            _leave_now(code)
        raise


def _leave_now(code: int) -> NoReturn:
    """Remove every temporary still being written (a cohort writes in a background thread, which a
    signal does not unwind) and exit without waiting for that thread."""
    from volsr.data.temporaries import discard_temporaries

    discard_temporaries()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
