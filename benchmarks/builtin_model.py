"""Pack a trained model folder as a built-in model of microseg (``microseg.models.builtin``).

Writes ``lib/microseg/models/weights/<name>/``: ``best.pt`` with the weights only (floating-point
tensors in fp16 unless ``--fp32``; the training state is left out), ``config.json``,
``prediction.json``, ``instance_postprocessing.json`` and ``MODEL_CARD.md``, and the sha256 of
every file into ``weights/models.json``. The card is made from the model's ``summary.json``,
the benchmark row given with ``--row`` (``real_data.py``'s ``results/<row>.json``: test scores,
command, commit, machine) and the description and data given here.

    .venv/bin/python benchmarks/builtin_model.py --model-dir RUN/models/NAME --name nuclei \\
        --row WORK/results/ROW.json --description "..." --data "..."

Refuses to replace an existing built-in model unless ``--replace``. The row's label and F1,
precision, recall, DSB score and PQ (F1 and PQ at IoU 0.5) go into the card and the list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
WEIGHTS = REPOSITORY / "lib" / "microseg" / "models" / "weights"
COPIED = ("config.json", "prediction.json", "instance_postprocessing.json")
KEPT = ("format", "model_config", "best_epoch", "epoch", "step", "best_val_loss",
        "best_val_dice", "train_config", "stopped_early")


def pack_weights(source: Path, target: Path, half: bool) -> dict[str, Any]:
    """``best.pt`` of ``source`` with the weights (fp16 when ``half``) and plain facts only."""
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    weights = {k: (v.half() if half and v.is_floating_point() else v)
               for k, v in state["model"].items()}
    packed = {k: state[k] for k in KEPT if k in state}
    packed["model"] = weights
    packed["weights_dtype"] = "float16" if half else "float32"
    torch.save(packed, target)
    return {"parameters": sum(v.numel() for v in weights.values() if v.is_floating_point()),
            "dtype": packed["weights_dtype"]}


def model_card(name: str, args: argparse.Namespace, summary: dict[str, Any],
               row: dict[str, Any], prediction: dict[str, Any], packed: dict[str, Any],
               trained: dict[str, Any]) -> str:
    """The card: what the model is for, its data and license, how it was trained, its scores."""
    pooled = _scores(row)
    scores = "\n".join(f"| {k} | {v} |" for k, v in pooled.items()
                       if isinstance(v, (int, float)))
    return f"""# Built-in model `{name}`

{args.description}

## Data

{args.data}

## Training

- command: `{trained.get("command", "see BENCHMARKS.md")}`
- microseg commit: {(trained.get("library_git") or {}).get("commit", "unknown")}
- steps: {summary.get("steps")}, epochs: {summary.get("epochs_run")}, best epoch: {summary.get("best_epoch")}
- instance head: {prediction.get("instance_head")}; canonical diameter: {prediction.get("canonical_diameter")} px
- training objects' median diameter: {_rounded(prediction.get("object_diameter"))} px
- weights: {packed["parameters"]} parameters, stored as {packed["dtype"]}
- colour images: {_COLOUR.get(prediction.get("colour_input", "refuse"))}

## Scores on the held-out test images

Row `{row.get("label")}` of BENCHMARKS.md (pooled over the test images; F1 and PQ at IoU 0.5,
DSB score: mean over IoU 0.5 to 0.95), measured with

    {row.get("command", "")}


| score | value |
|---|---|
{scores}

## License

The weights are released with microseg under the BSD 3-Clause license. The training images are
{args.data_license}.
"""


_COLOUR = {
    "refuse": "refused (the model reads one channel; make colour images one channel first)",
    "nuclei": "stained tissue and bright-field are read as their haematoxylin stain "
              "(microseg.transforms.colour.nuclei_channel); fluorescence composites are refused "
              "(give the nuclear channel alone)"}


def _rounded(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def _scores(row: dict[str, Any]) -> dict[str, float]:
    """The pooled test scores of a benchmark row, rounded."""
    keys = ("f1", "precision", "recall", "dsb_score", "panoptic_quality")
    return {k: round(float(row["scores"][k]), 3) for k in keys if k in row.get("scores", {})}


def pack(args: argparse.Namespace) -> Path:
    """Write the built-in model folder and its checksums; return the folder."""
    sys.path.insert(0, str(REPOSITORY / "lib"))
    from microseg.models.builtin import MANIFEST, sha256_of

    source = args.model_dir.resolve()
    weights = args.weights_dir.resolve()
    target = weights / args.name
    if target.exists() and not args.replace:
        raise SystemExit(f"{target} exists: pass --replace to pack {args.name!r} again")
    missing = [f for f in ("best.pt", *COPIED) if not (source / f).is_file()]
    if missing:
        raise SystemExit(f"{source} is not a finished model folder: {missing} missing")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    packed = pack_weights(source / "best.pt", target / "best.pt", half=not args.fp32)
    for file in COPIED:
        shutil.copyfile(source / file, target / file)
    if args.colour_input:
        settings = json.loads((target / "prediction.json").read_text())
        settings["colour_input"] = args.colour_input
        (target / "prediction.json").write_text(json.dumps(settings, indent=2) + "\n")
    summary = json.loads((source / "summary.json").read_text()) \
        if (source / "summary.json").is_file() else {}
    row = json.loads(args.row.read_text()) if args.row else {}
    trained = json.loads(args.train_row.read_text()) if args.train_row else row
    prediction = json.loads((target / "prediction.json").read_text())
    (target / "MODEL_CARD.md").write_text(
        model_card(args.name, args, summary, row, prediction, packed, trained),
        encoding="utf-8")
    manifest_path = weights / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    files = ("best.pt", *COPIED, "MODEL_CARD.md")
    manifest[args.name] = {
        "folder": args.name, "description": args.description, "data": args.data,
        "scores": _scores(row),
        "files": {f: sha256_of(target / f) for f in files}}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--row", type=Path, help="real_data.py's results/<row>.json: scores")
    parser.add_argument("--train-row", type=Path,
                        help="the row that trained the model, when --row evaluated it again")
    parser.add_argument("--description", required=True)
    parser.add_argument("--data", required=True, help="what the model was trained on")
    parser.add_argument("--data-license", default="CC0 (public domain)")
    parser.add_argument("--fp32", action="store_true", help="keep the weights in float32")
    parser.add_argument("--colour-input", choices=("refuse", "nuclei"),
                        help="the packed model's colour_input (default: the folder's)")
    parser.add_argument("--replace", action="store_true")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS,
                        help="where built-in models live (default: the package's)")
    target = pack(parser.parse_args(argv))
    print(f"written: {target}")


if __name__ == "__main__":
    main()
