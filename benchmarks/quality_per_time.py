"""Quality per time: validation Dice against wall-clock seconds for notebook 02's default.

Prepares the built-in synthetic data as notebook 01 does with its defaults (``prepare_data``;
24 images of 256², split 70/15/15 per image) in a temporary run folder, then trains notebook
02's default (``train_model`` with no settings: ``default2d`` U-Net with BatchRenorm, patches of
128², batch 8, up to 24 epochs of 25 steps with early stopping). After every epoch it records
the wall-clock seconds since training started (model building, data checks, validation and
checkpoint writing included), the training seconds of the epochs so far, and the validation
loss and Dice (mean hard Dice over the foreground classes, and objects versus background).

    .venv/bin/python benchmarks/quality_per_time.py            # the 02 default
    .venv/bin/python benchmarks/quality_per_time.py --quick    # both notebooks' quick mode
    .venv/bin/python benchmarks/quality_per_time.py --epochs 40 --run-dir runs/quality

Prints a table and writes JSON to benchmarks/results/quality_per_time[_quick]-<date>.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path


class DicePerTime:
    """Epoch callback of the Trainer: one row per epoch, seconds since ``started``."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.rows: list[dict] = []

    def __call__(self, trainer, record: dict) -> None:
        previous = self.rows[-1]["training_seconds"] if self.rows else 0.0
        self.rows.append({
            "epoch": record["epoch"],
            "wall_seconds": time.perf_counter() - self.started,
            "training_seconds": previous + record["seconds"],
            "data_seconds": record["data_seconds"],
            "steps": record["steps"],
            "train_loss": record["train_loss"],
            "val_loss": record["val_loss"],
            "val_dice": record["val_dice"],
            "val_foreground_dice": record["val_foreground_dice"],
        })


def quality_per_time(run_dir: Path, quick: bool, epochs: int | None, device: str) -> dict:
    """Prepare the synthetic data, train the 02 default, return its summary and epoch rows."""
    from microseg.recipes.prepare import prepare_data
    from microseg.recipes.train import train_model

    started = time.perf_counter()
    data = prepare_data(run_dir, quick=quick)
    prepare_seconds = time.perf_counter() - started
    recorder = DicePerTime(time.perf_counter())
    summary = train_model(run_dir, quick=quick, epochs=epochs, device=device,
                          callbacks=[recorder])
    return {
        "prepare_seconds": prepare_seconds,
        "n_train": data.n_train, "n_val": data.n_val,
        "train_seconds": summary.seconds,
        "best_epoch": summary.best_epoch, "best_val_dice": summary.best_val_dice,
        "epochs_run": summary.epochs_run, "stopped_early": summary.stopped_early,
        "device": summary.device, "parameters": summary.parameters,
        "epochs": recorder.rows,
    }


def _json_number(value):
    """JSON has no NaN: a Dice undefined for lack of objects is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the notebooks' quick mode")
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    import torch
    from train_throughput import run_record, write_record

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run_dir is None:
        with tempfile.TemporaryDirectory(prefix="microseg-quality-") as folder:
            result = quality_per_time(Path(folder) / "run", args.quick, args.epochs, args.device)
    else:
        result = quality_per_time(args.run_dir, args.quick, args.epochs, args.device)
    print(f"data: {result['n_train']} training / {result['n_val']} validation images, prepared "
          f"in {result['prepare_seconds']:.1f} s; {result['device']}, "
          f"{result['parameters']:,} parameters")
    print(f"{'epoch':>5}{'wall s':>9}{'train s':>9}{'data s':>8}{'steps':>7}{'train loss':>12}"
          f"{'val loss':>10}{'val Dice':>10}{'objects':>9}")
    for row in result["epochs"]:
        print(f"{row['epoch']:>5}{row['wall_seconds']:>9.1f}{row['training_seconds']:>9.1f}"
              f"{row['data_seconds']:>8.2f}{row['steps']:>7}{row['train_loss']:>12.4f}"
              f"{row['val_loss']:>10.4f}{row['val_dice']:>10.3f}"
              f"{row['val_foreground_dice']:>9.3f}")
    print(f"best epoch {result['best_epoch']} of {result['epochs_run']} (stopped early: "
          f"{result['stopped_early']}), validation Dice {result['best_val_dice']}")
    result["epochs"] = [{key: _json_number(value) for key, value in row.items()}
                        for row in result["epochs"]]
    record = run_record(result.pop("device"), quick=args.quick) | result
    write_record(record, "quality_per_time_quick" if args.quick else "quality_per_time")


if __name__ == "__main__":
    main()
