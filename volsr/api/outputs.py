"""Every output's name and how it is written: the NIfTI image, its uncertainty map, the JSON sidecar,
DICOM series folders and BIDS derivatives; :class:`OutputWriter` checks them all before the work
(:mod:`volsr.data.output_checks`) and writes them all or none after it. A sidecar's name is BIDS's
rule for inputs and outputs alike (:func:`volsr.data.io.sidecar_path`: ``scan_sr.nii.gz`` ->
``scan_sr.json``), which the readers share.

Example:
    >>> output_path_for("in/scan.nii.gz", "out")                 # out/scan_sr.nii.gz
    >>> uncertainty_path_for("out/scan_sr.nii.gz")                # out/scan_sr_uncertainty.nii.gz
    >>> bids_output_name("sub-01_T1w.nii.gz")                     # sub-01_desc-sr_T1w.nii.gz
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path, PurePath

import torch

from volsr import __version__
from volsr.api.request import OutputOptions
from volsr.data.dicom import list_series
from volsr.data.dicom_writer import check_dicom_output, is_written_series, save_dicom_series
from volsr.data.io import (
    check_output,
    discard_output,
    load_image,
    save_image,
    scan_stem,
    sidecar_path,
    write_sidecar,
)
from volsr.data.output_checks import check_outputs, input_files, output_kind
from volsr.errors import Option, VolsrInputError

__all__ = [
    "BIDS_DERIVATIVES",
    "output_path_for",
    "dicom_folder_for",
    "uncertainty_path_for",
    "series_outputs",
    "bids_output_name",
    "single_output",
    "write_bids_description",
    "recorded_path",
    "recorded_paths",
    "OutputWriter",
]

#: the BIDS derivatives folder a BIDS root's outputs go to by default
BIDS_DERIVATIVES = PurePath("derivatives") / "volsr"


def output_path_for(
    src: str | Path, out_dir: str | Path | None = None, suffix: str = "_sr", dicom: bool = False
) -> Path:
    """``<stem>_sr.nii.gz`` in ``out_dir`` (default: the current folder); with ``dicom`` the series
    folder ``<stem>_sr``."""
    name = f"{scan_stem(src)}{suffix}"
    return Path(out_dir or Path.cwd()) / (name if dicom else f"{name}.nii.gz")


def dicom_folder_for(path: str | Path) -> Path:
    """The DICOM series folder for a NIfTI output name: ``out/scan_sr.nii.gz`` -> ``out/scan_sr``."""
    p = Path(path)
    return p.with_name(scan_stem(p))


def _derivation(provenance: dict) -> str:
    """One line for DerivationDescription: what made the series, from :meth:`SuperResolver.provenance`."""
    made = provenance["GeneratedBy"]
    options = ["tta"] if made["Options"]["tta"] else []
    if (consistency := provenance.get("Consistency")) and consistency["model"]:  # what was applied
        options.append(f"{consistency['model']} consistency")
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
    found = list_series(folder)
    if not found:
        raise VolsrInputError(
            folder,
            "holds no DICOM series ({series_all} reads a DICOM folder)",
            series_all=Option("series='all'", "--series all"),
        )
    jobs = []
    for index, info in enumerate(found, start=1):
        number = info["number"] if info["number"] is not None else index
        label = re.sub(r"[^A-Za-z0-9_-]+", "_", info["description"]).strip("_")[:40]
        suffix = f"_{number}" + (f"_{label}" if label else "")
        jobs.append((info["uid"], output_path_for(folder, out_dir, suffix=f"{suffix}_sr")))
    if len({dst for _, dst in jobs}) < len(jobs):  # repeated SeriesNumber and description: use the index
        jobs = [(uid, output_path_for(folder, out_dir, f"_s{i}_sr")) for i, (uid, _) in enumerate(jobs, 1)]
    return jobs


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
_DICOM_SERIES = {
    "image": ("SR", 1000, ""),
    "uncertainty": ("uncertainty", 2000, "error bar (estimated SD of the error, in the source's units) of: "),
}

#: the DerivationDescription start of a map the bundle holds no calibration for
_UNCALIBRATED_MAP = "uncalibrated spread of the network's views (in the source's units, no error bar) of: "

#: what the sidecar says of the map
UNCERTAINTY_RECORD = {
    "Method": "standard deviation of the network over its symmetric views (4; 16 with tta), "
    "Gaussian-smoothed (1 voxel); where Options.uncertainty_calibrated, calibrated to the error's "
    "standard deviation by the bundle's models/uncertainty_calibration.json (docs/fidelity.md)",
    "Units": "the output's intensity units; calibrated: an estimated standard deviation of the output's "
    "error (|error| <= 1.96 x the map for about 95 % of voxels)",
}


def bids_output_name(name: str, suffix: str = ".nii.gz") -> str:
    """A BIDS derivative's name: ``sub-01_ses-1_T1w.nii.gz`` -> ``sub-01_ses-1_desc-sr_T1w.nii.gz``
    (``desc-sr`` replaces any ``desc`` entity and goes last, before the suffix)."""
    *entities, kind = scan_stem(name).split("_")
    kept = [e for e in entities if not e.startswith("desc-")]
    return "_".join([*kept, "desc-sr", kind]) + suffix


def single_output(scan: Path, output: Path | None, dicom: bool) -> Path:
    """The output of the one scan of a run: ``output`` itself when it names a file (with ``dicom``
    a series folder, new or volsr's own), else ``<stem>_sr`` inside it (default: here)."""
    kind = None if output is None else output_kind(output, dicom)  # refuses `-o out.png`
    if dicom:
        if output is not None and (not output.is_dir() or is_written_series(output)):
            return output
        return dicom_folder_for(output_path_for(scan, output))
    if kind == "file":
        return output
    return output_path_for(scan, output)


def recorded_path(path: str | os.PathLike) -> str:
    """A path as the sidecars and the manifest record it: absolute and resolved (symbolic links
    followed). Provenance must name the same file whichever folder the run started in, and the file
    that was read even if a link to it later points elsewhere; a relative path would mean nothing
    once the record is read from another folder."""
    return str(Path(path).resolve())


def recorded_paths(info: dict) -> dict:
    """``info`` (:meth:`volsr.api.resolver.SuperResolver.provenance`) with the paths it holds in the
    form :func:`recorded_path` gives: the ``Sources`` and the ``GeneratedBy`` bundle. The uncertainty
    map stays a bare ``File`` name: it is written beside the sidecar, and moves with it."""
    record = dict(info)
    if record.get("Sources"):
        record["Sources"] = [recorded_path(s) for s in record["Sources"]]
    made = record.get("GeneratedBy")
    if isinstance(made, dict) and made.get("Bundle"):
        record["GeneratedBy"] = made | {"Bundle": recorded_path(made["Bundle"])}
    return record


def write_bids_description(folder: Path) -> None:
    """``dataset_description.json`` of a BIDS derivatives folder, unless there is one."""
    path = folder / "dataset_description.json"
    if path.exists():
        return
    text = json.dumps({
        "Name": "volsr super-resolution", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "volsr", "Version": __version__}],
    }, indent=2) + "\n"  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".dataset_description.json.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)  # several processes may write it; each writes it whole


@dataclasses.dataclass(frozen=True)
class OutputWriter:
    """The steps :meth:`volsr.api.resolver.SuperResolver.predict_file` runs around the network, also
    used one at a time by pipelines that read ahead and write behind (:mod:`volsr.api.cohort`).

    ``options``: where and how to write (:class:`~volsr.api.request.OutputOptions`; its ``path`` is
    not used here: each call names its output); ``uncertainty``: the outputs also hold an
    uncertainty map, written beside the output (:func:`uncertainty_path_for`; float32, or a second
    DICOM series).
    """

    options: OutputOptions = dataclasses.field(default_factory=OutputOptions)
    uncertainty: bool = False

    def load_checked(
        self, src: str | Path, dst: str | Path | None = None, series_uid: str | None = None,
        volume: int | None = None,
    ) -> tuple[torch.Tensor, Path]:  # fmt: skip
        """Read ``src`` and check where its output goes (``dst``, default beside the current folder):
        everything that would be refused is refused before the work."""

        o = self.options
        image = load_image(src, series_uid=series_uid, volume=volume)
        if o.dicom:
            dst = Path(dst or output_path_for(src, dicom=True))
            self.check_not_inputs(dst, input_files([src], sidecar_path))
            dst = check_dicom_output(dst, image, o.overwrite, o.sidecar, o.modality, o.dtype)
            if self.uncertainty:
                map_dst = uncertainty_path_for(dst, dicom=True)
                check_dicom_output(map_dst, image, o.overwrite, False, o.modality)
            return image, dst
        dst = Path(dst or output_path_for(src))
        self.check_not_inputs(dst, input_files([src], sidecar_path))
        dst = check_output(dst, image, o.dtype, o.overwrite, o.sidecar)
        if self.uncertainty:
            check_output(uncertainty_path_for(dst), image, "float32", o.overwrite)
        return image, dst

    def outputs_of(self, dst: str | Path) -> tuple[list[Path], list[Path]]:
        """Every path written for the output ``dst``: ``(files, folders)``, the folders being DICOM
        series (the image's, the map's); the files the NIfTI image, map and the JSON sidecar."""
        dst, dicom = Path(dst), self.options.dicom
        images = [dst, *([uncertainty_path_for(dst, dicom)] if self.uncertainty else [])]
        sidecars = [sidecar_path(dst, folder=dicom)] if self.options.sidecar else []
        return (sidecars, images) if dicom else (images + sidecars, [])

    def check_not_inputs(self, dst: str | Path, inputs: dict[Path, Path]) -> None:
        """Refuse, before the work, an output of ``dst`` that would write over one of ``inputs``
        (:func:`volsr.data.output_checks.input_files`) or that the file system cannot name."""
        files, folders = self.outputs_of(dst)
        check_outputs(files, inputs)
        check_outputs(folders, inputs, folders=True)

    def write(self, outputs: dict[str, torch.Tensor], image: torch.Tensor, info: dict, dst: Path) -> Path:
        """Write ``outputs["image"]`` (made from ``image``; provenance ``info``) to ``dst``, its
        uncertainty map (``outputs["uncertainty"]``, when there is one) and its sidecar: all or none."""
        o = self.options
        written = self._save("image", outputs["image"], image, info, dst, o.dtype)
        extra: list[Path] = []
        try:
            if "uncertainty" in outputs:
                path = uncertainty_path_for(written, o.dicom)
                extra.append(
                    self._save("uncertainty", outputs["uncertainty"], image, info, path, "float32", written)
                )
                info = info | {"Uncertainty": {"File": path.name, **UNCERTAINTY_RECORD}}
            if o.sidecar:
                write_sidecar(written, recorded_paths(info), overwrite=o.overwrite, folder=o.dicom)
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
        o = self.options
        if not o.dicom:
            return save_image(out, dst, dtype=dtype, overwrite=o.overwrite)
        label, offset, derived = _DICOM_SERIES[kind]
        if kind == "uncertainty" and not info["GeneratedBy"]["Options"].get("uncertainty_calibrated"):
            derived = _UNCALIBRATED_MAP  # a raw spread is no error bar: say so where a PACS shows it
        return save_dicom_series(
            out, dst, reference=image, dtype=dtype, derivation=derived + _derivation(info),
            modality=o.modality, overwrite=o.overwrite, label=label, series_offset=offset, joins=joins,
        )  # fmt: skip
