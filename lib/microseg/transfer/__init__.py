"""Start from a pretrained model: load it, freeze part of it, adapt it, and correct its predictions.

Submodules (import them directly; this package imports nothing heavy):

- :mod:`microseg.transfer.loading` — load a model folder, a bioimage.io package or a state dict,
  safely (weights only, zip members checked, TorchScript only on request);
- :mod:`microseg.transfer.freezing` — layer groups (encoder, bottleneck, decoder, head),
  freezing by group or depth with frozen normalization statistics, gradual unfreezing;
- :mod:`microseg.transfer.adapt` — other input channels or output classes, learning rates per
  layer group;
- :mod:`microseg.transfer.human_in_the_loop` — predict, let a person correct, retrain.

>>> from microseg.transfer.loading import load_pretrained
>>> from microseg.transfer.freezing import freeze
"""

__all__: list[str] = []
