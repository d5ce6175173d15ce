"""Normalization diagnostics: tile mismatch, train/eval disparity, tile-size sweep, and the
comparison of normalization layers. (The receptive field and the halo it implies are part of
prediction: :mod:`microseg.inference.receptive_field`.)

Import the submodules; this package imports nothing heavy.

>>> from microseg.diagnostics.mismatch import tile_mismatch
"""

__all__: list[str] = []
