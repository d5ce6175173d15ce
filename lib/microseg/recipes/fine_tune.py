"""Stage 04: fine-tune every layer of a pretrained model, then improve it with corrections.

What ``notebooks/04_fine_tune.ipynb`` calls. The first steps are notebook 03's (imported here from
:mod:`microseg.recipes.transfer`, so the notebook needs this module only): load the pretrained
model and the target data (:func:`prepare_transfer`), check it zero-shot (:func:`zero_shot`),
fine-tune every layer (:func:`adapt_pretrained` with ``AdaptConfig(mode="finetune")``) and train
the same budget from scratch (:func:`train_scratch`). Then the human in the loop,
:func:`correction_rounds`: predict new images into ``run_dir/corrections/round_<k>/``, a person
corrects them (simulated from true labels in headless runs), fine-tune again with them added.
:func:`fine_tune` does it all in one call.

Example
-------
>>> summary = fine_tune("runs/demo", quick=True, rounds=1)               # doctest: +SKIP
>>> [r["dice_after"] for r in summary["rounds"]]                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from microseg.errors import ConfigError, MicrosegError
from microseg.recipes.results import AdaptationSummary, CorrectionRound
from microseg.recipes.transfer import (
    Adapted,
    TransferSetup,
    adapt_pretrained,
    adaptation_summary,
    comparison_table,
    fit_model,
    prepare_transfer,
    scratch_learning_rate,
    train_budget,
    train_scratch,
    zero_shot,
)
from microseg.runs import write_summary

__all__ = [
    "adapt_pretrained",
    "adaptation_summary",
    "ask_for_corrections",
    "comparison_table",
    "correction_rounds",
    "fine_tune",
    "prepare_transfer",
    "train_scratch",
    "zero_shot",
]

log = logging.getLogger(__name__)


def fine_tune(run_dir: str | Path, pretrained: str | Path | None = None,
              target_data_dir: str | Path | None = None, n_target_train: int = 4,
              n_target_val: int = 2, learning_rate: float | None = None,
              group_learning_rates: dict[str, float] | None = None, epochs: int | None = None,
              rounds: int = 1, images_per_round: int = 2,
              unlabelled_dir: str | Path | None = None, model_name: str = "finetune",
              seed: int = 0, device: str = "auto", quick: bool = False, overwrite: bool = False,
              callbacks: Sequence[Callable] = ()) -> AdaptationSummary:
    """Notebook 04 in one call: zero-shot, fine-tuning, scratch baseline, correction rounds.

    Fine-tunes every layer (``models/<model_name>/``), trains ``models/<model_name>_scratch/``
    with the same budget, then runs ``rounds`` human-in-the-loop rounds with simulated
    corrections (:func:`correction_rounds`), and writes the summary with ``rounds`` into
    ``models/<model_name>/summary.json``; the rounds also go to
    ``run_dir/corrections/rounds.csv``. Returns the summary.
    """
    from microseg.transfer.adapt import AdaptConfig

    setup = prepare_transfer(run_dir, pretrained, target_data_dir, n_target_train, n_target_val,
                             quick=quick, seed=seed, device=device, overwrite=overwrite)
    zero = zero_shot(setup)
    adapt = AdaptConfig(mode="finetune", learning_rate=learning_rate,
                        group_learning_rates=group_learning_rates)
    adapted = adapt_pretrained(setup, model_name, adapt, epochs, callbacks, overwrite)
    scratch = train_scratch(setup, f"{model_name}_scratch", epochs=epochs, callbacks=callbacks,
                            overwrite=overwrite)
    done = correction_rounds(setup, adapted, rounds, images_per_round, unlabelled_dir,
                             simulate=True, epochs=epochs, overwrite=overwrite)
    summary = adaptation_summary(setup, zero, adapted, scratch, [r.record for r in done])
    write_summary(adapted.model_dir, summary)
    return summary


def correction_rounds(setup: TransferSetup, start: Adapted, rounds: int = 1,
                      images_per_round: int = 2, unlabelled_dir: str | Path | None = None,
                      simulate: bool = True, wait: Callable[[Any], None] | None = None,
                      epochs: int | None = None, learning_rate: float | None = None,
                      overwrite: bool = False) -> list[CorrectionRound]:
    """Human-in-the-loop rounds, each: predict → correct → add to training → fine-tune again.

    Round k predicts the next ``images_per_round`` unlabelled images with the current model
    into ``run_dir/corrections/round_<k>/`` (see :mod:`microseg.transfer.human_in_the_loop`);
    then the labels are corrected — by ``simulate`` (the true labels, from
    ``unlabelled_dir/labels`` or the built-in synthetic pool), or by a person while ``wait``
    blocks (e.g. :func:`ask_for_corrections`); then every layer is fine-tuned from the current
    model on the target training images plus all corrected images so far, saved as
    ``models/<start.name>_round<k>/``.

    Parameters
    ----------
    unlabelled_dir : folder with ``images/`` (and ``labels/`` to simulate); None: built-in
        synthetic target images (``run_dir/target/data/pool``), with true labels.

    Returns
    -------
    One :class:`~microseg.recipes.results.CorrectionRound` per round: ``record``, ``round``
    (the correction folder) and ``model`` (:class:`~microseg.recipes.transfer.Adapted`);
    the records (``round``, ``images_added``, ``n_train``, ``changed_pixels``, ``dice_before``,
    ``dice_after``, ``model_dir``) are also written to ``run_dir/corrections/rounds.csv``.
    """
    from microseg.transfer.human_in_the_loop import write_rounds_csv

    if rounds < 0 or images_per_round < 1:
        raise ConfigError(f"rounds={rounds}, images_per_round={images_per_round}: need rounds "
                          f">= 0 and at least one image per round")
    if rounds == 0:
        return []
    pool = _pool(setup, unlabelled_dir, rounds * images_per_round, simulate)
    done, current, manifest = [], start, setup.manifest
    for k in range(1, rounds + 1):
        images = pool[(k - 1) * images_per_round: k * images_per_round]
        result, manifest = _one_round(setup, current, f"{start.name}_round{k}", manifest, k,
                                      images, simulate, wait, epochs, learning_rate, overwrite)
        done.append(result)
        current = result.model
    if done:
        write_rounds_csv([r.record for r in done],
                         setup.run.root / "corrections" / "rounds.csv")
    return done


def _pool(setup: TransferSetup, unlabelled_dir: str | Path | None, needed: int,
          simulate: bool) -> list[Path]:
    """Unlabelled image files, sorted; the built-in synthetic pool is written when needed."""
    from microseg.errors import DataError
    from microseg.io import list_images

    if unlabelled_dir is None:
        unlabelled_dir = _synthetic_pool(setup, needed)
    setup.pool_dir = Path(unlabelled_dir)
    if simulate and not (setup.pool_dir / "labels").is_dir():
        raise DataError(f"simulated corrections need the true labels in "
                        f"{setup.pool_dir / 'labels'}, which does not exist",
                        ["correct the predictions yourself (simulate_corrections = False), or "
                         "give a folder with images/ and labels/"])
    images = list_images(setup.pool_dir / "images")
    if len(images) < needed:
        raise DataError(f"{setup.pool_dir / 'images'} holds {len(images)} image(s); the "
                        f"correction rounds need {needed}",
                        ["lower rounds or images_per_round, or add unlabelled images"])
    return images


def _synthetic_pool(setup: TransferSetup, needed: int) -> Path:
    from microseg.data.synthetic import write_synthetic_dataset
    from microseg.runs import read_json

    folder = setup.target.data_dir / "pool"
    shape = tuple(setup.train[0].image.shape[1:])
    if (folder / "synthetic.json").is_file():
        record = read_json(folder / "synthetic.json")
        if record["n_images"] >= needed and tuple(record["shape"]) == shape:
            return folder
        raise MicrosegError(f"{folder} holds another synthetic pool ({record['n_images']} "
                            f"images of {record['shape']}); use another run_dir")
    # another seed than the target split's, so the pool images are new images
    return write_synthetic_dataset(folder, n_images=needed, shape=shape,
                                   domain="target", seed=setup.seed + 1)


def _one_round(setup: TransferSetup, current: Adapted, name: str, manifest: Any, k: int,
               images: Sequence[Path], simulate: bool, wait: Callable[[Any], None] | None,
               epochs: int | None, learning_rate: float | None,
               overwrite: bool) -> tuple[CorrectionRound, Any]:
    from microseg.data.dataset import load_subset
    from microseg.transfer import human_in_the_loop as hitl
    from microseg.transfer.adapt import AdaptConfig

    round_ = hitl.write_correction_round(
        setup.run.root, k, setup.predictor(current.model, current.config), images,
        ndim=manifest.ndim, overwrite=overwrite)
    if simulate:
        hitl.simulate_corrections(round_, setup.pool_dir / "labels")
    elif wait is not None:
        wait(round_)
    pairs, changed = hitl.read_corrections(round_, ndim=manifest.ndim, axes=manifest.input_axes)
    manifest = hitl.add_corrections_to_split(manifest, pairs, k)
    manifest.save(round_.folder / "split.json")
    model = copy.deepcopy(current.model)
    rate = AdaptConfig(mode="finetune", learning_rate=learning_rate).effective_learning_rate(
        scratch_learning_rate())
    budget = train_budget(setup.quick, epochs, rate, setup.seed + k, current.config.ndim)
    after = fit_model(setup, name, f"round{k}", model, current.config, budget, (), overwrite,
                      train=setup.represented(load_subset(manifest, "train")))
    record = {"round": k, "images_added": [p.stem for p in pairs], "n_train": len(manifest.train),
              "changed_pixels": float(sum(changed.values()) / max(1, len(changed))),
              "dice_before": current.quality.foreground_dice,
              "dice_after": after.quality.foreground_dice, "model_dir": str(after.model_dir),
              "corrections_dir": str(round_.folder), "simulated": simulate}
    return CorrectionRound(record=record, round=round_, model=after), manifest


def ask_for_corrections(round_: Any) -> None:
    """``wait`` for :func:`correction_rounds` in a notebook: show where to correct, then pause.

    Prints the round folder and its README, then waits for the person to press Enter (a text
    box in Jupyter). Needs a person: headless runs use simulated corrections instead.
    """
    print(round_.readme.read_text())
    places = [f"{name}/ ({what})" for name, what in (("labels", "label images"),
                                                     ("qupath", "QuPath GeoJSON"),
                                                     ("fiji", "Fiji ROI sets"))
              if (round_.folder / name).is_dir()]
    print(f"Correct each image in {round_.folder} in one place: {', '.join(places)}; save, then "
          f"press Enter.")
    input("Press Enter when the corrections are saved: ")
