"""Memory a super-resolution run needs, estimated before anything is allocated, and the memory there is.

The dominant terms, per output voxel (:func:`volsr.inference.sliding_window.super_resolve` with the
volume on the CPU, float32 buffers):

* the cubic-spline input on the output grid (4 bytes), MONAI's count map (4) and the transient copies
  around them (moving the coarse axis last, MONAI's padding and weights): :data:`FIXED_BYTES_PER_VOXEL`;
* per output channel (2 with an uncertainty map: the mean and the spread of the views): MONAI's blended
  output (4), its contiguous de-normalised copy (4), the image handed back (4), the written copy (4)
  and MONAI's in-place division and crop (4): :data:`CHANNEL_BYTES_PER_VOXEL`;
* with an uncertainty map, its smoothing (a padded copy and two filtered passes):
  :data:`SMOOTHING_BYTES_PER_VOXEL`;
* writing an integer type: the values rounded and clipped in float64 (two 8-byte arrays,
  :func:`volsr.data.stored_values.in_integer_range`) plus the stored array;
* one window's live activations: :data:`LIVE_ACTIVATIONS` feature maps of the network's width.

On a GPU with room for the volume (:func:`volsr.inference.sliding_window.volume_device`) the host holds
only the output and its written copy. The constants bound the peak resident memory measured for
``super_resolve`` + ``save_image`` on 128^3 to 256^3 outputs with a 4-feature network (``python
benchmarks/memory_estimate.py --size N``: 29 to 49 bytes per voxel with one channel outside the windows,
a zero-filled Fourier input included, 68 with an uncertainty map). The estimate takes the upper end: its
purpose is to refuse a grid that cannot fit (a ``--spacing 0.01`` typo asks for terabytes), not to pack
a machine to the last byte.

Hand-written: neither MONAI nor torch estimates a run's peak host memory before it starts.

Example:
    >>> need = estimate_peak(out_voxels=256**3, channels=1, stored_itemsize=2, window_bytes=0)
    >>> need / 2**30   # about 0.6 GiB
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from volsr.errors import Option

__all__ = [
    "FIXED_BYTES_PER_VOXEL",
    "CHANNEL_BYTES_PER_VOXEL",
    "SMOOTHING_BYTES_PER_VOXEL",
    "INTEGER_WRITE_BYTES_PER_VOXEL",
    "LIVE_ACTIVATIONS",
    "estimate_peak",
    "window_bytes",
    "available_memory",
    "parse_size",
    "format_size",
    "memory_refusal",
    "REFUSAL_OPTIONS",
]

FIXED_BYTES_PER_VOXEL = 16
CHANNEL_BYTES_PER_VOXEL = 20
SMOOTHING_BYTES_PER_VOXEL = 12
#: float64 rounding and clipping of an integer output (the input of ``np.clip`` and its result)
INTEGER_WRITE_BYTES_PER_VOXEL = 16
#: feature maps alive per window voxel while the network runs (as in the sliding window's budget)
LIVE_ACTIVATIONS = 5

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def window_bytes(window_voxels: int, features: int, element_bytes: int) -> int:
    """Bytes of one window's live activations: ``window_voxels`` x (``features`` + 1) channels x
    :data:`LIVE_ACTIVATIONS` maps x ``element_bytes`` (4 for float32, 2 for bfloat16).

    The one channel beside the features stands for the window's single-channel tensors (its input,
    padded copy, residual and output), which dominate for a narrow network
    (``python benchmarks/memory_estimate.py --size 128``: a 4-feature network's window measured 24
    floats per voxel)."""
    return int(window_voxels) * (int(features) + 1) * LIVE_ACTIVATIONS * int(element_bytes)


def estimate_peak(
    out_voxels: int,
    channels: int = 1,
    stored_itemsize: int = 4,
    integer_output: bool = False,
    window_bytes: int = 0,
    volume_on_host: bool = True,
) -> int:
    """Peak host bytes of one scan's run: the larger of the inference phase and the writing phase.

    Args:
        out_voxels: voxels of the output grid.
        channels: output volumes made together (2 with an uncertainty map, which is also smoothed).
        stored_itemsize: bytes per voxel of the written type.
        integer_output: the output is written as an integer type (rounded and clipped in float64).
        window_bytes: one window's activations (:func:`window_bytes`), when the windows run on the host.
        volume_on_host: the whole-volume buffers live on the host (False: on a GPU with room).

    Returns:
        Bytes, an upper estimate of the resident memory the run adds.
    """
    v = int(out_voxels)
    outputs = v * 4 * channels  # the float32 outputs handed back, held while they are written
    if volume_on_host:
        smoothing = SMOOTHING_BYTES_PER_VOXEL if channels > 1 else 0
        inference = v * (FIXED_BYTES_PER_VOXEL + CHANNEL_BYTES_PER_VOXEL * channels + smoothing)
        inference += window_bytes
    else:
        inference = outputs  # copied back from the GPU
    write = outputs + v * (stored_itemsize + (INTEGER_WRITE_BYTES_PER_VOXEL if integer_output else 0))
    return max(inference, write)


def _cgroup_room() -> int | None:
    """Bytes a cgroup v2 memory limit still allows this process (containers, SLURM), or ``None``."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def available_memory() -> int | None:
    """Bytes of memory available to this process now: psutil's ``available`` where psutil is
    installed, else ``MemAvailable`` of ``/proc/meminfo``, lowered to a cgroup's limit; ``None``
    where neither can be read."""
    try:
        import psutil

        free: int | None = int(psutil.virtual_memory().available)
    except ImportError:
        free = None
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        free = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            free = None
    room = _cgroup_room()
    if free is None or room is None:
        return free if room is None else room
    return min(free, room)


def parse_size(text: str, option: str = "size") -> int:
    """``"8G"``, ``"500M"``, ``"1.5GiB"``, ``"2048"`` (bytes) -> bytes (binary units, as ``free -h``).

    Raises:
        ValueError: not a positive size; the message names ``option``.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text), flags=re.IGNORECASE)
    value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else math.nan
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{option} takes a memory size such as 8G, 500M or 1.5GiB; got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    """Bytes as a short binary size: ``1.5 GiB``, ``512 MiB``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


#: the settings a :func:`memory_refusal` names, as fields of :class:`volsr.errors.VolsrInputError`
REFUSAL_OPTIONS = {
    "max_memory": Option("max_memory=", "--max-memory"),
    "grid": Option("spacing= / scale=", "--spacing / --scale"),
}


def memory_refusal(
    need: int, limit: int | None, shape: Sequence[int], spacing_mm: Sequence[float], limit_given: bool
) -> str | None:
    """The one-line problem when ``need`` bytes exceed ``limit`` (``None``: unknown, no refusal),
    naming both numbers and the output grid ``shape`` of ``spacing_mm`` voxels; else ``None``. The
    settings it names are fields (``{max_memory}``, ``{grid}``) of :data:`REFUSAL_OPTIONS`, for
    :class:`volsr.errors.VolsrInputError` to spell as the caller writes them."""
    if limit is None or need <= limit:
        return None
    grid = " x ".join(str(int(n)) for n in shape)
    mm = " x ".join(f"{s:.4g}" for s in spacing_mm)
    where = "the {max_memory} limit" if limit_given else "available now ({max_memory} sets the limit)"
    return (
        f"the output grid of {grid} voxels ({mm} mm) needs about {format_size(need)} of memory; "
        f"{format_size(limit)} is {where}; ask for a coarser grid with {{grid}}"
    )
