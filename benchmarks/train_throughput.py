"""Training throughput of microseg's Trainer: patches/s, optimizer steps/s, peak GPU memory.

Two settings: notebook 02's 2D default (``default2d`` U-Net, BatchRenorm, batches of 8 patches
of 128²) and the paper's 3D setup (``paper3d`` U-Net, 96³ patches, batch 1, 8 batches
accumulated per optimizer step, as TrainConfig documents the paper's recipe). Each is measured
in two ways:

- the network's speed: full optimizer steps of the Trainer (forward, Dice + cross-entropy loss,
  backward, Adam, BatchRenorm schedule) on one fixed batch, so that data loading cannot
  interfere; peak GPU memory over these steps;
- a short real training loop: the Trainer's own epoch loop, drawing augmented random patches
  with its PatchSampler (``--num-workers`` background threads, 0 by default as in TrainConfig),
  timed after one warm-up epoch; the time spent waiting for batches is reported per step and
  as a fraction of the step time (``data_wait_fraction``). On a GPU the sampling of the next
  batch overlaps the queued GPU work, so the share of the loop's step time that the fixed-batch
  step does not explain (``data_cost_fraction`` = 1 − fixed ÷ loop seconds per step) is what
  data loading really costs.

Switches (recorded in every row): ``--precision fp32|bf16`` (bf16: autocast on a GPU; on the
CPU the Trainer always trains in float32, ``compute_dtype`` says what ran), ``--channels-last``,
``--compile`` (``torch.compile``). ``--matrix`` measures all 8 combinations, each in its own
process, so that a failing one (torch.compile without a C++ compiler, out of memory) becomes an
error row instead of ending the run.

    .venv/bin/python benchmarks/train_throughput.py                  # both settings, bf16
    .venv/bin/python benchmarks/train_throughput.py --quick          # small sizes, seconds
    .venv/bin/python benchmarks/train_throughput.py --matrix         # every switch combination
    .venv/bin/python benchmarks/train_throughput.py --quick --matrix --only 2d-default
    .venv/bin/python benchmarks/train_throughput.py --threads 1      # on a busy shared CPU

On a CPU shared with other work, one thread is often faster than two: threads of one parallel
region wait for each other whenever another process holds a core. The load average is recorded.

Prints a table and writes JSON to benchmarks/results/train_throughput[_quick]-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "2d-default": {"preset": "default2d", "patch": (128, 128), "batch": 8, "accumulation": 1},
    "3d-paper": {"preset": "paper3d", "patch": (96, 96, 96), "batch": 1, "accumulation": 8},
}
QUICK = {
    "2d-default": {"preset": "default2d", "patch": (64, 64), "batch": 2, "accumulation": 1},
    "3d-paper": {"preset": "paper3d", "patch": (24, 24, 24), "batch": 1, "accumulation": 2},
}
PRECISIONS = {"fp32": "none", "bf16": "bf16"}
"""``--precision`` → ``TrainConfig.amp``."""

RESULTS = Path(__file__).resolve().parent / "results"


def make_trainer(setting: dict, device: str, switches: dict, loop_steps: int,
                 num_workers: int = 0):
    """A Trainer for ``setting`` on two synthetic images twice the patch size (in memory).

    ``switches``: ``precision``, ``channels_last``, ``compile``. Patches are augmented as the
    training recipe does.
    """
    import numpy as np

    from microseg.models import build_model, model_preset
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer, seed_everything
    from microseg.transforms.augment import Augmenter

    seed_everything(0)
    model_config = model_preset(setting["preset"])
    shape = tuple(2 * p for p in setting["patch"])
    rng = np.random.default_rng(0)
    target = (rng.random((2, *shape)) > 0.7).astype(np.int64) * 2 % 3
    image = (target + rng.standard_normal(target.shape)).astype(np.float32)
    pairs = [(image[i][None], target[i]) for i in range(2)]
    config = TrainConfig(batch_size=setting["batch"], patch_size=setting["patch"],
                         grad_accumulation=setting["accumulation"],
                         amp=PRECISIONS[switches["precision"]],
                         channels_last=switches["channels_last"], compile=switches["compile"],
                         steps_per_epoch=loop_steps, num_workers=num_workers,
                         val_tile=max(shape))
    ndim = len(setting["patch"])
    return Trainer(build_model(model_config), config, pairs, pairs[:1],
                   model_config=model_config, device=device, progress=False,
                   augment_factory=lambda seed: Augmenter(ndim=ndim, seed=seed))


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer, steps: int, warmup: int) -> dict:
    """Seconds per optimizer step on one fixed batch (after ``warmup`` steps), peak GPU memory."""
    import torch

    from microseg.training.trainer import _torch_settings

    batches = itertools.repeat(trainer.sampler.batch(0, 0))
    cuda = trainer.device.type == "cuda"
    trainer.network.train()
    with _torch_settings(trainer.config, trainer.device):
        for _ in range(warmup):
            trainer._optimizer_step(batches)
        _synchronize(trainer.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        started = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer._optimizer_step(batches)
        _synchronize(trainer.device)
        seconds = (time.perf_counter() - started) / steps
    mib = 2**20
    return {
        "seconds_per_step": seconds,
        "last_loss": float(loss),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(trainer.device) / mib
        if cuda else None,
        "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved(trainer.device) / mib
        if cuda else None,
    }


def time_loop(trainer) -> dict:
    """The Trainer's epoch loop (random augmented patches): seconds and data wait per step.

    One warm-up epoch first (compilation, cuDNN autotuning, allocator), then one timed epoch of
    ``steps_per_epoch`` optimizer steps.
    """
    from microseg.training.trainer import _torch_settings

    steps = trainer.config.steps_per_epoch
    with _torch_settings(trainer.config, trainer.device), trainer._progress_bar() as bar:
        trainer._train_epoch(bar)
        trainer.epoch += 1
        started = time.perf_counter()
        _, data_seconds = trainer._train_epoch(bar)
        seconds = time.perf_counter() - started
    return {
        "loop_seconds_per_step": seconds / steps,
        "data_wait_seconds_per_step": data_seconds / steps,
        "data_wait_fraction": data_seconds / seconds,
    }


def measure(name: str, setting: dict, device: str, switches: dict, steps: int, warmup: int,
            loop_steps: int, num_workers: int = 0) -> dict:
    """One row: the fixed-batch timing and the real loop for ``setting`` with ``switches``."""
    trainer = make_trainer(setting, device, switches, loop_steps, num_workers)
    fixed = time_steps(trainer, steps, warmup)
    loop = time_loop(trainer)
    per_step = setting["batch"] * setting["accumulation"]
    seconds = fixed["seconds_per_step"]
    return row_stub(name, setting, switches) | {
        "status": "ok",
        "device_type": trainer.device.type,
        "compute_dtype": "float32" if trainer.amp_dtype is None else str(trainer.amp_dtype)
        .removeprefix("torch."),
        "seconds_per_step": seconds,
        "optimizer_steps_per_second": 1 / seconds,
        "patches_per_second": per_step / seconds,
        "voxels_per_second": per_step * math.prod(setting["patch"]) / seconds,
        **{k: v for k, v in fixed.items() if k != "seconds_per_step"},
        **loop,
        "loop_patches_per_second": per_step / loop["loop_seconds_per_step"],
        "data_cost_fraction": 1 - seconds / loop["loop_seconds_per_step"],
        "num_workers": num_workers,
        "timed_steps": steps,
        "loop_steps": loop_steps,
    }


def row_stub(name: str, setting: dict, switches: dict) -> dict:
    """What identifies a row: the setting and the switches."""
    return {"setting": name, "model": setting["preset"], "patch": list(setting["patch"]),
            "batch": setting["batch"], "accumulation": setting["accumulation"], **switches}


def run_worker(command: list[str], stub: dict, timeout: float) -> dict:
    """Run one combination in a child process; an error row if it fails or times out."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return stub | {"status": "error", "error": f"timed out after {timeout:.0f} s"}
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
    return stub | {"status": "error",
                   "error": f"exit status {done.returncode}: " + " | ".join(tail)}


def matrix_rows(args: argparse.Namespace, device: str, settings: dict) -> list[dict]:
    """Every combination of precision, channels-last and compile, one process each."""
    rows = []
    combinations = itertools.product(PRECISIONS, (False, True), (False, True))
    for (precision, channels_last, compiled), name in itertools.product(combinations, settings):
        switches = {"precision": precision, "channels_last": channels_last, "compile": compiled}
        command = [sys.executable, __file__, "--worker", "--only", name, "--device", device,
                   "--precision", precision, "--num-workers", str(args.num_workers)]
        command += ["--channels-last"] * channels_last + ["--compile"] * compiled
        command += ["--quick"] * args.quick
        for flag in ("steps", "threads"):
            if getattr(args, flag):
                command += [f"--{flag}", str(getattr(args, flag))]
        rows.append(run_worker(command, row_stub(name, settings[name], switches),
                               args.timeout))
        print(format_row(rows[-1]), flush=True)
    return rows


HEADER = (f"{'setting':<11}{'prec':>5}{'dtype':>9}{'c-last':>7}{'compile':>8}{'patch':>10}"
          f"{'batch':>7}{'s/step':>9}{'steps/s':>9}{'patches/s':>10}{'GPU MB':>8}"
          f"{'loop s/step':>12}{'data wait':>10}")


def format_row(row: dict) -> str:
    """One line of the table (an error row shows its message)."""
    head = (f"{row['setting']:<11}{row['precision']:>5}{row.get('compute_dtype', '-'):>9}"
            f"{'yes' if row['channels_last'] else 'no':>7}{'yes' if row['compile'] else 'no':>8}"
            f"{'x'.join(map(str, row['patch'])):>10}"
            f"{str(row['batch']) + 'x' + str(row['accumulation']):>7}")
    if row["status"] != "ok":
        return head + f"  ERROR {row['error'][:200]}"
    memory = row["peak_gpu_memory_mb"]
    return head + (f"{row['seconds_per_step']:>9.3f}{row['optimizer_steps_per_second']:>9.2f}"
                   f"{row['patches_per_second']:>10.2f}"
                   f"{'-' if memory is None else f'{memory:.0f}':>8}"
                   f"{row['loop_seconds_per_step']:>12.3f}{row['data_wait_fraction']:>10.1%}")


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "meta":
        return "meta (shapes only, nothing computed)"
    return platform.processor() or platform.machine()


def run_record(device: str, **extra) -> dict:
    """Where and how a benchmark ran: machine, date, command, torch, device, threads, load."""
    import torch

    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        **extra,
    }


def write_record(record: dict, stem: str) -> Path:
    """Write ``record`` to ``benchmarks/results/<stem>-<date>.json`` and say so."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--only", choices=sorted(SETTINGS), help="measure one setting")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16",
                        help="bf16 autocast (on a GPU; the Trainer's default) or fp32")
    parser.add_argument("--channels-last", action="store_true", help="channels-last layout")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--matrix", action="store_true",
                        help="all 8 switch combinations, one process each")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="threads preparing batches in the real loop (TrainConfig default 0)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per combination with --matrix")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {name: setting for name, setting in (QUICK if args.quick else SETTINGS).items()
                if args.only in (None, name)}
    if args.matrix:
        print(HEADER, flush=True)
        rows = matrix_rows(args, device, settings)
    else:
        switches = {"precision": args.precision, "channels_last": args.channels_last,
                    "compile": args.compile}
        steps = args.steps or (3 if args.quick else 10)
        rows = [measure(name, setting, device, switches,
                        steps if setting["accumulation"] == 1 else max(2, steps // 3),
                        warmup=1 if args.quick else 2,
                        loop_steps=2 if args.quick or setting["accumulation"] > 1 else 5,
                        num_workers=args.num_workers)
                for name, setting in settings.items()]
        if args.worker:
            print(json.dumps(rows[0]))
            return
        print(HEADER)
        for row in rows:
            print(format_row(row))
    record = run_record(device, quick=args.quick, matrix=args.matrix) | {"results": rows}
    write_record(record, "train_throughput_quick" if args.quick else "train_throughput")


if __name__ == "__main__":
    main()
