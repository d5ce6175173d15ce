"""Prediction of images of any size: tiles read with a halo, predicted in batches, stitched.

Import the submodules; this package imports nothing heavy.

>>> from microseg.inference.tiling import predict_tiled, predict_whole, tile_grid
"""

__all__: list[str] = []
