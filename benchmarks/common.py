"""What both benchmark scripts share: the machine's description, volume loading, the Markdown report."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """CPU model, cores, memory, library versions and, when present, the GPU."""
    import monai

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def hardware_line(hw: dict) -> str:
    s = f"{hw['cpu']}, {hw['cores_usable']} cores, {hw.get('memory_gib', '?')} GiB, torch {hw['torch']}"
    s += f" ({hw['cpu_capability']}), MONAI {hw['monai']}"
    if hw.get("gpu"):
        s += f", GPU {hw['gpu']} (CUDA {hw['cuda']})"
    if hw.get("load_average"):
        s += f"; load average at start {hw['load_average'][0]:.2f}"
    return s


def command_line() -> str:
    """The command as a reader can type it from the repository root (``-m`` for a benchmark module)."""
    script, args = Path(sys.argv[0]), [shlex.quote(a) for a in sys.argv[1:]]
    if script.parent.resolve() == Path(__file__).resolve().parent and script.suffix == ".py":
        return " ".join(["python -m", f"benchmarks.{script.stem}", *args])
    return " ".join(["python", shlex.quote(display_path(script)), *args])


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load_volume(path: str | Path) -> torch.Tensor:
    """A channel-first float32 MetaTensor with its affine (``volsr.data.io`` when present, else MONAI)."""
    try:
        from volsr.data.io import load_image
    except ImportError:
        from monai.transforms import LoadImage

        return LoadImage(image_only=True, ensure_channel_first=True, dtype=np.float32)(str(path))
    return load_image(path).float()


def crop(image: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """The centred ``size`` crop of a channel-first image, its affine moved to the crop's first voxel."""
    from volsr.geometry.meta import affine_of, new_image

    shape = image.shape[1:]
    start = [max(0, (n - s) // 2) for n, s in zip(shape, size, strict=True)]
    stop = [min(n, a + s) for n, a, s in zip(shape, start, size, strict=True)]
    data = image[(slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))]
    data = data.as_tensor() if hasattr(data, "as_tensor") else data
    affine = affine_of(image).copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return new_image(data.contiguous(), image, affine)


def write_section(markdown: Path, name: str, body: str, title: str = "# volsr benchmarks") -> Path:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``markdown``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = markdown.read_text() if markdown.exists() else f"{title}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text)
    return markdown


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (for the reports)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
