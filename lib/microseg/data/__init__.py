"""Data: the built-in synthetic generator, the per-image split manifest, loading a split.

Submodules (import them directly; this package imports nothing heavy):

- :mod:`microseg.data.synthetic` — synthetic 2D/3D nuclei with instance labels;
- :mod:`microseg.data.split` — train/val/test split per image, saved as ``data/split.json``;
- :mod:`microseg.data.dataset` — read, crop, normalize one subset of the split;
- :mod:`microseg.data.initial_labels` — automatic initial labels to speed up annotation.
"""

__all__: list[str] = []
