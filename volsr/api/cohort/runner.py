"""Running a cohort: read ahead, run the network, write behind; skip what is done; go on past bad scans.

One network, loaded once, runs the scans in order on the main thread while a small pool of reader
threads loads and checks the next ``prefetch`` scans and one writer thread writes the previous
outputs and their sidecars. Threads rather than DataLoader worker processes: reading (zlib,
SimpleITK) and the network (torch) release the GIL, and threads pass MetaTensors and per-scan
errors back without pickling. A scan that fails is named in one line on stderr, recorded in the
manifest and skipped. With a manifest, a scan whose output was made by the same weights and
options (:func:`run_key`, and its sidecar's ``GeneratedBy``) is not made again.

Example:
    >>> request = InferRequest(output=OutputOptions(path=Path("out")))
    >>> result = infer_cohort(["cohort/"], request=request, bundle="volsr_cnn3d")
    >>> result.counts["failed"], result.manifest
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from volsr.api.bundle_search import DEFAULT_BUNDLE, WEIGHTS, bundle_weights, locate_bundle
from volsr.api.cohort.inputs import (
    ALL_SERIES,
    LIST_SUFFIXES,
    OUTPUT_FOLDER,
    SERIES_ALL,
    Job,
    default_output_folder,
    discover,
    plan_outputs,
)
from volsr.api.cohort.manifest import (
    MANIFEST,
    ManifestWriter,
    latest_done,
    merge_parts,
    part_name,
    read_manifest,
    read_records,
    status_counts,
)
from volsr.api.cohort.sharding import (
    SHARD,
    Process,
    ProcessGroup,
    parse_shard,
    rank_device,
    split,
    torchrun_process,
)
from volsr.api.cohort.summary import scan_summary
from volsr.api.outputs import OutputWriter, recorded_path, single_output, write_bids_description
from volsr.api.request import InferRequest, ResolverOptions
from volsr.api.resolver import SuperResolver
from volsr.data.io import sidecar_path
from volsr.data.output_checks import check_outputs, input_files, output_kind
from volsr.errors import Option, VolsrInputError, VolsrOptionError, one_line

__all__ = ["CohortResult", "run_jobs", "run_key", "generated_by", "infer_cohort"]


@dataclass
class CohortResult:
    """What a run did: ``counts`` by status (``done``, ``skipped``, ``exists``, ``failed``; for
    rank 0 of a torchrun job, over all ranks), the number of ``jobs`` and the ``manifest`` file."""

    counts: Counter = field(default_factory=Counter)
    jobs: int = 0
    manifest: Path | None = None
    process: Process = field(default_factory=Process)

    @property
    def reports(self) -> bool:
        """Whether this process reports the run's outcome (exit status): every process but torchrun's
        ranks other than 0, whose scans rank 0 counts."""
        return self.process.kind != "rank" or self.process.index == 0


def generated_by(sr: SuperResolver) -> dict:
    """The ``GeneratedBy`` that ``sr`` writes into its outputs' sidecars, without the device (the
    same output whichever GPU made it). Read from :meth:`SuperResolver.provenance` itself, on a
    one-voxel probe, so that it stays what the sidecars say."""
    import torch
    from monai.data import MetaTensor

    probe = MetaTensor(torch.zeros(1, 1, 1, 1), affine=torch.eye(4, dtype=torch.float64))
    made = json.loads(json.dumps(sr.provenance("", probe, probe)["GeneratedBy"], default=str))
    made.get("Options", {}).pop("device", None)
    return made


def _file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_key(sr: SuperResolver, request: InferRequest, weights: Path | None = None) -> str:
    """A fingerprint of what makes an output: the weights file's SHA-256 (``weights``), the
    resolver's ``GeneratedBy`` (:func:`generated_by`) and the request's options."""
    made = {"weights": _file_digest(weights), "made_by": generated_by(sr), "request": request.fingerprint()}
    if sr.kspace_resolver is not None:  # the weights a reduced k-space matrix is handed to make outputs too
        handed = sr.kspace_resolver
        made["kspace"] = [
            _file_digest(bundle_weights(handed.info["bundle"])),
            generated_by(handed),
        ]
    return hashlib.sha256(json.dumps(made, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _job_error_line(exc: BaseException, job: Job, cli_words: bool = False) -> str:
    """One line naming the scan (and series) and the problem; the settings it names in the command
    line's words with ``cli_words`` (:func:`volsr.errors.one_line`)."""
    if isinstance(exc, VolsrInputError):  # names its own file: the scan, or the output it could not write
        text = one_line(exc, cli=cli_words)
        return f"series {job.series_uid}: {text}" if job.series_uid else text
    text = one_line(exc, cli=cli_words)
    if not isinstance(exc, (FileNotFoundError, ValueError)):  # not the user's input: say what broke
        text = f"{type(exc).__name__}: {text}"
    if str(job.src) not in text:
        text = f"{job.src}: {text}"
    return f"series {job.series_uid}: {text}" if job.series_uid else text


class _Runner:
    """The per-scan steps and their records; :func:`run_jobs` is the loop."""

    def __init__(
        self, sr, request, manifest, done_before, key, expected, rank, echo, error, bundle_origin=None,
        cli_words=False,
    ) -> None:  # fmt: skip
        self.sr, self.request, self.manifest, self.key = sr, request, manifest, key
        self.done_before, self.expected, self.rank = done_before, expected, rank
        self.echo, self.error = echo, error
        self.bundle_origin, self.cli_words = bundle_origin, cli_words
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, job: Job, status: str, seconds: float | None = None, error: str | None = None) -> None:
        with self._lock:
            self.counts[status] += 1
        if self.manifest is not None:
            self.manifest.write({
                "input": recorded_path(job.src), "series": job.series_uid,
                "output": recorded_path(job.dst), "status": status,
                "seconds": None if seconds is None else round(seconds, 3), "error": error,
                "key": self.key, "rank": self.rank,
            })  # fmt: skip

    def fail(self, job: Job, exc: BaseException, seconds: float | None = None) -> None:
        line = _job_error_line(exc, job, self.cli_words)
        self.error(line)
        self.record(job, "failed", seconds, line)

    def _sidecar_agrees(self, job: Job) -> bool:
        if not self.request.output.sidecar:
            return True
        try:
            info = json.loads(sidecar_path(job.dst, folder=self.request.output.dicom).read_text())
            made = dict(info["GeneratedBy"])
            made["Options"] = {k: v for k, v in made["Options"].items() if k != "device"}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return made == self.expected

    def plan(self, job: Job) -> bool | None:
        """``None``: nothing to do (recorded); else whether the run may replace an existing output."""
        # the output's path resolved, or absolute as given (the form some manifests hold)
        done = self.done_before.get(recorded_path(job.dst)) or self.done_before.get(os.path.abspath(job.dst))
        exists = job.dst.exists()
        if self.manifest is not None and not self.request.output.overwrite and done and exists:
            if done.get("key") == self.key and self._sidecar_agrees(job):
                self.echo(f"skipped {job.src}: {job.dst} was made with the same bundle and options")
                self.record(job, "skipped")
                return None
        if self.request.output.skip_existing and exists:
            self.echo(f"skipped {job.src}: {job.dst} exists")
            self.record(job, "exists")
            return None
        # an output this folder's manifest says volsr made is replaced; any other only with overwrite
        return self.request.output.overwrite or (done is not None and exists)

    def writer(self, overwrite: bool) -> OutputWriter:
        """The steps :meth:`SuperResolver.predict_file` runs around the network, for this request."""
        options = dataclasses.replace(self.request.output, overwrite=overwrite)
        return OutputWriter(options, self.sr.uncertainty)

    def read(self, job: Job, overwrite: bool):
        """Load the scan and check its output, before the work."""
        start = time.perf_counter()
        image, dst = self.writer(overwrite).load_checked(
            job.src, job.dst, job.series_uid, self.request.source.volume
        )
        return image, dst, time.perf_counter() - start

    def run(self, job: Job, image):
        return self.sr.resolve_scan(job.src, image, spacing=self.request.spacing, scale=self.request.scale)

    def write(self, job: Job, dst: Path, image, outputs, info: dict, overwrite: bool, seconds: float) -> None:
        """Write the outputs and the sidecar; record the outcome and echo the scan's summary
        (:func:`volsr.api.cohort.summary.scan_summary`)."""
        start = time.perf_counter()
        writer = self.writer(overwrite)
        try:
            written = writer.write(outputs, image, info, dst)
        except Exception as exc:  # noqa: BLE001 - one scan's failure must not stop the cohort
            self.fail(job, exc, seconds + time.perf_counter() - start)
            return
        seconds += time.perf_counter() - start
        files, folders = writer.outputs_of(written)
        self.echo(
            scan_summary(job.src, info, seconds, [*folders, *files], self.bundle_origin, job.series_uid)
        )
        self.record(job, "done", seconds)


def _stderr_line(line: str) -> None:
    print(f"volsr: error: {line}", file=sys.stderr, flush=True)


def run_jobs(
    sr: SuperResolver,
    jobs: Sequence[Job],
    *,
    request: InferRequest = InferRequest(),
    manifest: ManifestWriter | None = None,
    done_before: Mapping[str, Mapping] | None = None,
    key: str = "",
    rank: int = 0,
    prefetch: int = 2,
    echo: Callable[[str], None] = print,
    error: Callable[[str], None] = _stderr_line,
    bundle_origin: str | None = None,
    cli_words: bool = False,
) -> Counter:
    """Super-resolve ``jobs`` in order with the resolver ``sr``; returns the count of each status.

    Args:
        sr: a :class:`~volsr.api.resolver.SuperResolver` (loaded once, used for every scan).
        jobs: the outputs to make (:func:`volsr.api.cohort.inputs.plan_outputs`).
        request: the options of each output (its ``resolver`` is ``sr``'s; its output path the jobs').
        manifest: where each scan's record goes (``None``: none is kept, and nothing is resumed).
        done_before: the last ``done`` record of each output path from earlier runs
            (:func:`volsr.api.cohort.manifest.latest_done`); an output made with the same ``key`` is skipped.
        key: this run's :func:`run_key`.
        rank: the process's index, recorded.
        prefetch: scans read ahead of the one running (reader threads); 0 reads each when its turn comes.
        echo: receives each written scan's summary (a few lines: grids, time, device and precision,
            bundle, consistency, the files written) and ``skipped ...`` lines.
        error: receives one line per failed scan.
        bundle_origin: how ``sr``'s bundle was found, for the summary
            (:meth:`volsr.api.bundle_search.BundleLocation.describe`).
        cli_words: the error lines name settings as the command line does (``--overwrite``), not as
            Python does (``overwrite=True``).
    """
    expected = generated_by(sr) if manifest is not None and request.output.sidecar else None
    runner = _Runner(
        sr, request, manifest, dict(done_before or {}), key, expected, rank, echo, error,
        bundle_origin, cli_words,
    )  # fmt: skip
    todo = [(job, overwrite) for job in jobs if (overwrite := runner.plan(job)) is not None]
    write_slots = threading.BoundedSemaphore(2)  # outputs held in memory while they wait to be written
    readers = ThreadPoolExecutor(max(prefetch, 1), thread_name_prefix="volsr-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="volsr-write")
    interrupted = False
    try:
        pending: deque = deque()
        upcoming = iter(todo)

        def read_ahead(depth: int) -> None:
            while len(pending) < depth and (item := next(upcoming, None)) is not None:
                pending.append((item, readers.submit(runner.read, *item)))

        def written(job, *args) -> None:
            try:
                runner.write(job, *args)
            finally:
                write_slots.release()

        read_ahead(max(prefetch, 1))
        while pending:
            (job, overwrite), reading = pending.popleft()
            read_ahead(prefetch)  # the next scans load while this one runs
            start = time.perf_counter()
            try:
                image, dst, read_seconds = reading.result()
                start = time.perf_counter()
                out, info = runner.run(job, image)
            except Exception as exc:  # noqa: BLE001 - one scan's failure must not stop the cohort
                runner.fail(job, exc, time.perf_counter() - start)
                read_ahead(max(prefetch, 1))
                continue
            seconds = read_seconds + time.perf_counter() - start
            write_slots.acquire()
            writer.submit(written, job, dst, image, out, info, overwrite, seconds)
            read_ahead(max(prefetch, 1))
    except (KeyboardInterrupt, SystemExit):  # a signal: the CLI removes the writer's temporary, leaves
        interrupted = True
        raise
    finally:
        readers.shutdown(wait=not interrupted, cancel_futures=interrupted)
        writer.shutdown(wait=not interrupted, cancel_futures=interrupted)
    return runner.counts


def _check_outputs_spare_inputs(
    jobs: Sequence[Job], inputs: Sequence[str | os.PathLike], scans, writer: OutputWriter, folder: Path | None
) -> None:
    """Before any work: no output of any job (image, uncertainty map, sidecar, DICOM series, the
    manifest) is a file the run reads (any scan, its sidecar, a DICOM file, a list file), and
    every name fits the file system (:mod:`volsr.data.output_checks`)."""
    listed = [p for p in map(Path, inputs) if p.is_file() and p.name.lower().endswith(LIST_SUFFIXES)]
    protected = input_files([s.path for s in scans], sidecar_path) | {p.resolve(): p for p in listed}
    for job in jobs:
        writer.check_not_inputs(job.dst, protected)
    if folder is not None:
        check_outputs([folder / MANIFEST, folder / "dataset_description.json"], protected)


def infer_cohort(
    inputs: Sequence[str | os.PathLike],
    *,
    request: InferRequest = InferRequest(),
    bundle: str | Path = DEFAULT_BUNDLE,
    shard: str | None = None,
    prefetch: int = 2,
    echo: Callable[[str], None] = print,
    error: Callable[[str], None] = _stderr_line,
    cli_words: bool = False,
) -> CohortResult:
    """Super-resolve every scan in ``inputs`` (:func:`volsr.api.cohort.inputs.discover`) with one bundle.

    One scan named alone goes to ``request.output.path`` (a file, or a folder for ``<stem>_sr``); a
    cohort goes to that folder, each output at its input's relative path (a BIDS dataset's by
    default to its ``derivatives/volsr``), with ``manifest.jsonl`` recording every scan. Under
    torchrun the scans are split over the ranks (each on its own GPU where there is CUDA) and rank 0
    merges the manifest; ``shard="I/N"`` runs the I-th of N parts (a job array) into its own
    manifest part.

    Args:
        inputs: scan files, DICOM series folders, folders of scans, list files, BIDS roots.
        request: what to read (``source.series``: a SeriesInstanceUID, or ``"all"`` for every series
            of each DICOM folder), the grid, the resolver's options (``resolver``; its ``device``:
            ``"auto"``, ``"cpu"``, ``"cuda"``, torchrun ranks taking ``cuda:LOCAL_RANK``) and the
            outputs (:class:`~volsr.api.request.InferRequest`).
        bundle: bundle name or folder (:meth:`volsr.api.resolver.SuperResolver.from_bundle`).
        shard: ``"I/N"``: this process's part of the cohort.
        prefetch: scans read ahead (:func:`run_jobs`).
        echo: receives each written scan's summary (:func:`run_jobs`).
        error: receives one line per failed scan.
        cli_words: the error lines name settings as the command line does (:func:`run_jobs`).

    Raises:
        ValueError: conflicting options, a NIfTI file name as the folder of a cohort, several
            processes without an output folder; :class:`VolsrInputError` for inputs that hold no scans
            or outputs that would collide (before any work).
    """
    output, series, dicom = request.output.path, request.source.series, request.output.dicom
    resolver = request.resolver or ResolverOptions()
    running = torchrun_process()
    if running is not None and shard is not None:
        raise VolsrOptionError(
            "{shard} splits a cohort without torchrun; under torchrun the ranks split it", shard=SHARD
        )
    process = running or (parse_shard(shard) if shard is not None else Process())
    scans = discover(inputs)
    if len(scans) == 1 and scans[0].relative is None and series != ALL_SERIES:
        dst = single_output(scans[0].path, output, dicom)
        jobs, folder = [Job(scans[0].path, dst, series)], None
    else:
        if output is not None and output_kind(output) == "file":  # refuses `-o out.png` too
            whole = "{all}" if series == ALL_SERIES else "a cohort"
            raise VolsrOptionError(
                whole + f" writes one file per {'series' if series == ALL_SERIES else 'scan'}: give "
                "{output} a folder",
                all=SERIES_ALL, output=Option("OutputOptions(path=...)", "--output"),
            )  # fmt: skip
        folder = output or default_output_folder(scans)
        plan_outputs(scans, folder, series, dicom, expand_series=False)  # every process checks all
        jobs = plan_outputs(split(scans, process), folder, series, dicom)
    if process.count > 1 and folder is None:
        raise VolsrOptionError(
            "a cohort split over processes (torchrun, {shard}) needs an output folder: {out}",
            shard=SHARD, out=OUTPUT_FOLDER,
        )  # fmt: skip
    writer = OutputWriter(request.output, resolver.uncertainty)
    _check_outputs_spare_inputs(jobs, inputs, scans, writer, folder)

    device = rank_device(resolver.device, process)
    group = ProcessGroup(device) if process.kind == "rank" else None
    try:
        location = locate_bundle(bundle, WEIGHTS)
        root = location.root
        sr = SuperResolver.from_bundle(root, options=dataclasses.replace(resolver, device=device))
        result = CohortResult(jobs=len(jobs), process=process)
        manifest, done_before, key = None, {}, ""
        if folder is not None:
            if any(s.bids_root is not None for s in scans):
                write_bids_description(folder)
            done_before = latest_done(read_manifest(folder))
            own = part_name(process.kind, process.index, process.count)
            name = MANIFEST if process.kind == "single" else own
            manifest = ManifestWriter(folder / name)
            result.manifest = folder / (MANIFEST if process.kind != "shard" else name)
            key = run_key(sr, request, bundle_weights(root))
        result.counts = run_jobs(
            sr, jobs, request=request, manifest=manifest, done_before=done_before, key=key,
            rank=process.index, prefetch=prefetch, echo=echo, error=error,
            bundle_origin=location.describe(), cli_words=cli_words,
        )  # fmt: skip
        if group is not None:
            group.barrier()  # every rank's part is complete
            if process.index == 0:
                parts = [folder / part_name("rank", r, process.count) for r in range(process.count)]
                this_run = [r for p in parts if p.is_file() for r in read_records(p)]
                result.counts = status_counts(this_run)
                result.jobs = len(this_run)
                merge_parts(folder, parts)
    finally:
        if group is not None:
            group.close()
    return result
