"""Tiled inference: microseg's exact halo crop against MONAI's sliding window, same model and tile.

Every method gets the same network input size per forward pass (the same memory budget for the
network): ours keeps an inner block of ``tile − 2·halo`` of each window (more at the image border,
where windows stay inside the image); MONAI reads windows of ``tile`` at overlap 0.25 (its
default, constant weights) and at overlap 0.5 with Gaussian weights (the nnU-Net setting). Each
method runs in its own process so that its peak resident memory can be read. The deviation from
the whole-image prediction is measured on a smaller image (the whole-image reference of the full
size would not fit the memory budget this benchmark is about), over the whole image and away
from a border of one halo.

    .venv/bin/python benchmarks/tiled_inference.py               # 2D 4096², 3D 256³, CPU or CUDA
    .venv/bin/python benchmarks/tiled_inference.py --quick       # small sizes, seconds
    .venv/bin/python benchmarks/tiled_inference.py --only-ndim 3 --tiles 96 128

Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("microseg", "monai-0.25-constant", "monai-0.5-gaussian")


def build_network(ndim: int, device: str):
    """The paper's U-Net (2 downsamplings, 32/64/128, 2 residual units), batch norm, eval mode."""
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=ndim, in_channels=1, out_channels=3, channels=(32, 64, 128),
               strides=(2, 2), num_res_units=2, norm="batch")
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, *([64] * ndim)))
    return net.eval().to(device)


def predict(method: str, net, image, tile: int, halo: int, batch: int, device: str):
    """Logits (K, *spatial) float32 numpy for one method."""
    import torch

    if method == "microseg":
        from microseg.inference.tiling import predict_tiled

        inner = tile - 2 * halo
        return predict_tiled(net, image, tile_shape=inner, halo=halo, batch_size=batch,
                             device=device, activation=None, size_divisor=4)
    from monai.inferers import sliding_window_inference

    overlap, mode = (0.25, "constant") if method == "monai-0.25-constant" else (0.5, "gaussian")
    with torch.inference_mode():
        x = torch.from_numpy(image[None]).to(device)
        out = sliding_window_inference(x, (tile,) * (image.ndim - 1), batch, net,
                                       overlap=overlap, mode=mode)
    return out[0].float().cpu().numpy()


def windows_per_pass_count(method: str, size: int, ndim: int, tile: int, halo: int) -> int:
    """How many network inputs a method needs for an image of ``size`` per axis."""
    import math

    if method == "microseg":
        from microseg.inference.tiling import window_layout

        return len(window_layout((size,) * ndim, tile - 2 * halo, halo, divisor=4))
    overlap = 0.25 if method == "monai-0.25-constant" else 0.5
    interval = max(int(tile * (1 - overlap)), 1)  # MONAI's scan interval
    per_axis = 1 if size <= tile else math.ceil((size - tile) / interval) + 1
    return per_axis**ndim


def whole(net, image, device):
    import torch

    with torch.inference_mode():
        return net(torch.from_numpy(image[None]).to(device))[0].float().cpu().numpy()


def worker(args) -> dict:
    """Run one method in this process and report speed, memory and deviation."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = build_network(args.ndim, device)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1,) + (args.size,) * args.ndim).astype(np.float32)
    small = rng.standard_normal((1,) + (args.check_size,) * args.ndim).astype(np.float32)
    difference = np.abs(predict(args.method, net, small, args.tile, args.halo, args.batch, device)
                        - whole(net, small, device))
    inner = (slice(None),) + (slice(args.halo, -args.halo),) * args.ndim
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = predict(args.method, net, image, args.tile, args.halo, args.batch, device)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert out.shape[1:] == image.shape[1:]
    return {
        "method": args.method, "ndim": args.ndim, "size": args.size, "tile": args.tile,
        "halo": args.halo, "batch": args.batch, "device": device, "seconds": seconds,
        "valid_pixels_per_s": image[0].size / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "max_abs_diff_vs_whole": float(difference.max()),
        "max_abs_diff_vs_whole_interior": float(difference[inner].max()),
        "check_size": args.check_size,
        "windows": windows_per_pass_count(args.method, args.size, args.ndim, args.tile, args.halo),
        "torch": torch.__version__, "threads": args.threads,
        "load_average_1min": os.getloadavg()[0],
    }


def measure(args, method: str, ndim: int, size: int, check: int, tile: int, halo: int,
            batch: int) -> dict:
    """One method in its own process; prints and returns its row."""
    cmd = [sys.executable, __file__, "--worker", "--method", method, "--ndim", str(ndim),
           "--size", str(size), "--check-size", str(check), "--tile", str(tile),
           "--halo", str(halo), "--batch", str(batch), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{ndim}D {size:>5} tile {tile:>4} {method:<22} {r['windows']:>5} windows "
          f"{r['valid_pixels_per_s'] / 1e6:8.3f} Mpx/s peak RSS {r['peak_rss_mb']:7.0f} MB "
          f"max|Δ| vs whole {r['max_abs_diff_vs_whole']:.1e} "
          f"(interior {r['max_abs_diff_vs_whole_interior']:.1e})", flush=True)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only-ndim", type=int, choices=(2, 3), help="run only the 2D or 3D case")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="microseg")
    parser.add_argument("--ndim", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--check-size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--halo", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to measure (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over the methods (order rotated); the summary takes medians")
    parser.add_argument("--tiles", type=int, nargs="+",
                        help="network input sides to measure instead of the case's default")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    cases = [  # (ndim, size, check size, tile, halo, batch); halo ≥ receptive-field radius 23
        (2, 1024 if args.quick else 4096, 640 if args.quick else 1024, 256, 24, 4),
        (3, 128 if args.quick else 256, 160 if args.quick else 192, 96, 24, 1),
    ]
    cases = [c for c in cases if args.only_ndim in (None, c[0])]
    if args.tiles:
        cases = [(n, size, check, tile, halo, batch) for n, size, check, _, halo, batch in cases
                 for tile in args.tiles]
    rows = []
    for ndim, size, check, tile, halo, batch in cases:
        for repeat in range(args.repeats):
            # rotate the order each round so that slow drifts of a shared machine hit every method
            shift = repeat % len(args.methods)
            for method in args.methods[shift:] + args.methods[:shift]:
                rows.append(measure(args, method, ndim, size, check, tile, halo, batch))
                rows[-1]["repeat"] = repeat
    summary = []
    for ndim, tile in sorted({(r["ndim"], r["tile"]) for r in rows}):
        same = [r for r in rows if r["ndim"] == ndim and r["tile"] == tile]
        speeds = {m: statistics.median(r["valid_pixels_per_s"] for r in same if r["method"] == m)
                  for m in args.methods}
        for method, speed in speeds.items():
            ratio = speeds["microseg"] / speed if "microseg" in speeds else None
            summary.append({"ndim": ndim, "tile": tile, "method": method,
                            "median_valid_pixels_per_s": speed, "speed_ratio_ours_over_this": ratio,
                            "repeats": args.repeats})
            print(f"median {ndim}D tile {tile:>4} {method:<22} {speed / 1e6:8.3f} Mpx/s"
                  + ("" if ratio is None else f"   microseg / this = {ratio:.2f}"))
    from train_throughput import run_record, write_record

    device = rows[0]["device"] if rows else "cpu"
    write_record(run_record(device, threads=args.threads, rows=rows, summary=summary),
                 "tiled_inference")


if __name__ == "__main__":
    main()
