"""Out-of-core prediction: peak memory stays bounded by the block, not by the volume.

Two synthetic 3D volumes, the second 8x the voxels of the first (128³ and 256³; ``--quick``:
64³ and 128³), are written to Zarr chunk by chunk and predicted into Zarr with
:func:`microseg.inference.ooc.predict_volume_to_zarr` with the same model, tile, halo and block
shape (one tile per block, so both volumes have several blocks and the same number run at
once). Every step runs in its own process so that its peak resident memory (``ru_maxrss``) is its
own. The claim checked: the peak of the larger volume is less than 1.5x the peak of the smaller.

Setting a memory limit (``RLIMIT_AS``) does not work with PyTorch, which reserves far more
address space than it uses, so the table instead compares each run's peak memory above its
baseline (the process after imports, model build and one forward pass) with the bytes the volume
would take in memory (raw input, plus normalized input and class probabilities as an in-memory
prediction holds them).

    .venv/bin/python benchmarks/ooc_memory.py            # 128³ vs 256³, a few minutes on a CPU
    .venv/bin/python benchmarks/ooc_memory.py --quick    # 64³ vs 128³

    .venv/bin/python benchmarks/ooc_memory.py --sides 256 512   # a volume larger than the
                                                                 # prediction's memory

Prints a table and writes JSON to benchmarks/results/ooc_memory.json (ooc_memory_quick.json,
ooc_memory_256_512.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = {"full": (128, 256), "quick": (64, 128)}
TILE = {"full": 64, "quick": 32}
HALO = 16
CHUNK = 64
GROWTH_LIMIT = 1.5


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def write_volume(args: argparse.Namespace) -> dict:
    """Child: write the synthetic volume; report time and peak memory."""
    from microseg.data.synthetic_volume import write_synthetic_volume

    started = time.perf_counter()
    write_synthetic_volume(args.volume, (args.side,) * 3, (CHUNK,) * 3, seed=0)
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def predict_volume(args: argparse.Namespace) -> dict:
    """Child: build the model, one warm-up forward (baseline), then predict out of core."""
    import torch

    from microseg.inference.ooc import predict_volume_to_zarr
    from microseg.models import build_model, model_preset

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = model_preset(args.model)
    model = build_model(config).eval()
    with torch.inference_mode():
        model(torch.zeros(1, 1, *(3 * [args.tile + 2 * HALO])))
    baseline = peak_rss_mb()
    result = predict_volume_to_zarr(model, args.volume, args.prediction, args.tile, HALO,
                                    output="labels", block_shape=args.tile,
                                    batch_size=args.batch_size, scheduler=args.scheduler)
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb(),
            "seconds": result["seconds"], "voxels_per_second": result["voxels_per_second"],
            "blocks": result["blocks_total"], "classes": config.out_classes}


def run_child(step: str, args: argparse.Namespace, side: int, work: Path) -> dict:
    """Run ``step`` for a volume of ``side``³ in a fresh Python process; its JSON result."""
    command = [sys.executable, __file__, "--child", step, "--side", str(side),
               "--volume", str(work / f"volume_{side}.zarr"),
               "--prediction", str(work / f"prediction_{side}"), "--tile", str(args.tile),
               "--model", args.model, "--threads", str(args.threads),
               "--batch-size", str(args.batch_size),
               "--scheduler", args.scheduler]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{step} {side}³ failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, side: int, work: Path) -> dict:
    """Write and predict one volume of ``side``³ (each in its own process); one table row."""
    written = run_child("write", args, side, work)
    predicted = run_child("predict", args, side, work)
    voxels = side**3
    in_memory = voxels * (2 + 4 + 4 * predicted["classes"])
    return {
        "side": side,
        "voxels": voxels,
        "input_mb": voxels * 2 / 2**20,
        "in_memory_prediction_mb": in_memory / 2**20,
        "write_seconds": written["seconds"],
        "write_peak_rss_mb": written["peak_rss_mb"],
        "predict_seconds": predicted["seconds"],
        "voxels_per_second": predicted["voxels_per_second"],
        "blocks": predicted["blocks"],
        "baseline_rss_mb": predicted["baseline_rss_mb"],
        "peak_rss_mb": predicted["peak_rss_mb"],
        "rss_above_baseline_mb": predicted["peak_rss_mb"] - predicted["baseline_rss_mb"],
    }


def report(rows: list[dict], args: argparse.Namespace, load: dict) -> dict:
    """Print the table and the verdict; the JSON record of the run."""
    small, large = rows
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"model {args.model}, tile {args.tile}, halo {HALO}, block {args.tile}³, batch "
          f"{args.batch_size}, scheduler {args.scheduler}, torch threads {args.threads}, load "
          f"{load['before'][0]:.1f} -> {load['after'][0]:.1f} on {os.cpu_count()} cores")
    header = ("volume", "input MB", "in-memory MB", "peak RSS MB", "above baseline MB",
              "voxels/s", "predict s", "write peak MB")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join([f"{row['side']}³", f"{row['input_mb']:.0f}",
                          f"{row['in_memory_prediction_mb']:.0f}", f"{row['peak_rss_mb']:.0f}",
                          f"{row['rss_above_baseline_mb']:.0f}",
                          f"{row['voxels_per_second']:.0f}", f"{row['predict_seconds']:.1f}",
                          f"{row['write_peak_rss_mb']:.0f}"]))
    verdict = "holds" if growth < GROWTH_LIMIT else "FAILS"
    print(f"8x the voxels: peak RSS x{growth:.2f} (claim: < {GROWTH_LIMIT}x) -> {verdict}")
    return {
        "benchmark": "ooc_memory",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "load_average": load,
        "settings": {"model": args.model, "tile": args.tile, "halo": HALO,
                     "block": args.tile, "batch_size": args.batch_size, "chunk": CHUNK,
                     "scheduler": args.scheduler,
                     "torch_threads": args.threads, "output": "labels"},
        "rows": rows,
        "peak_rss_growth": growth,
        "claim_holds": growth < GROWTH_LIMIT,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (the hidden ones drive the child processes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="64³ and 128³ instead of 128³ and 256³")
    parser.add_argument("--model", default="tiny3d", help="model preset (tiny3d, paper3d)")
    parser.add_argument("--tile", type=int, default=None, help="inner tile side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--sides", type=int, nargs=2, default=None,
                        help="the two volume sides (default 128 256; quick 64 128)")
    parser.add_argument("--scheduler", default="threads",
                        help="Dask scheduler: threads or synchronous")
    parser.add_argument("--work", default=None, help="folder for the volumes (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--volume", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prediction", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tile = args.tile or TILE["quick" if args.quick else "full"]
    return args


def main(argv: list[str] | None = None) -> dict | None:
    """Run both volumes and report, or, with ``--child``, one step of one volume."""
    args = parse_args(argv)
    if args.child:
        step = write_volume if args.child == "write" else predict_volume
        print(json.dumps(step(args)))
        return None
    work = Path(args.work or tempfile.mkdtemp(prefix="microseg-ooc-memory-"))
    load_before = os.getloadavg()
    try:
        sides = args.sides or SIDES["quick" if args.quick else "full"]
        rows = [measure(args, side, work) for side in sides]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = report(rows, args, {"before": load_before, "after": os.getloadavg()})
    suffix = "_quick" if args.quick else ""
    suffix += "".join(f"_{side}" for side in args.sides or ())
    out = Path(__file__).parent / "results" / f"ooc_memory{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
