"""The memory estimate's arithmetic against values worked out by hand, sizes parsed and printed, and the
memory available read from /proc/meminfo when psutil is absent."""

from __future__ import annotations

import builtins
import io

import pytest

from volsr.errors import VolsrInputError, one_line
from volsr.inference import memory
from volsr.inference.memory import (
    CHANNEL_BYTES_PER_VOXEL,
    FIXED_BYTES_PER_VOXEL,
    INTEGER_WRITE_BYTES_PER_VOXEL,
    REFUSAL_OPTIONS,
    SMOOTHING_BYTES_PER_VOXEL,
    estimate_peak,
    format_size,
    memory_refusal,
    parse_size,
    window_bytes,
)


def test_the_constants_are_the_terms_the_module_names():
    # spline input 4 + count map 4 + transient copies 8; per channel 5 float32 copies; smoothing 3
    assert (FIXED_BYTES_PER_VOXEL, CHANNEL_BYTES_PER_VOXEL, SMOOTHING_BYTES_PER_VOXEL) == (16, 20, 12)
    assert INTEGER_WRITE_BYTES_PER_VOXEL == 2 * 8  # rounded and clipped in float64


def test_window_bytes_is_voxels_times_channels_times_live_maps_times_element():
    # features + the window's single-channel tensors, 5 live maps each
    assert window_bytes(160**3, 32, 4) == 160**3 * 33 * 5 * 4  # 2.7 GB: a 160^3 float32 window
    assert window_bytes(64**3, 16, 2) == 64**3 * 17 * 5 * 2


@pytest.mark.parametrize(
    "voxels, channels, itemsize, integer, window, on_host, expected",
    [
        # one channel on the host: inference (16 + 20) B/voxel beats writing int16 (4 + 2 + 16)
        (1000, 1, 2, True, 0, True, 36_000),
        (1000, 1, 2, True, 5_000, True, 41_000),  # plus one window's activations
        # uncertainty: 16 + 2 x 20 + 12 smoothing = 68 B/voxel
        (1000, 2, 4, False, 0, True, 68_000),
        # volume on a GPU: the host holds the outputs (4 B/voxel) and writes int16 via float64: 4+2+16
        (1000, 1, 2, True, 10**9, False, 22_000),
        (1000, 1, 4, False, 0, False, 8_000),  # float32: the output and its written copy
        # the spacing typo: 1600 x 1200 x 1000 voxels at 36 B/voxel
        (1600 * 1200 * 1000, 1, 2, True, 0, True, 69_120_000_000),
    ],
)
def test_estimate_peak_against_hand_worked_values(
    voxels, channels, itemsize, integer, window, on_host, expected
):
    assert estimate_peak(voxels, channels, itemsize, integer, window, on_host) == expected


def test_the_estimate_grows_linearly_with_the_grid():
    one = estimate_peak(10**6)
    assert estimate_peak(8 * 10**6) == 8 * one  # halving the spacing: 8x the voxels, 8x the memory


@pytest.mark.parametrize(
    "text, expected",
    [("8G", 8 * 2**30), ("500M", 500 * 2**20), ("1.5GiB", 3 * 2**29), ("2048", 2048), ("4 kb", 4096),
     ("1T", 2**40), ("16g", 16 * 2**30)],
)  # fmt: skip
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "0.1", "8X", "G"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="--max-memory takes a memory size"):
        parse_size(text, "--max-memory")


def test_format_size():
    assert format_size(1.5 * 2**30) == "1.5 GiB"
    assert format_size(69_120_000_000) == "64.4 GiB"
    assert format_size(512 * 2**20) == "512 MiB"
    assert format_size(100) == "100 B"


def test_memory_refusal_names_both_numbers_and_the_grid():
    line = memory_refusal(3 * 2**30, 2**30, (1600, 1200, 1000), (0.01, 0.01, 0.01), limit_given=True)
    assert line.startswith("the output grid of 1600 x 1200 x 1000 voxels (0.01 x 0.01 x 0.01 mm) needs")
    assert "about 3 GiB of memory; 1 GiB is the {max_memory} limit" in line
    worded = VolsrInputError("scan.nii.gz", line, **REFUSAL_OPTIONS)
    assert "1 GiB is the max_memory= limit; ask for a coarser grid with spacing= / scale=" in str(worded)
    assert "1 GiB is the --max-memory limit; ask for a coarser grid with --spacing / --scale" in one_line(
        worded, cli=True
    )
    assert memory_refusal(2**30, 2**30, (1, 1, 1), (1, 1, 1), False) is None  # fits exactly
    assert memory_refusal(2**40, None, (1, 1, 1), (1, 1, 1), False) is None  # unknown: no refusal


def test_available_memory_reads_meminfo_without_psutil(monkeypatch):
    real_import, real_open = builtins.__import__, builtins.open

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            return io.StringIO("MemTotal:       16000000 kB\nMemAvailable:    1234567 kB\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available_memory() == 1234567 * 1024
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 10**9)  # a container's limit is lower
    assert memory.available_memory() == 10**9
