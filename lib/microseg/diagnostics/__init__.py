"""Normalization diagnostics: receptive field and halo, tile mismatch, train/eval disparity,
tile-size sweep, and the comparison of normalization layers.

Import the submodules; this package imports nothing heavy.

>>> from microseg.diagnostics.receptive_field import theoretical_receptive_field  # doctest: +SKIP
>>> from microseg.diagnostics.mismatch import tile_mismatch                       # doctest: +SKIP
"""
