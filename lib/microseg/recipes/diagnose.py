"""Stage 06, normalization diagnostics of a trained model: what notebook 06 calls.

:func:`diagnose_model` loads a model of a run folder and its validation images and measures:

- the theoretical and effective receptive field, and the recommended halo;
- tile mismatch: do overlapping tiles, predicted independently, agree?
- train/eval disparity: do predictions change between ``train()`` and ``eval()``?
- a tile-size sweep: Dice and mismatch against the inner tile size (not for a network of fixed
  input shape, UNETR, which reads windows of one size only);
- optionally the tiling paper's comparison of normalization layers (new small models trained on the
  built-in 3D data, or on the run's own split).

It writes ``diagnostics/<model>/summary.json`` and ``figures/*.png`` there. An earlier diagnosis
is never written over: a new one goes to ``diagnostics/<model>-2/`` unless ``overwrite=True``.

Example
-------
>>> result = diagnose_model("runs/demo", quick=True)     # doctest: +SKIP
>>> result.summary.tile_mismatch["any"]                  # doctest: +SKIP
False
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, RunOrderError
from microseg.logs import file_note, summarises
from microseg.models.builtin import run_model
from microseg.recipes.results import Diagnosis, DiagnosisSummary
from microseg.runs import RunFolder, create_output_dir, unique_name, write_summary

__all__ = ["diagnose_model", "sweep_sizes"]

log = logging.getLogger(__name__)

COMPARISON_DATA = ("synthetic", "run")


@dataclass
class _Subject:
    """The model under diagnosis, its settings and its held-out images."""

    name: str
    model: Any
    config: Any
    train_config: dict[str, Any]
    val: list[Any]

    @property
    def divisor(self) -> int:
        from microseg.models import size_divisor

        return size_divisor(self.config)

    @property
    def fixed_side(self) -> int | None:
        """The side of the only input a network of fixed input shape (UNETR) takes, else None."""
        from microseg.models.factory import required_input_shape

        fixed = required_input_shape(self.config)
        return None if fixed is None else int(min(fixed))

    @property
    def patch_size(self) -> tuple[int, ...]:
        default = (128,) * self.config.ndim if self.config.ndim == 2 else (32, 64, 64)
        return tuple(int(p) for p in self.train_config.get("patch_size") or default)

    @property
    def batch_size(self) -> int:
        return int(self.train_config.get("batch_size") or 2)


@summarises(lambda a: Path(a["run_dir"]) / "diagnostics")
def diagnose_model(
    run_dir: str | Path,
    model_name: str | None = None,
    tile_shape: int | None = None,
    halo: int | None = None,
    compare_norms: bool = False,
    quick: bool = False,
    comparison_data: str = "synthetic",
    device: Any = "auto",
    overwrite: bool = False,
) -> Diagnosis:
    """Run every diagnostic on one trained model and write ``diagnostics/<name>/summary.json``.

    Parameters
    ----------
    run_dir : the run folder (notebooks 01 and 02 ran there).
    model_name : a model in ``run_dir/models``, or a path to a model folder; None: the run's model
        (:meth:`microseg.runs.RunFolder.default_model_name`: the one notebook 02 trained).
    tile_shape : inner tile side of the tiled prediction; None: the training patch side.
    halo : halo in pixels; None: the recommended halo of the measured receptive field.
    compare_norms : also train and compare small models with each normalization (minutes; see
        :mod:`microseg.diagnostics.comparison`).
    quick : smoke run: one validation image, fewer random trials, a tiny comparison.
    comparison_data : ``"synthetic"`` (built-in 3D volumes, as the tiling paper) or ``"run"`` (this run's
        training and validation images).
    device : ``"auto"`` (GPU if available), ``"cpu"``, ``"cuda"``.
    overwrite : write over an existing ``diagnostics/<name>/`` instead of a new folder.

    Returns
    -------
    :class:`~microseg.recipes.results.Diagnosis` with ``summary`` (a
    :class:`~microseg.recipes.results.DiagnosisSummary`, what ``summary.json`` holds: ``trf``, ``erf``, ``recommended_halo``,
    ``halo``, ``tile_mismatch``, ``max_abs_diff``, ``train_eval_disparity``, ``tile_sweep``,
    ``norm_comparison``, ...), ``out_dir``, ``figures`` (name → matplotlib Figure, also saved
    as PNG), ``tables`` (pandas DataFrames) and ``mismatch``: (sample, full result with its map)
    of the first validation image that holds a tile pair, or None.

    Raises
    ------
    RunOrderError
        If the split (notebook 01) or a trained model (notebook 02) is missing.
    ConfigError
        For an unknown ``comparison_data`` or a non-positive ``tile_shape``/``halo``.
    """
    started = time.perf_counter()
    if comparison_data not in COMPARISON_DATA:
        raise ConfigError(
            f"comparison_data {comparison_data!r} is not known; choose 'synthetic' or 'run'"
        )
    run = RunFolder(run_dir)
    subject = _load_subject(run, model_name, quick, device)
    field = _receptive_field(subject, halo, quick)
    tile = _inner_tile(subject, tile_shape, field["halo"])
    mismatch = _tile_mismatch(subject, tile, field["halo"], device)
    disparity = _disparity(subject, device)
    sweep = _sweep(subject, tile, field["halo"], device)
    comparison = _comparison(run, subject, compare_norms, comparison_data, quick, device)
    summary = DiagnosisSummary.from_dict({
        "model_name": subject.name,
        "norm": subject.config.norm,
        "ndim": subject.config.ndim,
        **field["summary"],
        "tile_shape": tile,
        "tile_mismatch": mismatch["summary"],
        "max_abs_diff": mismatch["summary"]["max_abs_diff"],
        "train_eval_disparity": disparity,
        "tile_sweep": _records(sweep),
        "norm_comparison": [] if comparison is None else comparison.rows,
        "norm_comparison_settings": None if comparison is None else comparison.settings,
        "n_val_images": len(subject.val),
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 1),
    })
    out_dir = _output_dir(run, subject.name, overwrite)
    write_summary(out_dir, summary)
    figures = _figures(subject, field, mismatch, sweep, comparison)
    _save_figures(figures, out_dir)
    tables = (
        {"tile_sweep": sweep}
        if comparison is None
        else {"tile_sweep": sweep, "norm_comparison": comparison.table()}
    )
    return Diagnosis(summary=summary, out_dir=out_dir, figures=figures, tables=tables,
                     mismatch=mismatch["first"])


def _load_subject(run: RunFolder, model_name: str | None, quick: bool, device: Any) -> _Subject:
    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.models import TrainedModel

    run.require_split()
    name = model_name or run.default_model_name()
    model = TrainedModel.load(run_model(run, name), device=device)
    name = run.model_key(name)
    val = load_subset(load_manifest(run.root), "val")
    if not val:
        raise RunOrderError(
            f"the split in {run.split_manifest} has no validation images: re-run notebook 01"
        )
    return _Subject(name, model.network, model.config, model.checkpoint.get("train_config") or {},
                    val[:1] if quick else val)


def _output_dir(run: RunFolder, name: str, overwrite: bool) -> Path:
    parent = run.root / "diagnostics"
    chosen = name if overwrite else unique_name(parent, name)
    if chosen != name:
        log.info(
            "%s already holds a diagnosis; writing this one to %s", parent / name, parent / chosen
        )
    return create_output_dir(run.diagnostics_dir(chosen), overwrite=overwrite)


def _receptive_field(subject: _Subject, halo: int | None, quick: bool) -> dict[str, Any]:
    from microseg.inference.receptive_field import (
        check_halo,
        effective_receptive_field,
        input_gradient_magnitude,
        recommended_halo,
        theoretical_receptive_field,
    )

    ndim, channels, trials = subject.config.ndim, subject.config.in_channels, 2 if quick else 4
    # A network of fixed input shape (UNETR) is probed at that shape only: its attention
    # reaches the whole window, which the measurement then reports.
    probe = dict(n_trials=trials, size=subject.fixed_side)
    trf = theoretical_receptive_field(subject.model, ndim, channels, **probe)
    erf = effective_receptive_field(subject.model, ndim, channels, **probe)
    recommended = recommended_halo(trf, subject.divisor)
    if halo is not None and halo < 0:
        raise ConfigError(f"halo must be >= 0 pixels, found {halo}")
    used = max(recommended) if halo is None else int(halo)
    sufficient = check_halo(used, trf, subject.divisor)
    return {
        "trf": trf,
        "erf": erf,
        "halo": used,
        "magnitude": input_gradient_magnitude(subject.model, ndim, channels, **probe),
        "summary": {
            "trf": trf.to_dict(),
            "erf": erf.to_dict(),
            "recommended_halo": list(recommended),
            "halo": used,
            "halo_sufficient": sufficient,
        },
    }


def _inner_tile(subject: _Subject, tile_shape: int | None, halo: int) -> int:
    if tile_shape is not None and tile_shape < 1:
        raise ConfigError(f"tile_shape must be >= 1 pixel, found {tile_shape}")
    if subject.fixed_side is not None:
        # Windows of the model's fixed shape: the inner tile is what the halo leaves of it.
        if tile_shape is not None:
            log.info("tile_shape %s ignored: this model reads windows of %s pixels only",
                     tile_shape, subject.fixed_side)
        return max(subject.divisor, subject.fixed_side - 2 * halo)
    wanted = max(subject.patch_size) if tile_shape is None else int(tile_shape)
    return max(subject.divisor, wanted // subject.divisor * subject.divisor)


def _tile_mismatch(subject: _Subject, tile: int, halo: int, device: Any) -> dict[str, Any]:
    from microseg.diagnostics.mismatch import pair_geometry, tile_mismatch

    results = []
    for sample in subject.val:
        side, offset = pair_geometry(sample.image.shape[1:], tile + 2 * halo, halo, subject.divisor)
        try:
            result = tile_mismatch(subject.model, sample.image, side, halo, offset, device=device)
            results.append((sample, result))
        except ConfigError as err:
            file_note(log, "mismatch-skipped", sample.stem, f"tile mismatch skipped: {err}",
                      "images without a tile-mismatch measurement", level=logging.WARNING)
    first = next(((sample, r) for sample, r in results), None)
    return {"summary": _mean_mismatch([r for _, r in results]), "first": first}


def _mean_mismatch(results: list[dict[str, Any]]) -> dict[str, Any]:
    if not results:
        return {
            "per_channel": None,
            "mean": None,
            "any_mismatch": None,
            "any": None,
            "max_abs_diff": None,
            "n_pairs": 0,
            "n_images": 0,
            "note": "no validation image holds a pair of tiles",
        }
    per_channel = []
    for c in range(len(results[0]["per_channel"])):
        values = [r["per_channel"][c] for r in results if r["per_channel"][c] is not None]
        per_channel.append(float(np.mean(values)) if values else None)
    measured = [v for v in per_channel if v is not None]
    return {
        "per_channel": per_channel,
        "mean": float(np.mean(measured)) if measured else None,
        "any_mismatch": [
            any(r["any_mismatch"][c] for r in results) for c in range(len(per_channel))
        ],
        "any": any(r["any"] for r in results),
        "max_abs_diff": max(r["max_abs_diff"] for r in results),
        "n_pairs": sum(r["n_pairs"] for r in results),
        "n_images": len(results),
        "tile_shape": results[0]["tile_shape"],
        "offset": results[0]["offset"],
    }


def _disparity(subject: _Subject, device: Any) -> dict[str, Any]:
    from microseg.diagnostics.disparity import train_eval_disparity

    images = [sample.image for sample in subject.val]
    tile = tuple(
        min(
            p,
            max(
                subject.divisor,
                min(i.shape[1 + a] for i in images) // subject.divisor * subject.divisor,
            ),
        )
        for a, p in enumerate(subject.patch_size)
    )
    return train_eval_disparity(
        subject.model, images, subject.batch_size, tile_shape=tile, device=device
    )


def sweep_sizes(tile: int, divisor: int, largest: int) -> list[int]:
    """Inner tile sizes for the sweep: ``tile`` / 4, / 2, · 1, · 2 on the divisor grid, at most
    ``largest`` (the largest image side, beyond which tiles stop changing anything).

    Example
    -------
    >>> sweep_sizes(128, 4, 256)
    [32, 64, 128, 256]
    """
    sizes = {max(divisor, int(tile * f) // divisor * divisor) for f in (0.25, 0.5, 1.0, 2.0)}
    capped = {min(s, math.ceil(largest / divisor) * divisor) for s in sizes}
    return sorted(capped)


def _sweep(subject: _Subject, tile: int, halo: int, device: Any) -> Any:
    from microseg.diagnostics.sweep import tile_size_sweep

    if subject.fixed_side is not None:
        import pandas as pd

        log.info("no tile-size sweep: this model reads windows of one fixed size only")
        return pd.DataFrame(columns=["tile_size", "input_side", "dice", "mismatch"])
    largest = max(max(s.image.shape[1:]) for s in subject.val)
    sizes = sweep_sizes(tile, subject.divisor, largest)
    return tile_size_sweep(
        subject.model, subject.val, sizes, halo, batch_size=subject.batch_size, device=device
    )


def _comparison(
    run: RunFolder, subject: _Subject, compare_norms: bool, data: str, quick: bool, device: Any
) -> Any:
    if not compare_norms:
        return None
    from microseg.diagnostics.comparison import (
        NormComparisonConfig,
        compare_normalizations,
        synthetic_comparison_data,
    )

    if data == "synthetic":
        config = NormComparisonConfig(quick=quick, ndim=2 if quick else 3)
        train, val = synthetic_comparison_data(config)
    else:
        from microseg.data.dataset import load_subset
        from microseg.data.split import load_manifest

        train, val = load_subset(load_manifest(run.root), "train"), subject.val
        smallest = min(min(s.image.shape[1:]) for s in [*train, *val])
        patch = min(48, smallest // subject.divisor * subject.divisor)
        config = NormComparisonConfig(quick=quick, ndim=subject.config.ndim, patch_size=patch)
    return compare_normalizations(train, val, config, device=device, progress=log.info)


def _records(table: Any) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts (NaN → None, NumPy scalars → Python)."""
    rows = []
    for record in table.to_dict(orient="records"):
        rows.append({k: _plain(v) for k, v in record.items()})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _figures(
    subject: _Subject, field: dict[str, Any], mismatch: dict[str, Any], sweep: Any, comparison: Any
) -> dict[str, Any]:
    from microseg.diagnostics import figures

    result = {
        "receptive_field": figures.plot_receptive_field(
            field["magnitude"],
            field["trf"],
            field["erf"],
            (field["halo"],) * subject.config.ndim,
            subject.divisor,
        ),
    }
    if not sweep.empty:
        result["tile_sweep"] = figures.plot_tile_sweep(sweep)
    if mismatch["first"] is not None:
        sample, first = mismatch["first"]
        result["tile_mismatch"] = figures.plot_mismatch_map(sample.image, first)
    if comparison is not None:
        result["norm_comparison"] = figures.plot_norm_comparison(comparison)
    return result


def _save_figures(figures: dict[str, Any], out_dir: Path) -> None:
    from microseg.runs import save_figure

    for name, figure in figures.items():
        save_figure(figure, out_dir / "figures" / f"{name}.png", dpi=110)
