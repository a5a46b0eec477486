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

import dataclasses
import functools
import os
import pydoc
import sys
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from volsr.errors import VolsrInputError, VolsrInputWarning

__all__ = ["app", "main"]

app = typer.Typer(
    name="volsr",
    help="3D super-resolution of medical volumes (MONAI).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)

#: errors that blame the user's input or options: reported in one line, exit status 2
_INPUT_ERRORS = (VolsrInputError, FileNotFoundError, ValueError)
_F = TypeVar("_F", bound=Callable)
_PYTHON_SHOW_WARNING = warnings.showwarning

Scan = Annotated[
    Path, typer.Argument(help="NIfTI, MGH, NRRD or MetaImage file, or a DICOM folder.", show_default=False)
]
Volume = Annotated[int | None, typer.Option("--volume", min=0, help="Volume to read from a 4-D image.")]
Series = Annotated[
    str | None, typer.Option("--series", help="SeriesInstanceUID, for a folder of several series.")
]
#: ``volsr infer --series all``: every series of a DICOM folder, each to its own output
ALL_SERIES = "all"


class Profile(str, Enum):
    boxcar = "boxcar"
    gaussian = "gaussian"


class PixelLoss(str, Enum):  # volsr.training.trainer.PIXEL_LOSSES, named here to keep torch out of --help
    l1 = "l1"
    mse = "mse"


class Window(str, Enum):
    none = "none"
    hamming = "hamming"
    tukey = "tukey"


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Input warnings as one ``volsr: warning: ...`` line; any other warning as Python shows it."""
    if issubclass(category, VolsrInputWarning):
        print(f"volsr: warning: {_error_line(message)}", file=sys.stderr)
    else:
        _PYTHON_SHOW_WARNING(message, category, filename, lineno, file, line)


def _input_errors(command: _F) -> _F:
    """Turn bad input raised inside ``command`` into ``volsr: error: ...`` on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():  # restores Python's own display afterwards
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except _INPUT_ERRORS as exc:
            typer.echo(f"volsr: error: {_error_line(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _format_info(d: dict) -> str:
    fov = " x ".join(f"{n * s:.4g}" for n, s in zip(d["shape"], d["spacing"], strict=True))
    rows = [
        ("file", d["path"]),
        ("shape", " x ".join(str(n) for n in d["shape"]) + " voxels"),
        ("spacing", " x ".join(f"{s:.4g}" for s in d["spacing"]) + " mm"),
        ("field of view", fov + " mm"),
        ("orientation", d["orientation"] + (" (sheared axes)" if d["sheared"] else "")),
        ("slices", d["slices"] or "thickness not stated (taken as contiguous)"),
        ("dtype", d["source_dtype"]),
        ("range", f"{d['min']:.6g} .. {d['max']:.6g} (mean {d['mean']:.6g})"),
    ]
    return "\n".join(f"{name + ':':<15}{value}" for name, value in rows)


@app.command()
@_input_errors
def info(scan: Scan, volume: Volume = None, series: Series = None) -> None:
    """Print a scan's grid (shape, spacing, orientation), data type and intensity range."""
    from volsr.data.io import describe, load_image

    typer.echo(_format_info(describe(load_image(scan, series_uid=series, volume=volume))))


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


@app.command()
@_input_errors
def degrade(
    scan: Scan,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output NIfTI file (.nii.gz).", show_default=False)
    ],
    thickness: Annotated[
        float | None, typer.Option(help="Slice thickness in mm (FWHM for gaussian).")
    ] = None,
    factor: Annotated[
        float | None, typer.Option(help="Slice thickness as a multiple of the voxel size.")
    ] = None,
    axis: Annotated[int | None, typer.Option(help="Array axis (0, 1 or 2) across the thick slices.")] = None,
    profile: Annotated[Profile | None, typer.Option(help="Slice profile [default: boxcar].")] = None,
    spacing_factor: Annotated[
        float | None,
        typer.Option(help="Slice spacing / thickness: >1 leaves gaps, <1 overlaps [default: 1]."),
    ] = None,
    kspace: Annotated[float | None, typer.Option(help="Fraction of k-space lines kept, in (0, 1].")] = None,
    axes: Annotated[
        list[str] | None, typer.Option(help="K-space axes: --axes 0,1 or --axes 0 --axes 1 [default: 0,1,2].")
    ] = None,
    window: Annotated[Window | None, typer.Option(help="K-space apodisation [default: none].")] = None,
    reduce_matrix: Annotated[
        bool, typer.Option("--reduce-matrix", help="Write the smaller k-space grid (same field of view).")
    ] = False,
    dtype: Annotated[str, typer.Option(help="float32, input (the scan's type) or a numpy type.")] = "float32",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    volume: Volume = None,
    series: Series = None,
) -> None:
    """Simulate a low-resolution acquisition: thick slices along one axis, or a k-space truncation.

    Thick slices: `--thickness MM` (or `--factor F`, F times the voxel size) along `--axis`, their
    centres `--spacing-factor` x thickness apart. K-space: `--kspace FRACTION` of the central lines
    along `--axes`. The output keeps the field of view; its affine follows the new grid.
    """
    slice_options = {"--axis": axis is not None, "--profile": profile, "--spacing-factor": spacing_factor}
    kspace_options = {"--axes": axes, "--window": window, "--reduce-matrix": reduce_matrix}
    _check_mode(thickness, factor, kspace, slice_options, kspace_options)
    from volsr.data.acquisition import SLICE_AXIS, sidecar_fields, slice_acquisition
    from volsr.data.io import check_output, load_image, save_image, write_sidecar
    from volsr.geometry.grids import voxel_spacing

    image = load_image(scan, series_uid=series, volume=volume)
    out = check_output(output, image, dtype, overwrite, sidecar=kspace is None and axis == SLICE_AXIS)
    if kspace is None:
        from volsr.transforms.slice_thickness import SliceThickness, thickness_for_factor
        from volsr.transforms.validation import check_positive, parse_axes

        if axis is None:
            raise ValueError("--axis is required with --thickness/--factor")
        axis = parse_axes(axis, "--axis")[0]
        if thickness is None:
            thickness = thickness_for_factor(image, axis, check_positive(factor, "--factor"))
        spacing = (
            None if spacing_factor is None else check_positive(spacing_factor, "--spacing-factor") * thickness
        )
        prof = (profile or Profile.boxcar).value
        transform = SliceThickness(axis, thickness, spacing, prof)
    else:
        from volsr.transforms.kspace import KSpaceTruncation

        win = (window or Window.none).value
        transform = KSpaceTruncation(kspace, axes=_parse_axes(axes), window=win, reduce_matrix=reduce_matrix)
    result = transform(image)
    save_image(result, out, dtype=dtype, overwrite=overwrite)
    shape = " x ".join(str(n) for n in result.shape[1:])
    spacing_mm = " x ".join(f"{s:.4g}" for s in voxel_spacing(result.affine))
    typer.echo(f"wrote {out}: {shape} voxels of {spacing_mm} mm")
    if kspace is None and (fields := sidecar_fields(result)) is not None:
        written = write_sidecar(out, fields, overwrite=overwrite)
        typer.echo(f"wrote {written}: {slice_acquisition(result).describe()}")


Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
Bundle = Annotated[str, typer.Option(help="Bundle name in bundles/ or a bundle folder.")]


def _output_for(scan: Path, output: Path | None, many: bool) -> Path:
    from volsr.api import output_path_for

    if output is None:
        return output_path_for(scan)
    if many or output.is_dir() or not output.name.endswith((".nii", ".nii.gz")):
        return output_path_for(scan, output)  # a folder: <stem>_sr.nii.gz inside it
    return output


@app.command()
@_input_errors
def infer(
    scans: Annotated[list[Path], typer.Argument(help="Scans: files or DICOM folders.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (one scan; with --dicom a new series folder) or an existing folder for the "
            "outputs [default: ./STEM_sr.nii.gz, ./STEM_sr with --dicom].",
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
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    consistency: Annotated[
        bool, typer.Option("--consistency", help="Project the output so re-degrading it gives the input.")
    ] = False,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average 16 flipped/swapped passes (16x slower, a little sharper).")
    ] = False,
    adapt: Annotated[
        int,
        typer.Option(
            help="Fine-tune on each scan's own in-plane detail for this many steps first (0: off; 500 is "
            "about 7 min on 2 CPU cores).",
            min=0,
        ),
    ] = 0,
    dtype: Annotated[str, typer.Option(help="input (the scan's type) or float32.")] = "input",
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
) -> None:
    """Super-resolve scans with a bundle; by default to isotropic voxels at the finest input spacing.

    The output keeps the field of view and the header; the input is never overwritten. With
    `--series all`, a series that cannot be used (a localizer, a 2-D image) is named on stderr and
    skipped, and the exit status is 2.
    """
    if spacing is not None and scale is not None:
        raise ValueError("--spacing and --scale are mutually exclusive; give one")
    from volsr.api import SuperResolver

    sr = SuperResolver.from_bundle(
        bundle,
        roi=roi,
        overlap=overlap,
        device=device,
        amp=amp,
        progress=progress,
        consistency=consistency,
        tta=tta,
        adapt=adapt,
    )
    failed = 0
    for scan, uid, dst in _infer_jobs(scans, output, series, dicom):
        if dst.exists() and skip_existing:
            typer.echo(f"skipped {scan}: {dst} exists")
            continue
        try:
            out = sr.predict_file(
                scan,
                dst,
                spacing=spacing,
                scale=scale,
                dtype=dtype,
                overwrite=overwrite,
                series_uid=uid,
                volume=volume,
                sidecar=sidecar,
                dicom=dicom,
                modality=modality,
            )
        except _INPUT_ERRORS as exc:
            if series != ALL_SERIES:
                raise
            # a study folder holds series volsr cannot use (localizers, 2-D): say which, go on
            typer.echo(f"volsr: error: series {uid}: {_error_line(exc)}", err=True)
            failed += 1
            continue
        typer.echo(f"wrote {out}")
    if failed:
        raise typer.Exit(2)


def _infer_jobs(
    scans: list[Path], output: Path | None, series: str | None, dicom: bool = False
) -> list[tuple[Path, str | None, Path]]:
    """``(scan, series UID, output path)`` per output: one per scan, or with ``--series all`` one
    per series of each DICOM folder (:func:`volsr.api.series_outputs`). With ``dicom`` each output
    is a series folder: ``--output`` itself for one scan (unless it is a folder of other files),
    else ``<stem>_sr`` inside it."""
    from volsr.api import dicom_folder_for, series_outputs

    if dicom:
        from volsr.data.dicom_writer import is_written_series

        one = output is not None and len(scans) == 1 and series != ALL_SERIES
        if one and (not output.is_dir() or is_written_series(output)):
            return [(scans[0], series, output)]  # the series folder itself (a new one, or volsr's own)
        return [(scan, uid, dicom_folder_for(dst)) for scan, uid, dst in _infer_jobs(scans, output, series)]
    if series != ALL_SERIES:
        return [(scan, series, _output_for(scan, output, len(scans) > 1)) for scan in scans]

    if output is not None and output.name.endswith((".nii", ".nii.gz")):
        raise ValueError("--series all writes one file per series: give --output a folder")
    jobs = []
    for scan in scans:
        if not scan.is_dir():
            raise ValueError(f"{scan}: --series all reads DICOM folders, and this is a file")
        jobs += [(scan, uid, dst) for uid, dst in series_outputs(scan, output)]
    return jobs


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
    from monai.bundle import ConfigParser

    from volsr.api import find_bundle_root

    root = find_bundle_root(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser["bundle_root"] = str(root)
    parser["resume"] = resume
    parser["device"] = device
    if data is not None:
        parser["data"] = data
    if steps is not None:
        parser["steps"] = steps
    known = {f.name for f in dataclasses.fields(pydoc.locate(parser["config"]["_target_"]))}
    overrides = {"lr": lr, "warmup": warmup, "pixel_loss": pixel_loss.value if pixel_loss else None}
    if resume:  # the schedule and loss the checkpoint was started with go on, unless told otherwise
        stored = _stored_config(root / "models" / "checkpoint.pt")
        for key, value in overrides.items():
            if value is None and key in known:
                overrides[key] = stored.get(key)
        if steps is None and "steps" in stored:
            parser["steps"] = stored["steps"]
    for key, value in overrides.items():
        if value is not None:
            if key not in known:
                flag = "--" + key.replace("_", "-")
                raise typer.BadParameter(f"{root}: its train config has no {key!r}", param_hint=flag)
            parser[f"config#{key}"] = value
    if init is not None:
        if not init.is_file():
            raise typer.BadParameter(f"{init}: no such checkpoint", param_hint="--init")
        parser["config#init"] = str(init)
    # training messages as plain lines; under torchrun every rank runs this command and rank 0 speaks
    from volsr.training.engine import console_logging

    with console_logging():
        results = parser.get_parsed_content("run")  # the config's "run" list: [train(...)]
    best = results[-1] if isinstance(results, list) else results
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"done; best validation: {best}")


def _stored_config(checkpoint: Path) -> dict:
    """The training config saved in ``checkpoint`` (``{}`` when there is none)."""
    if not checkpoint.is_file():
        return {}
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=False).get("config") or {}


@app.command()
@_input_errors
def evaluate(
    scans: Annotated[list[Path], typer.Argument(help="High-resolution reference scans.", show_default=False)],
    thickness: Annotated[float | None, typer.Option(help="Thick slices of this many mm.")] = None,
    factor: Annotated[
        float | None, typer.Option(help="Thick slices of F x the voxel size [default: 4].")
    ] = None,
    axis: Annotated[int, typer.Option(help="Axis of the thick slices.")] = 2,
    profile: Annotated[Profile, typer.Option(help="Slice profile.")] = Profile.boxcar,
    spacing_factor: Annotated[
        float, typer.Option(help="Slice spacing / thickness: >1 leaves gaps, <1 overlaps.")
    ] = 1.0,
    kspace: Annotated[float | None, typer.Option(help="Instead: keep this fraction of k-space.")] = None,
    axes: Annotated[list[str] | None, typer.Option(help="K-space axes, e.g. 0,1,2.")] = None,
    window: Annotated[Window, typer.Option(help="K-space window.")] = Window.none,
    bundle: Annotated[list[str] | None, typer.Option(help="Bundles to score [default: volsr_cnn3d].")] = None,
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
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path("volsr_eval"),
    device: Device = "auto",
) -> None:
    """Degrade reference scans, super-resolve them, and score volsr against linear and cubic B-spline.

    Writes per scan a JSON, a Markdown table and a PNG montage, plus summary.json / summary.md.
    """
    from volsr.api import evaluate_files
    from volsr.transforms.validation import check_positive

    if kspace is not None:
        if thickness is not None or factor is not None or spacing_factor != 1.0:
            raise ValueError("--kspace excludes --thickness/--factor/--spacing-factor")
        protocol = {
            "kind": "kspace",
            "fraction": kspace,
            "axes": list(_parse_axes(axes)),
            "window": window.value,
        }
    else:
        if thickness is not None and factor is not None:
            raise ValueError("--thickness and --factor are mutually exclusive; give one")
        protocol = {"kind": "thickness", "axis": axis, "profile": profile.value}
        protocol.update({"thickness": thickness} if thickness is not None else {"factor": factor or 4.0})
        if spacing_factor != 1.0:
            protocol["spacing_factor"] = check_positive(spacing_factor, "--spacing-factor")
    summary = evaluate_files(
        [str(s) for s in scans],
        protocol,
        bundles=bundle or ["volsr_cnn3d"],
        out_dir=output,
        device=device,
        consistency=consistency,
        tta=tta,
        adapt=adapt,
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
    typer.echo(f"wrote {r['output']}")
    typer.echo(f"wrote {r['png']}")


def _exit_with(exc: BaseException) -> NoReturn:
    print(f"volsr: error: {_error_line(exc)}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """Console entry point (``volsr``): run the app; bad input ends in one stderr line and status 2."""
    try:
        app()
    except _INPUT_ERRORS as exc:  # raised outside a command (commands report their own)
        _exit_with(exc)


if __name__ == "__main__":
    main()
