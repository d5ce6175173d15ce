"""Small run folders written by hand, shaped like the real ones, for the run report's tests.

Each file holds what the notebooks write (same keys as the real summaries), with numbers chosen
so that every column of the models table has a known best value. :data:`EVALUATIONS` holds the
numbers; the tests compare the report with them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

THRESHOLDS = [round(0.1 + 0.05 * k, 2) for k in range(18)]

# model → (object Dice, F1@0.5, panoptic quality, per-image AP at each threshold)
EVALUATIONS = {
    "unet": (0.80, 0.70, 0.60, np.linspace(0.90, 0.10, 18)),
    "transfer": (0.85, 0.65, 0.55, np.linspace(0.92, 0.20, 18)),
    "transfer_scratch": (0.75, 0.60, 0.50, np.linspace(0.80, 0.05, 18)),
    "finetune": (0.83, 0.90, 0.72, np.linspace(0.95, 0.15, 18)),
    "finetune_scratch": (0.70, 0.55, 0.45, np.linspace(0.70, 0.02, 18)),
    "finetune_round1": (0.84, 0.88, 0.74, np.linspace(0.93, 0.12, 18)),
}
TARGET_EVALUATION = ("finetune", 0.61, 0.52, 0.41)  # finetune on the target test images
EPOCHS = {"unet": (3, 2.0), "transfer": (2, 1.5), "transfer_scratch": (2, 1.25),
          "finetune": (4, 0.5), "finetune_scratch": (2, 1.0), "finetune_round1": (2, 0.75)}
"""model → (epochs, seconds per epoch) written to history.csv."""

NOTEBOOK_NAMES = ("01_prepare_data", "02_train_from_scratch", "03_transfer_learning",
                  "04_fine_tune", "05_evaluate", "06_normalization_diagnostics", "07_deploy")
ZARR_CHUNKS = (1000, 2500, 40)
"""Bytes of the files of the deployment's output store."""


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def write_png(path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.random.default_rng(0).random((12, 16)), cmap="gray")
    return path


def write_notebook(name: str, root: Path, outputs: list[dict], seconds: float,
              failed: bool = False) -> None:
    cells = [{"cell_type": "code", "execution_count": k + 1, "metadata": {}, "source": "x = 1",
              "outputs": [output]} for k, output in enumerate(outputs)]
    metadata = {"kernelspec": {"name": "python3"}, "papermill": {
        "duration": seconds, "start_time": "2026-12-03T10:00:00", "exception": failed or None,
        "end_time": "2026-12-03T10:01:00"}}
    write_json(root / "notebooks" / f"{name}.ipynb",
               {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5})
    write_json(root / "notebooks" / f"{name}.params.json",
               {"notebook": name, "started": f"2026-12-03T10:0{name[1]}:00+00:00",
                "parameters": {"run_dir": str(root), "quick": True}})


def _stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def _data(root: Path, ndim: int) -> None:
    write_json(root / "data" / "summary.json", {
        "n_images": 8, "n_train": 6, "n_val": 1, "n_test": 1, "ndim": ndim, "task": "instance",
        "axes": "CZYX" if ndim == 3 else "CYX", "split_manifest": str(root / "data/split.json"),
        "synthetic": True, "data_dir": str(root / "data/synthetic")})
    write_png(root / "data" / "samples.png")
    write_json(root / "environment.json", {"packages": {"microseg": "0.1.0"}, "device": "cpu"})


def _model(root: Path, name: str, summary: dict | None) -> None:
    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.pt").write_bytes(b"weights")
    epochs, seconds = EPOCHS[name]
    rows = ["epoch,train_loss,val_loss,val_dice,seconds"] + [
        f"{e},{1.0 / e},{1.1 / e},{0.1 * e},{seconds}" for e in range(1, epochs + 1)]
    (folder / "history.csv").write_text("\n".join(rows) + "\n")
    write_png(folder / "loss_curves.png")
    if summary is not None:
        write_json(folder / "summary.json", {"model_dir": str(folder), **summary})


def _adapted(root: Path, name: str, mode: str, rounds: list[dict] | None = None) -> None:
    summary = {"mode": mode, "scratch_model_dir": str(root / "models" / f"{name}_scratch"),
               "adapted_dice": 0.5, "zero_shot_dice": 0.4, "scratch_dice": 0.3}
    if rounds is not None:
        summary["rounds"] = rounds
    _model(root, name, summary)
    _model(root, f"{name}_scratch", None)
    write_png(root / "models" / name / "figures" / "comparison.png")


def _evaluation(root: Path, folder: str, model: str, values: tuple, data: Path) -> None:
    dice, f1, pq, *ap = values
    instance = {"thresholds": THRESHOLDS, "ap": [0.0] * 18,
                "mean_over_images": {"ap": [float(v) for v in ap[0]] if ap else [None] * 18}}
    write_json(root / "eval" / folder / "summary.json", {
        "model": model, "task": "instance", "subset": "test", "data": f"test split of {data}",
        "n_images": 3, "object_dice": dice, "instance": instance,
        "at_threshold": {"threshold": 0.5, "f1": f1, "panoptic_quality": pq},
        "panoptic_quality": pq, "fit_diagnosis": {"verdict": "good fit", "reason": "flat"}})
    (root / "eval" / folder / "report.html").write_text("<html>report</html>")


def _diagnostics(root: Path, ndim: int) -> None:
    write_json(root / "diagnostics" / "unet" / "summary.json", {
        "model_name": "unet", "norm": "batchrenorm", "ndim": ndim,
        "trf": {"extent": [27] * ndim, "whole_input": False}, "erf": {"extent": [15] * ndim},
        "recommended_halo": [16] * ndim, "halo": 16, "halo_sufficient": True,
        "tile_mismatch": {"mean": 0.0, "any": False, "n_pairs": 2, "max_abs_diff": 6e-8},
        "max_abs_diff": 6e-8,
        "train_eval_disparity": {"disparity": 0.0, "n_tiles": 4},
        "norm_comparison": [
            {"configuration": "batch/global", "dice_eval": [0.9, 0.6, 0.2], "mismatch": 0.0,
             "mismatch_any": False, "disparity": 0.3},
            {"configuration": "instance/global", "dice_eval": [0.9, 0.5, 0.3], "mismatch": 0.07,
             "mismatch_any": True, "disparity": 0.0}]})
    for figure in ("tile_mismatch", "norm_comparison"):
        write_png(root / "diagnostics" / "unet" / "figures" / f"{figure}.png")


def _deployment(root: Path) -> None:
    folder = root / "predictions" / "unet"
    store = folder / "prediction" / "labels.zarr"
    for k, size in enumerate(ZARR_CHUNKS):
        (store / "c" / str(k)).parent.mkdir(parents=True, exist_ok=True)
        (store / "c" / str(k)).write_bytes(b"\0" * size)
    (folder / "input.zarr").mkdir(parents=True)
    (folder / "input.zarr" / "zarr.json").write_bytes(b"{}" * 300)
    (folder / "export").mkdir(parents=True, exist_ok=True)
    (folder / "export" / "model.torchscript.pt").write_bytes(b"\1" * 1234)
    write_png(folder / "figures" / "result.png")
    write_json(folder / "summary.json", {
        "model": "unet", "input": str(folder / "input.zarr"), "input_kind": "synthetic",
        "n_inputs": 1, "outputs": [str(store)],
        "predictions": [{"input": str(folder / "input.zarr"), "labels": str(store)}],
        "errors": [], "voxels": 147456, "voxels_per_second": 2.5e5, "peak_memory_mb": 512.0,
        "worker_peak_memory_mb": None, "n_objects": 40, "tile_shape": [128, 128],
        "halo": [16, 16], "halo_source": "notebook 06", "scheduler": "threads", "seconds": 9.5,
        "exports": {
            "torchscript": {"path": str(folder / "export/model.torchscript.pt"),
                            "max_abs_diff": 0.0},
            "onnx": {"path": None, "max_abs_diff": None, "error": "onnx is not installed"}}})


def make_run(root: Path, ndim: int = 2, complete: bool = True) -> Path:
    """A run folder at ``root``: all seven stages, or (``complete=False``) only 01 and 02.

    Notebook 02's executed copy holds a Python warning on stderr and a summary warning; 07's a
    logged WARNING; the ONNX export failed; nothing else went wrong.
    """
    _data(root, ndim)
    write_notebook("01_prepare_data", root, [_stream("8 images\n")], 10.0)
    _model(root, "unet", {"best_val_loss": 0.3, "warnings": ["few objects in image 3"]})
    write_notebook("02_train_from_scratch", root, [_stream(
        "/x/y.py:3: UserWarning: the learning rate is high\n  warnings.warn(\n", "stderr")], 20.0)
    if not complete:
        return root
    _adapted(root, "transfer", "transfer")
    _adapted(root, "finetune", "finetune",
             [{"round": 1, "model_dir": str(root / "models" / "finetune_round1")}])
    _model(root, "finetune_round1", None)
    write_png(root / "models" / "finetune" / "figures" / "rounds.png")
    (root / "target" / "data").mkdir(parents=True)
    for model, values in EVALUATIONS.items():
        _evaluation(root, model, model, values, root)
    name, *values = TARGET_EVALUATION
    _evaluation(root, f"{name}-2", name, tuple(values), root / "target")
    write_png(root / "eval" / "metric_vs_threshold.png")
    _diagnostics(root, ndim)
    _deployment(root)
    for name, seconds in zip(NOTEBOOK_NAMES[2:], (30.0, 40.0, 50.0, 60.0, 70.0), strict=True):
        outputs = [_stream("WARNING microseg.inference: no tuned post-processing\n")] \
            if name == "07_deploy" else [_stream("done\n")]
        write_notebook(name, root, outputs, seconds)
    return root
