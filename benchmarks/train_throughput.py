"""Training throughput (patches per second) of microseg's Trainer, CPU or CUDA.

Two settings: notebook 02's 2D default (``default2d`` U-Net, BatchRenorm, batches of 8 patches
of 128²) and the paper's 3D setup (``paper3d`` U-Net, 96³ patches, batch 1). Each runs full
optimizer steps of the Trainer (forward, Dice + cross-entropy loss, backward, Adam, BatchRenorm
schedule) on one fixed batch, so the number is the network's speed; patch sampling with
augmentation is timed separately (it runs in the training loop unless ``num_workers`` > 0).

    .venv/bin/python benchmarks/train_throughput.py            # both settings
    .venv/bin/python benchmarks/train_throughput.py --quick    # a few seconds, small sizes
    .venv/bin/python benchmarks/train_throughput.py --threads 1  # on a busy shared CPU

On a CPU shared with other work, one thread is often faster than two: threads of one parallel
region wait for each other whenever another process holds a core. The load average is recorded.

Prints a table and writes JSON to benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

SETTINGS = {
    "2d-default": {"preset": "default2d", "patch": (128, 128), "batch": 8},
    "3d-paper": {"preset": "paper3d", "patch": (96, 96, 96), "batch": 1},
}
QUICK = {
    "2d-default": {"preset": "default2d", "patch": (64, 64), "batch": 2},
    "3d-paper": {"preset": "paper3d", "patch": (32, 32, 32), "batch": 1},
}


def make_trainer(setting: dict, device: str):
    """A Trainer for ``setting`` on a small synthetic image set (nothing written to disk)."""
    import numpy as np

    from microseg.models import build_model, model_preset
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer, seed_everything

    seed_everything(0)
    model_config = model_preset(setting["preset"])
    shape = tuple(2 * p for p in setting["patch"])
    rng = np.random.default_rng(0)
    target = (rng.random((2, *shape)) > 0.7).astype(np.int64) * 2 % 3
    image = (target + rng.standard_normal(target.shape)).astype(np.float32)
    pairs = [(image[i][None], target[i]) for i in range(2)]
    config = TrainConfig(batch_size=setting["batch"], patch_size=setting["patch"],
                         val_tile=max(shape))
    return Trainer(build_model(model_config), config, pairs, pairs[:1],
                   model_config=model_config, device=device, progress=False)


def time_training(trainer, steps: int, warmup: int) -> float:
    """Seconds per optimizer step, on one fixed batch (after ``warmup`` steps)."""
    import itertools

    import torch

    batch = trainer.sampler.batch(0, 0)
    batches = itertools.repeat(batch)
    trainer.module.train()
    for _ in range(warmup):
        trainer._optimizer_step(batches)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        trainer._optimizer_step(batches)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def time_sampling(trainer, ndim: int, batches: int) -> float:
    """Seconds per batch of patch sampling with the default augmentation."""
    from microseg.transforms.augment import Augmenter

    trainer.sampler.augment_factory = lambda seed: Augmenter(ndim=ndim, seed=seed)
    started = time.perf_counter()
    for index in range(batches):
        trainer.sampler.batch(0, index)
    return (time.perf_counter() - started) / batches


def measure(name: str, setting: dict, device: str, steps: int, warmup: int) -> dict:
    trainer = make_trainer(setting, device)
    step_seconds = time_training(trainer, steps, warmup)
    sampling_seconds = time_sampling(trainer, len(setting["patch"]), max(2, steps // 2))
    return {
        "setting": name,
        "model": setting["preset"],
        "patch": list(setting["patch"]),
        "batch": setting["batch"],
        "seconds_per_step": round(step_seconds, 4),
        "patches_per_second": round(setting["batch"] / step_seconds, 2),
        "sampling_seconds_per_batch": round(sampling_seconds, 4),
        "patches_per_second_with_sampling": round(
            setting["batch"] / (step_seconds + sampling_seconds), 2),
    }


def environment(device: str) -> dict:
    import torch

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
        or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--only", choices=sorted(SETTINGS), help="measure one setting")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = QUICK if args.quick else SETTINGS
    steps = args.steps or (3 if args.quick else 10)
    rows = [measure(name, setting, device, steps if name.startswith("2d") else max(2, steps // 3),
                    warmup=1 if args.quick else 2)
            for name, setting in settings.items() if args.only in (None, name)]
    print(f"{'setting':<12}{'patch':>16}{'batch':>7}{'s/step':>9}{'patches/s':>11}"
          f"{'sampling s':>12}{'with sampling':>15}")
    for row in rows:
        print(f"{row['setting']:<12}{'x'.join(map(str, row['patch'])):>16}{row['batch']:>7}"
              f"{row['seconds_per_step']:>9.3f}{row['patches_per_second']:>11.2f}"
              f"{row['sampling_seconds_per_batch']:>12.3f}"
              f"{row['patches_per_second_with_sampling']:>15.2f}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    name = "train_throughput_quick.json" if args.quick else "train_throughput.json"
    record = {"environment": environment(device), "quick": args.quick, "results": rows}
    (out / name).write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {out / name}")


if __name__ == "__main__":
    main()
