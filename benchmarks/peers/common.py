"""What the peer runners share: the benchmark's data layout, the CPU budget, the run record.

Runs inside the peers' own environments (``.venv-stardist``, ``.venv-cellpose``): NumPy and
tifffile only, never microseg. The layout is the one ``benchmarks/real_data.py`` writes::

    WORK/split.json                    {"train": [...], "val": [...], "test": [...], ...}
    WORK/data/trainval/{images,labels}/<stem>.tif
    WORK/data/test/images/<stem>.tif

and a runner writes ``WORK/peers/<tool>/predictions/<stem>.tif`` (one label image per test
image) and ``WORK/peers/<tool>/run.json``; ``real_data.py --score-peer`` scores them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BUDGET_CPU_SECONDS = 3600.0
"""Training budget of every tool: process CPU seconds (all threads), data preparation included."""


def arguments(description: str, argv: Sequence[str] | None = None,
              extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> argparse.Namespace:
    """The runners' common options: --work-dir, --budget-cpu-seconds, --threads, --seed, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="folder written by real_data.py (split.json, data/)")
    parser.add_argument("--budget-cpu-seconds", type=float, default=DEFAULT_BUDGET_CPU_SECONDS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: WORK/peers/<tool>")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args(argv)


PREDICT_SCALED = ("--predict-scaled", {
    "type": float, "metavar": "F",
    "help": "predict the test images resampled by F (data/test_xF, written by real_data.py "
            "--evaluate-again ROW --test-scale F) with the model trained before"})


def test_folders(scale: float) -> tuple[str, str]:
    """(test image folder under WORK/data, prediction folder under the run) for ``scale``."""
    return ("test", "predictions") if scale == 1.0 else (f"test_x{scale:g}",
                                                         f"predictions_x{scale:g}")


def read_split(work: Path) -> dict[str, Any]:
    """``WORK/split.json``; SystemExit naming real_data.py when it is missing."""
    path = work / "split.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run benchmarks/real_data.py --data DATA "
                         f"--work-dir {work} --layout-only first")
    return json.loads(path.read_text())


def load_images(work: Path, stems: Sequence[str], folder: str = "trainval",
                labels: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and, if ``labels``, label images of ``stems`` from the layout.

    An RGB image whose channels are all equal (the grey images of the Data Science Bowl 2018
    are stored so) is read as its first channel: both peers take one-channel images for grey
    data, and the information is the same.
    """
    import tifffile

    root = work / "data" / folder
    images = [grey_if_equal_channels(np.asarray(tifffile.imread(root / "images" / f"{s}.tif")))
              for s in stems]
    masks = [np.asarray(tifffile.imread(root / "labels" / f"{s}.tif")) for s in stems] \
        if labels else []
    return images, masks


def grey_if_equal_channels(image: np.ndarray) -> np.ndarray:
    """``image[..., 0]`` when ``image`` is (Y, X, C) with C in (3, 4) and equal colour channels."""
    if image.ndim == 3 and image.shape[-1] in (3, 4) and \
            (image[..., 1] == image[..., 0]).all() and (image[..., 2] == image[..., 0]).all():
        return image[..., 0]
    return image


def output_dir(work: Path, tool: str, out: Path | None) -> Path:
    """The runner's output folder; SystemExit if it already holds predictions."""
    folder = (out or work / "peers" / tool).resolve()
    if (folder / "run.json").exists() or any((folder / "predictions").glob("*.tif")):
        raise SystemExit(f"{folder} already holds a run; pass another --out")
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    return folder


def write_label(path: Path, labels: np.ndarray) -> Path:
    """Write a label image as a zlib TIFF, atomically (uint16 when it fits, else int32)."""
    import tifffile

    dtype = np.uint16 if labels.max(initial=0) < 2 ** 16 else np.int32
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


class Clock:
    """Wall and process CPU seconds (all threads) since it was made."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def cpu(self) -> float:
        """Process CPU seconds since start."""
        return time.process_time() - self.cpu0

    def wall(self) -> float:
        """Wall seconds since start."""
        return time.perf_counter() - self.wall0

    def seconds(self) -> dict[str, float]:
        """``{"wall_seconds", "cpu_seconds"}``, rounded to 0.1 s."""
        return {"wall_seconds": round(self.wall(), 1), "cpu_seconds": round(self.cpu(), 1)}


class LoadSampler:
    """The 1-minute load average every ``every`` seconds, in a background thread."""

    def __init__(self, every: float = 15.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        """Mean, min and max of the samples."""
        values = np.asarray(self.samples)
        return {"mean": round(float(values.mean()), 2), "min": round(float(values.min()), 2),
                "max": round(float(values.max()), 2), "samples": int(values.size)}


def provenance(threads: int) -> dict[str, Any]:
    """Date, command, machine, threads and load average of this run."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    python = os.path.relpath(sys.executable)
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([python, *sys.argv]), "threads": threads,
            "machine": {"node": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(),
                        "platform": platform.platform(), "python": platform.python_version()},
            "load_average_at_end": list(os.getloadavg())}


def limit_threads(threads: int) -> None:
    """Cap the math libraries' thread pools (call before importing TensorFlow or torch)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
