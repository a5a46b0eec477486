"""Train a bundle for a fixed wall-clock budget and hand back its checkpoint: one resumable command
per call on a machine lent for minutes (the GPU machine of ``scripts/pack_for_gpu.py``).

The run lives in ``--run`` (a bundle folder: its ``configs/`` copied from ``--bundle`` on the first
call). A call resumes from ``--run/models/checkpoint.pt`` when there is one, trains towards
``--steps`` (the schedule's total, the same on every call; the first call starts from ``--init``)
and is stopped after ``--minutes``; the
engine writes ``checkpoint.pt`` atomically every ``checkpoint_every`` steps, so at most that many
steps are lost. ``models/`` is then copied to ``--out``. On the GPU machine (carry ``.gpu``)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_train.py --run .gpu/run --data .gpu/data/train \\
        --steps 30000 --minutes 8 --out "$OUT"

and back here, before the next call: ``cp <files_at>/models/* .gpu/run/models/``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train(run: str, data: str, steps: int, resume: bool, init: str | None, device: str) -> None:
    from volsr.api import train_bundle

    train_bundle(run, data=data, steps=steps, resume=resume, init=None if resume else init, device=device)


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "volsr_cnn3d")
    parser.add_argument("--run", type=Path, default=ROOT / ".gpu" / "run")
    parser.add_argument("--data", type=Path, default=ROOT / ".gpu" / "data" / "train")
    parser.add_argument("--steps", type=int, required=True, help="the schedule's total steps")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="weights the first call starts from [default: the bundle's models/model.pt]",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if not (args.run / "configs").is_dir():
        shutil.copytree(args.bundle / "configs", args.run / "configs")
    resume = (args.run / "models" / "checkpoint.pt").is_file()
    init = args.init or args.bundle / "models" / "model.pt"
    start = str(init) if init.is_file() else None
    context = multiprocessing.get_context("spawn")  # a fresh process: stopping it leaves nothing behind
    worker = context.Process(
        target=_train, args=(str(args.run), str(args.data), args.steps, resume, start, args.device)
    )
    worker.start()
    worker.join(args.minutes * 60)
    finished = not worker.is_alive() and worker.exitcode == 0
    if worker.is_alive():  # out of time: the last checkpoint.pt on disk is complete (written atomically)
        worker.terminate()
        worker.join()
    if not (args.run / "models" / "checkpoint.pt").is_file():
        print("stopped before the first checkpoint: nothing to hand back; give it more --minutes", flush=True)
        return False
    shutil.copytree(args.run / "models", args.out / "models", dirs_exist_ok=True)
    print(f"{'finished' if finished else 'stopped'}; models/ copied to {args.out / 'models'}", flush=True)
    return finished


if __name__ == "__main__":
    main()
