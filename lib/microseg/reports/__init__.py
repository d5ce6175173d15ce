"""What a person reads: the run's front page, the evaluation report and the figures.

- :mod:`~microseg.reports.run_report` — the facts of a run folder gathered
  (:func:`~microseg.reports.run_report.gather_run_report`) and written as its front page,
  ``run_dir/index.html``: :mod:`~microseg.reports.run_reader` reads the run folder and the
  notebooks' records, :mod:`~microseg.reports.run_facts` holds what is gathered and
  :mod:`~microseg.reports.front_page` turns it into HTML;
- :mod:`~microseg.reports.evaluation_report` — the one-page, self-contained quality report of
  one model's evaluation (notebook 05);
- :mod:`~microseg.reports.figures` — figures of the data (samples, split, object sizes,
  normalization, augmentations); :mod:`~microseg.reports.evaluation_figures` — figures of an
  evaluation.

Reports read run folders and draw on the domain packages; only the recipes and the notebook
layer import them (``docs/architecture.md``).
"""

__all__: list[str] = []
