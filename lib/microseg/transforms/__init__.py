"""Transforms: input normalization, label → target conversion, augmentation.

Submodules (import them directly; this package imports nothing heavy):

- :mod:`microseg.transforms.normalization` — percentile normalization as a saved config;
- :mod:`microseg.transforms.targets` — instance/semantic labels → class maps for training;
- :mod:`microseg.transforms.augment` — augmentation built from MONAI transforms.
"""

__all__: list[str] = []
