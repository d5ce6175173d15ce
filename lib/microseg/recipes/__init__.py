"""Recipes: the stage-level functions the notebooks call, one module per stage.

Import the submodules directly, e.g. ``from microseg.recipes.prepare import prepare_data``;
this package imports nothing heavy.
"""

__all__: list[str] = []
