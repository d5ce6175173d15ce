"""Recipes: the stage-level functions the notebooks call, one module per stage.

Import the submodules directly, e.g. ``from microseg.recipes.prepare import prepare_data``;
this package imports nothing heavy. What each recipe returns is a small frozen dataclass of
:mod:`microseg.recipes.results` (``summary.n_train``, ``result.summary.best_model``), whose
``to_dict()`` is the step's ``summary.json``.
"""

__all__: list[str] = []
