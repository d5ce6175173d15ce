"""The recipes' typed results: fields, the summary dict they stand for, and old dict-style code."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from microseg.recipes import results as r
from microseg.runs import write_summary

EVERY_RESULT = [c for c in vars(r).values()
                if isinstance(c, type) and issubclass(c, r.Result) and c is not r.Result]


def test_every_result_is_frozen_and_documents_its_fields():
    assert len(EVERY_RESULT) == 19, "a result type was added or lost"
    for cls in EVERY_RESULT:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        assert cls.__doc__ and len(cls.__doc__) > 80, f"{cls.__name__} has no documentation"
        undocumented = [k for k in cls.keys_of() if k not in cls.__doc__]
        assert not undocumented, f"{cls.__name__} does not say what {undocumented} are"


def test_a_summary_dict_goes_through_a_result_unchanged():
    written = {"n_images": 3, "n_train": 2, "object_diameter": None, "axes": None,
               "parameters": {"seed": 0}, "made_by_an_older_version": [1, 2]}
    summary = r.DataSummary.from_dict(written)
    assert summary.to_dict() == written
    assert summary.n_train == 2 and summary.parameters == {"seed": 0}
    # keys the dict did not have read as None but are not invented
    assert summary.class_names is None and "class_names" not in summary.to_dict()
    assert summary.extra == {"made_by_an_older_version": [1, 2]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.n_train = 5


def test_old_dict_style_code_keeps_working():
    summary = r.TrainingSummary.from_dict({"best_epoch": 4, "fit_diagnosis": {"verdict": "ok"},
                                           "postprocessing": None})
    assert summary["best_epoch"] == 4 and summary["fit_diagnosis"]["verdict"] == "ok"
    assert summary.get("postprocessing") is None and summary.get("halo", "none") == "none"
    assert "best_epoch" in summary and "halo" not in summary
    assert dict(summary) == {"best_epoch": 4, "fit_diagnosis": {"verdict": "ok"},
                             "postprocessing": None}
    assert {**summary, "x": 1}["x"] == 1 and len(summary) == 3
    assert summary == {"best_epoch": 4, "fit_diagnosis": {"verdict": "ok"}, "postprocessing": None}
    assert summary != {"best_epoch": 5, "fit_diagnosis": {"verdict": "ok"}, "postprocessing": None}
    with pytest.raises(KeyError):
        summary["halo"]
    with pytest.raises(KeyError):
        summary["absent"]  # the bookkeeping fields are not summary keys


def test_replace_sets_a_field_that_was_absent():
    summary = r.AdaptationSummary.from_dict({"mode": "finetune"})
    changed = summary.replace(rounds=[{"round": 1}])
    assert changed.to_dict() == {"mode": "finetune", "rounds": [{"round": 1}]}
    assert summary.to_dict() == {"mode": "finetune"}


def test_nested_results_become_plain_json(tmp_path):
    model = r.ModelEvaluation.from_dict({"model": "unet", "dsb_score": 0.5})
    combined = r.EvaluationSummary.from_dict({"best_model": "unet", "models": {"unet": model}})
    path = write_summary(tmp_path, combined)
    assert json.loads(path.read_text()) == {"best_model": "unet",
                                            "models": {"unet": {"model": "unet",
                                                                "dsb_score": 0.5}}}
    estimate = r.TimeEstimate(minutes=np.float64(1.5), seconds_per_step=0.1, device="cpu",
                              steps=np.int64(10))
    assert json.loads(write_summary(tmp_path, estimate).read_text())["steps"] == 10
