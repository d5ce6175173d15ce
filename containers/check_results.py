"""Check what notebooks 01, 02, 05 and 07 wrote in the container and summarize it (test_container.sh).

Reads the run folder on the host side of the /results mount: each notebook's summary.json must
agree with the data folder that was mounted (10 images in /data/images), and every
environment.json must name the image, its id, its base and the torch build it ran with. Writes
the numbers and the test's measurements to --out as JSON and prints them; exits 1 with the list
of problems otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path


def read(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing: the notebook that writes it did not finish")
    return json.loads(path.read_text())


def check_data(run: Path, n_images: int, problems: list[str]) -> dict:
    data = read(run / "data" / "summary.json")
    split = [data.get(k) for k in ("n_train", "n_val", "n_test")]
    if data.get("n_images") != n_images or sum(s or 0 for s in split) != n_images:
        problems.append(f"01: {n_images} images in /data, summary says n_images={data.get('n_images')}, "
                        f"split {split}")
    if not str(data.get("data_dir", "")).startswith("/data") or data.get("synthetic"):
        problems.append(f"01: data_dir={data.get('data_dir')!r}, synthetic={data.get('synthetic')}: "
                        "expected the mounted /data")
    return {"n_images": data.get("n_images"), "split": split}


def check_model(run: Path, problems: list[str]) -> dict:
    model = read(run / "models" / "unet" / "summary.json")
    loss = model.get("best_val_loss")
    if not (isinstance(loss, float) and math.isfinite(loss)) or not model.get("epochs_run"):
        problems.append(f"02: best_val_loss={loss}, epochs_run={model.get('epochs_run')}")
    return {k: model.get(k) for k in ("epochs_run", "best_val_loss", "best_val_dice", "device")}


def check_eval(run: Path, n_test: int | None, problems: list[str]) -> dict:
    evaluation = read(run / "eval" / "unet" / "summary.json")
    dice = evaluation.get("object_dice")
    if evaluation.get("n_images") != n_test or not (isinstance(dice, float) and 0 <= dice <= 1):
        problems.append(f"05: n_images={evaluation.get('n_images')} (test split: {n_test}), "
                        f"object_dice={dice}")
    return {k: evaluation.get(k) for k in ("n_images", "object_dice", "panoptic_quality")}


def check_deploy(run: Path, n_images: int, problems: list[str]) -> dict:
    deploy = read(run / "predictions" / "unet" / "summary.json")
    if deploy.get("n_inputs") != n_images or deploy.get("errors"):
        problems.append(f"07: n_inputs={deploy.get('n_inputs')} for {n_images} images in "
                        f"/data/images, errors={deploy.get('errors')}")
    return {k: deploy.get(k) for k in ("n_inputs", "voxels_per_second", "exports")}


def check_environments(run: Path, expected: dict, problems: list[str]) -> list[str]:
    records = sorted(run.rglob("environment.json"))
    if not records:
        problems.append(f"no environment.json under {run}")
    for path in records:
        record = json.loads(path.read_text())
        for key, want in expected.items():
            got = record.get(key)
            ok = got.startswith(want) if key in ("torch", "python") else got == want
            if not ok:
                problems.append(f"{path.relative_to(run)}: {key}={got!r}, expected {want!r}")
    return [str(p.relative_to(run)) for p in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the folder mounted at /data")
    parser.add_argument("--image", required=True)
    parser.add_argument("--image-id", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--torch", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE measurements to record")
    args = parser.parse_args(argv)

    problems: list[str] = []
    n_images = len(list((args.data / "images").iterdir()))
    data = check_data(args.run_dir, n_images, problems)
    expected = {"container_image": args.image, "container_digest": args.image_id,
                "container_base": args.base, "python": "3.11",
                "torch": "2.13.0+cpu" if args.torch == "cpu" else "2.13.0"}
    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        **dict(item.split("=", 1) for item in args.set),
        "image": args.image, "image_id": args.image_id, "base": args.base, "torch": args.torch,
        "01_prepare_data": data,
        "02_train_from_scratch": check_model(args.run_dir, problems),
        "05_evaluate": check_eval(args.run_dir, (data["split"] or [None] * 3)[2], problems),
        "07_deploy": check_deploy(args.run_dir, n_images, problems),
        "environment_records": check_environments(args.run_dir, expected, problems),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
