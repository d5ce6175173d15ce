"""Measured ceilings of this machine, and the fraction of them the benchmarks reach.

Ceilings, measured once per run: the matrix-product rate (FLOP/s of square ``torch.mm``) in
float32, TF32 (GPU only) and bfloat16, and the copy bandwidth (bytes read plus bytes written per
second by ``Tensor.copy_`` of a large buffer). On a GPU: 8192² products and 1 GiB buffers; on
the CPU the same for reference (2048², 256 MiB).

Then, for every row of the newest ``train_throughput*.json`` and ``tiled_inference*.json`` in
benchmarks/results/ (or the files given with ``--inputs``):

    achieved FLOP/s = network voxels/s × FLOPs per voxel (benchmarks/flops.py)
    compute fraction = achieved FLOP/s ÷ matmul ceiling of the row's precision
    memory fraction = voxels/s × bytes per voxel ÷ copy bandwidth

Training rows count forward and backward FLOPs at the voxels/s of the fixed-batch timing;
inference rows count the forward pass over every window the method runs (overlaps included).
The ceiling of a row: bf16 when it computed in bfloat16 (or float16), on a GPU TF32 for float32
(cuDNN convolutions use TF32 by default), on the CPU float32. The bytes per voxel are PyTorch's
eager, unfused traffic in float32, an upper estimate: compiled (fused) and bf16 rows move fewer
bytes. The bottleneck named is the resource closest to its ceiling, "data loading" when data
loading costs the training loop more than a quarter of its time (``data_cost_fraction``, else
``data_wait_fraction``), and "overhead" when neither
ceiling is reached to a quarter (kernel launches, small operations, synchronization).

    .venv/bin/python benchmarks/gpu_ceilings.py             # measure, then the fractions
    .venv/bin/python benchmarks/gpu_ceilings.py --quick     # smaller products and buffers
    .venv/bin/python benchmarks/gpu_ceilings.py --inputs benchmarks/results/train_throughput-*.json
    .venv/bin/python benchmarks/gpu_ceilings.py --ceilings benchmarks/results/gpu_ceilings-X.json

Fractions are meaningful only for results measured on the same machine as the ceilings; rows of
another device type are listed without a fraction.

Prints two tables and writes JSON to benchmarks/results/gpu_ceilings[_quick]-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

MATMUL_SIDE = {("cuda", False): 8192, ("cuda", True): 4096, ("cpu", False): 2048,
               ("cpu", True): 1024}
COPY_MIB = {("cuda", False): 1024, ("cuda", True): 256, ("cpu", False): 256, ("cpu", True): 64}
BUSY_FRACTION = 0.25
"""Below this fraction of both ceilings a row is limited by overheads; above it in data wait,
by data loading."""


def _timed(function: Callable[[], object], device, budget: float = 0.5) -> float:
    """Seconds per call of ``function``: the best of 3 rounds of about ``budget`` seconds."""
    import torch

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    synchronize()
    started = time.perf_counter()
    function()
    synchronize()
    repeats = max(1, min(200, int(budget / max(time.perf_counter() - started, 1e-6))))
    best = math.inf
    for _ in range(3):
        synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        synchronize()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def matmul_rate(device, dtype, side: int, tf32: bool = False) -> float:
    """FLOP/s of ``torch.mm`` of two ``side``² matrices of ``dtype`` (2·side³ FLOPs each)."""
    import torch

    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(side, side, device=device, dtype=dtype, generator=generator)
    b = torch.randn(side, side, device=device, dtype=dtype, generator=generator)
    out = torch.empty_like(a)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        seconds = _timed(lambda: torch.mm(a, b, out=out), device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * side**3 / seconds


def copy_bandwidth(device, mib: int) -> float:
    """Bytes/s of ``dst.copy_(src)`` for float32 buffers of ``mib`` MiB: read plus write."""
    import torch

    source = torch.rand(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    seconds = _timed(lambda: target.copy_(source), device)
    return 2 * source.nbytes / seconds


def measure_ceilings(device_name: str, quick: bool = False) -> dict:
    """Matmul FLOP/s (fp32, tf32 on CUDA, bf16) and copy bytes/s on ``device_name``."""
    import torch

    device = torch.device(device_name)
    kind = device.type
    side, mib = MATMUL_SIDE[(kind, quick)], COPY_MIB[(kind, quick)]
    cuda = kind == "cuda"
    return {
        "device_type": kind,
        "matmul_side": side,
        "copy_mib": mib,
        "fp32_flops_per_s": matmul_rate(device, torch.float32, side),
        "tf32_flops_per_s": matmul_rate(device, torch.float32, side, tf32=True) if cuda
        else None,
        "bf16_flops_per_s": matmul_rate(device, torch.bfloat16, side),
        "copy_bytes_per_s": copy_bandwidth(device, mib),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
    }


def ceiling_for(compute_dtype: str, ceilings: dict) -> tuple[str, float]:
    """(name, FLOP/s) of the matmul ceiling that bounds work computed in ``compute_dtype``."""
    if compute_dtype in ("bfloat16", "float16"):
        key = "bf16"
    elif ceilings["device_type"] == "cuda" and ceilings.get("cudnn_allow_tf32", True):
        key = "tf32"
    else:
        key = "fp32"
    return key, ceilings[f"{key}_flops_per_s"]


def bottleneck(compute_fraction: float, memory_fraction: float,
               data_wait_fraction: float | None = None) -> str:
    """The resource that limits a row, from its fractions of the ceilings and its data wait."""
    if data_wait_fraction is not None and data_wait_fraction > BUSY_FRACTION:
        return "data loading"
    if max(compute_fraction, memory_fraction) < BUSY_FRACTION:
        return "overhead"
    return "compute" if compute_fraction >= memory_fraction else "memory bandwidth"


def ceiling_fraction(voxels_per_second: float, flops_per_voxel: float, bytes_per_voxel: float,
                     flops_ceiling: float, bytes_ceiling: float,
                     data_wait_fraction: float | None = None) -> dict:
    """Achieved FLOP/s and bytes/s of a row, their fractions of the ceilings, the bottleneck."""
    achieved = voxels_per_second * flops_per_voxel
    traffic = voxels_per_second * bytes_per_voxel
    compute, memory = achieved / flops_ceiling, traffic / bytes_ceiling
    return {"achieved_flops_per_s": achieved, "compute_fraction": compute,
            "bytes_per_s": traffic, "memory_fraction": memory,
            "bottleneck": bottleneck(compute, memory, data_wait_fraction)}


def row_workload(row: dict) -> dict:
    """What a result row ran: network, pass, input shape, network voxels/s, label, dtype.

    Training rows (train_throughput): voxels/s = patches/s × patch voxels. Tiled-inference rows:
    every window's voxels (``windows`` × tile voxels per run); rows without ``windows`` count the
    image's voxels only (marked ``approximate``).
    """
    if "method" in row:
        ndim, tile = row["ndim"], row["tile"]
        approximate = "windows" not in row
        voxels = (row["valid_pixels_per_s"] if approximate
                  else row["windows"] * tile**ndim / row["seconds"])
        return {"label": f"tiled {ndim}D {row['method']} tile {tile}", "network":
                "tiled-inference", "ndim": ndim, "batch": 1, "patch": [tile] * ndim,
                "pass": "forward", "voxels_per_second": voxels, "compute_dtype": "float32",
                "device_type": row.get("device", "cpu"), "approximate": approximate,
                "data_wait_fraction": None}
    switches = [row.get("precision", "fp32")]
    switches += ["channels-last"] * bool(row.get("channels_last"))
    switches += ["compile"] * bool(row.get("compile"))
    return {"label": f"train {row['setting']} {' '.join(switches)}", "network": row["model"],
            "ndim": len(row["patch"]), "batch": row["batch"], "patch": row["patch"],
            "pass": "training",
            "voxels_per_second": row["patches_per_second"] * math.prod(row["patch"]),
            "compute_dtype": row.get("compute_dtype", "float32"),
            "device_type": row.get("device_type", "cpu"), "approximate": False,
            "data_wait_fraction": row.get("data_cost_fraction",
                                          row.get("data_wait_fraction"))}


def fraction_rows(rows: list[dict], ceilings: dict, costs: Callable[[dict], dict]) -> list[dict]:
    """One fraction row per result row that ran and on the device type of ``ceilings``.

    ``costs(workload)`` returns ``flops_per_voxel`` and ``bytes_per_voxel`` for a workload (see
    :func:`row_workload`).
    """
    out = []
    for row in rows:
        if row.get("status", "ok") != "ok":
            continue
        work = row_workload(row)
        if work["device_type"] != ceilings["device_type"]:
            out.append(work | {"note": f"measured on {work['device_type']}, ceilings of "
                                       f"{ceilings['device_type']}: no fraction"})
            continue
        name, flops_ceiling = ceiling_for(work["compute_dtype"], ceilings)
        cost = costs(work)
        out.append(work | cost | {"ceiling": name} | ceiling_fraction(
            work["voxels_per_second"], cost["flops_per_voxel"], cost["bytes_per_voxel"],
            flops_ceiling, ceilings["copy_bytes_per_s"], work["data_wait_fraction"]))
    return out


def network_costs_per_voxel(work: dict, cache: dict) -> dict:
    """FLOPs and bytes per voxel of a workload, counted on the meta device (cached)."""
    from flops import network_costs

    key = (work["network"], work["ndim"], work["batch"], tuple(work["patch"]))
    if key not in cache:
        cache[key] = network_costs(work["network"], work["batch"], work["patch"], work["ndim"])
    counted, prefix = cache[key], work["pass"]
    return {"flops_per_voxel": counted[f"{prefix}_flops_per_voxel"],
            "bytes_per_voxel": counted[f"{prefix}_bytes_per_voxel"]}


def newest_inputs(results: Path) -> list[Path]:
    """The newest train_throughput and tiled_inference JSON files in ``results``."""
    found = []
    for pattern in ("train_throughput*.json", "tiled_inference*.json"):
        files = sorted(results.glob(pattern), key=lambda p: p.stat().st_mtime)
        found += files[-1:]
    return found


def read_rows(path: Path) -> list[dict]:
    """The result rows of a benchmark JSON (``results`` or ``rows``)."""
    record = json.loads(path.read_text())
    rows = record.get("results", record.get("rows"))
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: found no 'results' or 'rows' list; expected the JSON written "
                         f"by train_throughput.py or tiled_inference.py")
    return rows


def print_ceilings(ceilings: dict) -> None:
    for key, unit in (("fp32", "FLOP"), ("tf32", "FLOP"), ("bf16", "FLOP")):
        value = ceilings[f"{key}_flops_per_s"]
        text = "n/a" if value is None else f"{value / 1e12:9.3f} T{unit}/s"
        print(f"matmul {key} ({ceilings['matmul_side']}²){text:>24}")
    print(f"copy ({ceilings['copy_mib']} MiB){ceilings['copy_bytes_per_s'] / 1e9:>24.1f} GB/s")


def print_fractions(rows: list[dict]) -> None:
    print(f"\n{'row':<46}{'Gvox/s':>9}{'FLOP/vox':>11}{'TFLOP/s':>9}{'ceiling':>8}"
          f"{'compute':>9}{'memory':>8}  bottleneck")
    for row in rows:
        head = f"{row['label'][:45]:<46}{row['voxels_per_second'] / 1e9:>9.4f}"
        if "note" in row:
            print(head + f"  {row['note']}")
            continue
        mark = " (approximate)" if row["approximate"] else ""
        print(head + f"{row['flops_per_voxel']:>11,.0f}{row['achieved_flops_per_s'] / 1e12:>9.3f}"
              f"{row['ceiling']:>8}{row['compute_fraction']:>9.1%}{row['memory_fraction']:>8.1%}"
              f"  {row['bottleneck']}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller products and buffers")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--inputs", nargs="*", type=Path,
                        help="benchmark JSON files (default: the newest of each kind)")
    parser.add_argument("--ceilings", type=Path,
                        help="reuse the ceilings of an earlier gpu_ceilings JSON")
    args = parser.parse_args()
    import torch
    from train_throughput import RESULTS, run_record, write_record

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.ceilings:
        ceilings = json.loads(args.ceilings.read_text())["ceilings"]
    else:
        ceilings = measure_ceilings(device, args.quick)
    print_ceilings(ceilings)
    inputs = newest_inputs(RESULTS) if args.inputs is None else args.inputs
    cache: dict = {}
    fractions = []
    for path in inputs:
        print(f"\nrows of {path}")
        rows = fraction_rows(read_rows(path), ceilings,
                             lambda work: network_costs_per_voxel(work, cache))
        print_fractions(rows)
        fractions += [row | {"input": str(path)} for row in rows]
    record = run_record(device, quick=args.quick) | {
        "ceilings": ceilings, "inputs": [str(p) for p in inputs], "fractions": fractions}
    write_record(record, "gpu_ceilings_quick" if args.quick else "gpu_ceilings")


if __name__ == "__main__":
    main()
