"""Built-in synthetic fluorescence nuclei with instance labels, in 2D and 3D.

Every notebook runs on these by default, so the whole chain works without downloading anything.
An image is made the way a widefield camera image of stained nuclei comes about:

1. objects: ellipses (2D) or ellipsoids (3D) of varied size, elongation, orientation and
   brightness, placed at random; an object may press a little into the ones placed before it
   (touching nuclei), but label images never overlap: each pixel belongs to one object;
2. a fine texture inside the objects (chromatin-like);
3. blur by a Gaussian point-spread function;
4. an uneven background: a smooth low-frequency field on top of a constant floor;
5. photon shot noise (Poisson), camera read noise (Gaussian), gain and offset, rounded to uint16.

Two named appearances (``domain``): ``"source"`` (the default) and ``"target"``, a shifted
appearance for transfer-learning experiments: lower signal-to-noise ratio, larger objects, a
stronger uneven background, more blur and a different camera gain (intensity scale). Both are
presets of :class:`SyntheticConfig`; pass your own config for anything else.

Example
-------
>>> image, label = synthetic_sample((128, 128), seed=3)
>>> image.shape, image.dtype.name, label.dtype.name
((1, 128, 128), 'uint16', 'int32')
>>> target = domain_config("target")
>>> target.snr < SyntheticConfig().snr
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError

__all__ = [
    "DOMAINS",
    "SyntheticConfig",
    "domain_config",
    "resolve_config",
    "synthetic_record",
    "synthetic_sample",
    "write_synthetic_dataset",
]

log = logging.getLogger(__name__)

DOMAINS = ("source", "target")

# How the "target" appearance differs from the "source" defaults (a different microscope).
_TARGET_CHANGES = MappingProxyType({
    "radius_range": (8.0, 13.0),
    "snr": 4.0,
    "background_strength": 0.8,
    "blur_sigma": 1.5,
    "intensity_scale": 3.0,
})

_UINT16_MAX = 65535
_ATTEMPTS_PER_OBJECT = 20
_MIN_VISIBLE_FRACTION = 0.3


@dataclass
class SyntheticConfig(StageConfig):
    """How the synthetic nuclei look. Lengths are in pixels; intensities relative to an object
    of brightness 1 unless said otherwise.

    radius_range: (min, max) radius of an object, drawn uniformly; the radius is the geometric
        mean of the semi-axes, so an object's area (volume) does not depend on its elongation.
    elongation_range: (min, max) ratio of longest to shortest semi-axis, drawn uniformly
        (1 = round). Orientation is uniformly random.
    density: fraction of the image the objects should cover. Reached approximately: objects
        that would overlap earlier ones too much are dropped.
    max_contact: largest fraction of a new object that may lie under objects placed before it;
        above 0 objects touch and press into each other (labels never overlap).
    brightness_range: (min, max) object brightness, drawn uniformly per object.
    texture: strength of the fine intensity texture inside objects (0 = flat objects).
    snr: signal-to-noise ratio of an object of brightness 1 on the background floor: its
        signal divided by the standard deviation of the shot and read noise inside it. It sets
        the photon count per image.
    read_noise: camera read noise, standard deviation in photo-electrons.
    background_level: constant background floor.
    background_strength: amplitude of the uneven background: a smooth field varying between 0
        and this value across each image, added to the floor.
    blur_sigma: standard deviation of the Gaussian point-spread function (0 = no blur).
    intensity_scale: camera gain, grey values per photo-electron.
    offset: camera offset in grey values, added before rounding to uint16.
    """

    radius_range: tuple[float, float] = (5.0, 9.0)
    elongation_range: tuple[float, float] = (1.0, 1.8)
    density: float = 0.35
    max_contact: float = 0.1
    brightness_range: tuple[float, float] = (0.5, 1.0)
    texture: float = 0.15
    snr: float = 12.0
    read_noise: float = 2.0
    background_level: float = 0.1
    background_strength: float = 0.2
    blur_sigma: float = 1.0
    intensity_scale: float = 1.0
    offset: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = _range_problems(self) + _value_problems(self)
        if problems:
            raise ConfigError("SyntheticConfig: " + "; ".join(problems))

    @property
    def photons_per_brightness(self) -> float:
        """Expected photo-electrons of an object of brightness 1, solved from ``snr``.

        ``snr = S / sqrt(S * (1 + background_level) + read_noise**2)`` for the signal ``S``.
        """
        a = self.snr**2 * (1.0 + self.background_level)
        return 0.5 * (a + math.sqrt(a * a + 4.0 * self.snr**2 * self.read_noise**2))


def _range_problems(config: SyntheticConfig) -> list[str]:
    problems = []
    for name, lowest in (("radius_range", 0.5), ("elongation_range", 1.0),
                         ("brightness_range", 0.0)):
        low, high = getattr(config, name)
        if not lowest <= low <= high:
            problems.append(f"{name} {(low, high)} must satisfy {lowest} <= min <= max")
    return problems


def _value_problems(config: SyntheticConfig) -> list[str]:
    checks = [
        ("density", 0.0 < config.density <= 1.0, "between 0 (excluded) and 1"),
        ("max_contact", 0.0 <= config.max_contact < 1.0, "in [0, 1)"),
        ("snr", config.snr > 0, "positive"),
    ]
    checks += [(name, getattr(config, name) >= 0, "at least 0")
               for name in ("texture", "read_noise", "background_level", "background_strength",
                            "blur_sigma", "offset")]
    checks.append(("intensity_scale", config.intensity_scale > 0, "positive"))
    return [f"{name} = {getattr(config, name)!r} must be {rule}"
            for name, ok, rule in checks if not ok]


def domain_config(domain: str = "source") -> SyntheticConfig:
    """The preset :class:`SyntheticConfig` of a named appearance: ``"source"`` or ``"target"``.

    ``"target"`` differs from ``"source"`` by larger objects (radius 8–13 instead of 5–9), a
    lower signal-to-noise ratio (4 instead of 12), a stronger uneven background (0.8 instead
    of 0.2), more blur (1.5 instead of 1.0) and a 3× camera gain. Raises :class:`ConfigError`
    for another name. Change single values with ``domain_config("target").replace(snr=6.0)``.
    """
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r}; choose one of {DOMAINS}")
    config = SyntheticConfig()
    return config.replace(**_TARGET_CHANGES) if domain == "target" else config


def synthetic_sample(shape: Sequence[int], config: SyntheticConfig | None = None,
                     seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its instance labels.

    Parameters
    ----------
    shape: spatial shape, ``(Y, X)`` for 2D or ``(Z, Y, X)`` for 3D.
    config: how the objects and the camera look; None: the ``"source"`` preset.
    seed: seed of ``numpy.random.default_rng`` (an int or a sequence of ints); the same seed
        and config always give identical arrays.

    Returns
    -------
    image: uint16, canonical axes ``"CYX"`` (1, Y, X) or ``"CZYX"`` (1, Z, Y, X).
    label: int32 ``"YX"``/``"ZYX"``, 0 background, objects numbered 1..n without gaps, each a
        connected object.

    Raises :class:`ConfigError` for a shape that is not 2D or 3D or has a side below 8.
    """
    shape = _checked_shape(shape)
    config = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    label, brightness = _place_objects(shape, config, rng)
    expected = _expected_photons(label, brightness, config, rng)
    return _camera(expected, config, rng)[None], label


def _checked_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise ConfigError(f"synthetic image shape {shape}: expected (Y, X) or (Z, Y, X) with "
                          f"every side at least 8 pixels, e.g. (256, 256) or (48, 96, 96)")
    return shape


def _place_objects(shape: tuple[int, ...], config: SyntheticConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Place random ellipses/ellipsoids; return (label int32, brightness per id, [0] = 0).

    Objects are drawn one at a time on their bounding box only. A candidate is dropped when
    more than ``max_contact`` of it lies under earlier objects, when less than 30 % of it is
    inside the image, or when the part left visible is not connected, so every id is one
    connected object. Stops at the number of objects that covers ``density`` of the image or
    after 20 attempts per wanted object.
    """
    label = np.zeros(shape, np.int32)
    brightness = [0.0]
    wanted = _wanted_count(shape, config)
    for _ in range(wanted * _ATTEMPTS_PER_OBJECT):
        if len(brightness) > wanted:
            break
        box, mask, full_size = _random_object(shape, config, rng)
        visible = mask & (label[box] == 0)
        if _acceptable(mask, visible, full_size, config):
            label[box][visible] = len(brightness)
            brightness.append(rng.uniform(*config.brightness_range))
    return label, np.asarray(brightness)


def _wanted_count(shape: tuple[int, ...], config: SyntheticConfig) -> int:
    low, high = config.radius_range
    if len(shape) == 2:
        mean_size = math.pi * (low * low + low * high + high * high) / 3.0
    else:
        mean_size = 4.0 / 3.0 * math.pi * (low + high) * (low * low + high * high) / 4.0
    return max(1, round(config.density * math.prod(shape) / mean_size))


def _random_object(shape: tuple[int, ...], config: SyntheticConfig, rng: np.random.Generator
                   ) -> tuple[tuple[slice, ...], np.ndarray, float]:
    """A random ellipse/ellipsoid: (bounding box in the image, its mask there, full size)."""
    ndim = len(shape)
    radius = rng.uniform(*config.radius_range)
    elongation = rng.uniform(*config.elongation_range)
    semi_axes = radius * elongation ** (np.array([ndim - 1.0] + [-1.0] * (ndim - 1)) / ndim)
    rotation = _random_rotation(ndim, rng)
    centre = rng.uniform(0, shape)
    reach = semi_axes.max()
    starts = np.maximum(np.floor(centre - reach).astype(int), 0)
    stops = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
    offsets = np.stack(np.meshgrid(*[np.arange(a, b) - c for a, b, c in
                                     zip(starts, stops, centre, strict=True)], indexing="ij"))
    body = np.tensordot(rotation.T, offsets, axes=1) / semi_axes.reshape((ndim,) + (1,) * ndim)
    mask = (body * body).sum(axis=0) <= 1.0
    full_size = math.pi * radius**2 if ndim == 2 else 4.0 / 3.0 * math.pi * radius**3
    return box, mask, full_size


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _acceptable(mask: np.ndarray, visible: np.ndarray, full_size: float,
                config: SyntheticConfig) -> bool:
    from scipy import ndimage

    n_visible = int(visible.sum())
    if n_visible < max(4, _MIN_VISIBLE_FRACTION * full_size):
        return False
    if n_visible < (1.0 - config.max_contact) * mask.sum():
        return False
    return n_visible == mask.sum() or ndimage.label(visible)[1] == 1


def _expected_photons(label: np.ndarray, brightness: np.ndarray, config: SyntheticConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Expected photo-electrons per pixel: textured objects, blurred, on an uneven background."""
    from scipy import ndimage

    signal = brightness[label]
    if config.texture > 0:
        grain = ndimage.gaussian_filter(rng.standard_normal(label.shape), 1.0)
        grain /= grain.std() or 1.0
        signal *= np.clip(1.0 + config.texture * grain, 0.0, None)
    if config.blur_sigma > 0:
        signal = ndimage.gaussian_filter(signal, config.blur_sigma)
    background = config.background_level + config.background_strength * _smooth_field(
        label.shape, rng)
    return config.photons_per_brightness * (signal + background)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, n_waves: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1] (float64, ``shape``): a sum of a few plane waves with
    0.2–1.2 cycles per image side, rescaled so its minimum is 0 and maximum 1."""
    grids = np.meshgrid(*[np.arange(s) / s for s in shape], indexing="ij", sparse=True)
    field = np.zeros(shape)
    for _ in range(n_waves):
        frequency = rng.uniform(0.2, 1.2, len(shape)) * rng.choice([-1, 1], len(shape))
        phase = sum(f * g for f, g in zip(frequency, grids, strict=True))
        field += rng.uniform(0.5, 1.0) * np.cos(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))
    span = field.max() - field.min()
    return (field - field.min()) / span if span > 0 else np.zeros(shape)


def _camera(expected: np.ndarray, config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Shot noise, read noise, gain and offset; rounded and clipped to uint16."""
    electrons = rng.poisson(expected) + rng.normal(0.0, config.read_noise, expected.shape)
    grey = config.offset + config.intensity_scale * electrons
    return np.clip(np.rint(grey), 0, _UINT16_MAX).astype(np.uint16)


def write_synthetic_dataset(out_dir: str | Path, n_images: int = 24,
                            shape: Sequence[int] = (256, 256), domain: str = "source",
                            seed: int = 0, config: SyntheticConfig | None = None) -> Path:
    """Write a synthetic dataset: ``out_dir/images/<stem>.tif`` and ``out_dir/labels/<stem>.tif``.

    Stems are ``synthetic_000``, ``synthetic_001``, ...; image ``i`` equals
    ``synthetic_sample(shape, config, seed=(seed, i))``. Images are uint16 TIFFs in axes
    ``"CYX"``/``"CZYX"``, labels uint16 (int32 when more than 65535 objects) ``"YX"``/``"ZYX"``.
    ``out_dir/synthetic.json`` records how the data were made.

    Parameters
    ----------
    out_dir: a new or empty folder.
    n_images: number of images (at least 1).
    shape: spatial shape of each image, ``(Y, X)`` or ``(Z, Y, X)``.
    domain: ``"source"`` or ``"target"`` appearance (see :func:`domain_config`), used when
        ``config`` is None.
    seed: base seed.
    config: a custom appearance; then ``domain`` must stay ``"source"`` (start from
        ``domain_config("target").replace(...)`` to vary the target appearance).

    Returns ``out_dir``. Raises :class:`OutputExistsError` if ``out_dir`` holds files and
    :class:`ConfigError` for invalid arguments.
    """
    from microseg.runs import atomic_write_json, create_output_dir

    shape = _checked_shape(shape)
    if n_images < 1:
        raise ConfigError(f"n_images = {n_images}: need at least 1 synthetic image")
    record = synthetic_record(n_images, shape, domain, seed, config)
    config = resolve_config(domain, config)
    out_dir = create_output_dir(out_dir)
    stems = [f"synthetic_{i:0{max(3, len(str(n_images - 1)))}d}" for i in range(n_images)]
    for i, stem in enumerate(stems):
        image, label = synthetic_sample(shape, config, seed=(seed, i))
        _write_pair(out_dir, stem, image, label)
    atomic_write_json(out_dir / "synthetic.json", record)
    log.info("wrote %d synthetic %dD images to %s", n_images, len(shape), out_dir)
    return out_dir


def synthetic_record(n_images: int, shape: Sequence[int], domain: str, seed: int,
                     config: SyntheticConfig | None = None) -> dict[str, Any]:
    """What ``synthetic.json`` holds: everything needed to make the same dataset again."""
    config = resolve_config(domain, config)
    return {"n_images": int(n_images), "shape": [int(s) for s in shape], "domain": domain,
            "seed": int(seed), "config": config.to_dict()}


def resolve_config(domain: str, config: SyntheticConfig | None) -> SyntheticConfig:
    """The config to draw with: ``config`` if given (then ``domain`` must stay "source"), else
    the preset of ``domain``. Raises ConfigError when both are given."""
    if config is None:
        return domain_config(domain)
    if domain != "source":
        raise ConfigError(f"pass either domain={domain!r} or a config, not both; for a varied "
                          f"target appearance use config=domain_config({domain!r}).replace(...)")
    return config


def _write_pair(out_dir: Path, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    from microseg.io import write_image

    spatial = "ZYX" if label.ndim == 3 else "YX"
    stored = label.astype(np.uint16) if label.max() <= _UINT16_MAX else label
    write_image(out_dir / "images" / f"{stem}.tif", image, axes="C" + spatial)
    write_image(out_dir / "labels" / f"{stem}.tif", stored, axes=spatial)
