"""The HTML QC report: self-contained, escaped, every part present, figures round-trip."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from microseg.reports.evaluation_report import (
    METRIC_DEFINITIONS,
    build_report,
    png_data_uri,
    write_report,
)

SUMMARY = {
    "model": "unet <b>v2</b>", "task": "instance", "subset": "test", "n_images": 3,
    "object_dice": 0.91, "mean_class_dice": 0.7,
    "pixel": {"background": {"iou": 0.95, "dice": 0.97, "precision": 0.96, "recall": 0.98},
              "boundary": {"iou": 0.4, "dice": 0.57, "precision": None, "recall": 0.5}},
    "pixel_mean_over_images": {"background": {"iou": 0.94, "dice": 0.96}},
    "instance": {"thresholds": [0.5, 0.75], "tp": [9, 6], "fp": [1, 4], "fn": [2, 5],
                 "precision": [0.9, 0.6], "recall": [0.82, 0.55], "f1": [0.857, 0.571],
                 "ap": [0.75, 0.4], "mean_matched_iou": [0.8, 0.85],
                 "panoptic_quality": [0.69, 0.49], "mean_ap": 0.575,
                 "mean_over_images": {"f1": [0.85, None]}},
    "at_threshold": {"threshold": 0.5, "f1": 0.857, "ap": 0.75, "panoptic_quality": 0.69},
    "fit_diagnosis": {"verdict": "good fit", "reason": "both losses flat & close"},
}


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    yield fig
    plt.close(fig)


def test_report_holds_every_part_and_escapes_text(figure, tmp_path):
    import pandas as pd

    png = tmp_path / "f.png"
    figure.savefig(png)
    table = pd.DataFrame({"stem": ["a", "b"], "f1@0.5": [0.5, np.nan]})
    page = build_report(SUMMARY, table=table, figures={"curve": figure, "saved": png},
                        model_info={"norm": "batchrenorm"}, data_info={"source": "test split"},
                        environment={"torch": "2.13.0", "microseg": "0.1.0"})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "unet &lt;b&gt;v2&lt;/b&gt;" in page and "<b>v2</b>" not in page
    assert "both losses flat &amp; close" in page
    for heading in ("Key numbers", "Methods", "Pixel metrics per class", "Object metrics",
                    "fit diagnosis", "Figures", "Per image, worst first", "Model", "Data",
                    "Environment", "Metric definitions"):
        assert heading in page, heading
    assert page.count("data:image/png;base64,") == 2
    assert all(term in page for term in METRIC_DEFINITIONS)
    assert "<td>–</td>" in page and "<td>0.857</td>" in page and "batchrenorm" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page) and "<script" not in page


def test_undefined_values_are_dashes_not_numbers():
    page = build_report({"model": "m", "task": "binary", "subset": "test", "n_images": 1,
                         "pixel": {"foreground": {"iou": None, "dice": float("nan")}}})
    row = re.search(r"<tr><td>foreground</td>(.*?)</tr>", page).group(1)
    assert "0.000" not in row and row.count("–") >= 2
    assert "Object metrics" not in page


def test_png_round_trip_and_written_file_equals_built_page(figure, tmp_path):
    png = tmp_path / "f.png"
    figure.savefig(png)
    uri = png_data_uri(png)
    assert base64.b64decode(uri.split(",", 1)[1]) == png.read_bytes()
    assert png_data_uri(png.read_bytes()) == uri
    decoded = base64.b64decode(png_data_uri(figure).split(",", 1)[1])
    assert decoded.startswith(b"\x89PNG")
    path = write_report(tmp_path / "out" / "report.html", SUMMARY)
    assert re.sub(r"created [^·]*", "", path.read_text()) == \
        re.sub(r"created [^·]*", "", build_report(SUMMARY))
