"""QuPath GeoJSON: objects exported from QuPath as label images, and label images for QuPath.

QuPath exports objects with *File > Export objects as GeoJSON* (a ``FeatureCollection``, or a
plain list of features in QuPath 0.2) and imports them by dragging the file onto the image.
Coordinates are pixels of the full-resolution image, origin at its top-left corner; a pixel is
inside an object when its centre is (see :mod:`microseg.io.outlines`, exact for outlines along
pixel edges).

Reading (:func:`geojson_to_labels`): every feature with an area (Polygon, MultiPolygon, with
holes) becomes one object, numbered in file order; points and lines are skipped. Its
classification (``properties.classification.name``) becomes its class; QuPath's special classes
``Region*`` and ``Ignore*`` mark areas, not objects, and are skipped. Cell objects give their
cell outline, or their nucleus (``nucleusGeometry``) with ``nucleus=True``. In a volume each
feature lies on its plane (``geometry.plane.z``); features named ``object <n> z<k>`` (or
``object <n>``) on several planes, as :func:`labels_to_geojson` writes them, form one 3D object.

Writing (:func:`labels_to_geojson`): one feature per object (per plane in 3D), the exact outline
along pixel edges, named ``object <id>``, optionally classified.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_geojson(Path(folder) / "cell_01.geojson", labels)
...     read = geojson_to_labels(path, labels.shape)
>>> np.array_equal(read.labels, labels)
True
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError
from microseg.io.annotations import (
    ImportedAnnotations,
    check_output_dir,
    count_objects,
    notes_for_overlaps,
    paint_objects,
    write_label_file,
)

__all__ = [
    "GeoJsonLabels",
    "geojson_to_labels",
    "import_qupath_folder",
    "labels_to_geojson",
    "read_geojson",
    "write_geojson",
]

GEOJSON_EXTENSIONS = (".geojson", ".json")
AREA_TYPES = ("Polygon", "MultiPolygon")
SKIPPED_CLASSES = ("Region*", "Ignore*")
_OBJECT_NAME = re.compile(r"^object (\d+)(?: z\d+)?$")
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]


@dataclasses.dataclass(frozen=True)
class GeoJsonLabels:
    """A GeoJSON file as images: ``labels`` (int32 objects 1..n) and ``classes`` (int32 class
    ids, 0 background), ``object_classes`` (class name or None per object id, from 1),
    ``skipped`` (features without an area or of a skipped class) and ``n_overlapping``."""

    labels: np.ndarray
    classes: np.ndarray
    object_classes: tuple[str | None, ...]
    skipped: tuple[str, ...]
    n_overlapping: int


def read_geojson(path: str | Path) -> list[dict[str, Any]]:
    """The features of a GeoJSON file: a FeatureCollection, a list of features, or one feature.

    Raises :class:`DataError` naming the file when it is missing, not JSON, or holds no features.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a GeoJSON file exported from QuPath "
                        f"(File > Export objects as GeoJSON)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not a JSON file ({err}); expected GeoJSON exported from "
                        f"QuPath") from None
    features = _features(data)
    if features is None:
        found = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: no GeoJSON features (found {found}); expected a "
                        f"FeatureCollection, a list of features or one feature")
    return features


def _features(data: Any) -> list[dict[str, Any]] | None:
    if isinstance(data, list):
        return [f for f in data if isinstance(f, dict)]
    if not isinstance(data, dict):
        return None
    if data.get("type") == "FeatureCollection":
        return list(data.get("features") or [])
    if data.get("type") == "Feature":
        return [data]
    if data.get("type") in AREA_TYPES:
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    return None


def geojson_to_labels(source: str | Path | Sequence[dict[str, Any]], shape: Sequence[int],
                      class_ids: Mapping[str, int] | None = None,
                      nucleus: bool = False) -> GeoJsonLabels:
    """Fill the features of a GeoJSON file (or a list of features) into label images.

    ``shape`` is ``(Y, X)`` or ``(Z, Y, X)``. ``class_ids`` maps class names to ids (1, 2, ...;
    unclassified objects get 0 in ``classes``); None: the file's class names in sorted order.
    Rules for holes, overlaps (the smaller object keeps them), planes and skipped features are
    in the module docstring. Raises :class:`DataError` naming the features that lie on a plane
    outside the image, on another time point, or whose coordinates cannot be read.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ConfigError(f"shape must be (Y, X) or (Z, Y, X), got {shape}")
    name = str(source) if isinstance(source, (str, Path)) else "GeoJSON features"
    features = read_geojson(source) if isinstance(source, (str, Path)) else list(source)
    parsed, skipped, problems = _parse_features(features, shape, nucleus)
    if problems:
        raise DataError(f"{name}: objects that cannot be placed in an image of shape {shape}",
                        problems)
    groups = _group_by_object(parsed, len(shape) == 3)
    objects = [_object_box(members, shape) for members in groups]
    labels, overlapping = paint_objects(objects, shape)
    names = tuple(members[0]["class"] for members in groups)
    if class_ids is None:
        class_ids = {n: k for k, n in enumerate(sorted({n for n in names if n}), start=1)}
    lookup = np.array([0] + [class_ids.get(n, 0) if n else 0 for n in names], np.int32)
    return GeoJsonLabels(labels, lookup[labels], names, tuple(skipped), overlapping)


def _parse_features(features: list[dict[str, Any]], shape: tuple[int, ...],
                    nucleus: bool) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    parsed, skipped, problems = [], [], []
    for index, feature in enumerate(features):
        label = _feature_label(feature, index)
        geometry = _geometry(feature, nucleus)
        kind = (geometry or {}).get("type")
        cls = _class_name(feature)
        if cls in SKIPPED_CLASSES:
            skipped.append(f"{label} (class {cls}: marks an area, not an object)")
        elif kind not in AREA_TYPES:
            skipped.append(f"{label} ({kind or 'no geometry'}, no area)")
        else:
            try:
                parsed.append({"polygons": _polygons(geometry), "z": _plane(feature, geometry,
                               shape), "class": cls, "name": _properties(feature).get("name")})
            except (ValueError, TypeError, KeyError, IndexError) as err:
                problems.append(f"{label}: {err}")
    return parsed, skipped, problems


def _properties(feature: dict[str, Any]) -> dict[str, Any]:
    properties = feature.get("properties")
    return properties if isinstance(properties, dict) else {}


def _feature_label(feature: dict[str, Any], index: int) -> str:
    name = _properties(feature).get("name")
    return f"feature #{index + 1}" + (f" {name!r}" if name else "")


def _geometry(feature: dict[str, Any], nucleus: bool) -> dict[str, Any] | None:
    if nucleus and isinstance(feature.get("nucleusGeometry"), dict):
        return feature["nucleusGeometry"]
    geometry = feature.get("geometry")
    return geometry if isinstance(geometry, dict) else None


def _class_name(feature: dict[str, Any]) -> str | None:
    classification = _properties(feature).get("classification")
    if isinstance(classification, str):
        return classification or None
    if not isinstance(classification, dict):
        return None
    if classification.get("name"):
        return str(classification["name"])
    names = classification.get("names")
    return ": ".join(map(str, names)) if names else None


def _polygons(geometry: dict[str, Any]) -> list[list[np.ndarray]]:
    coordinates = geometry["coordinates"]
    polygons = [coordinates] if geometry["type"] == "Polygon" else coordinates
    return [[_ring(ring) for ring in polygon] for polygon in polygons]


def _ring(points: Sequence[Sequence[float]]) -> np.ndarray:
    ring = np.asarray(points, np.float64)
    if ring.ndim != 2 or ring.shape[1] < 2:
        raise ValueError(f"a ring must be a list of [x, y] points, found shape {ring.shape}")
    ring = ring[:, :2]
    return ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring


def _plane(feature: dict[str, Any], geometry: dict[str, Any],
           shape: tuple[int, ...]) -> int | None:
    plane = geometry.get("plane") or feature.get("plane") or {}
    z, t = int(plane.get("z", 0)), int(plane.get("t", 0))
    if t != 0:
        raise ValueError(f"on time point t={t}; microseg reads one time point (t=0) per image")
    if len(shape) == 2:
        if z != 0:
            raise ValueError(f"on plane z={z}, but the image is 2D")
        return None
    if not 0 <= z < shape[0]:
        raise ValueError(f"on plane z={z}, outside the {shape[0]} planes of the volume")
    return z


def _group_by_object(parsed: list[dict[str, Any]], volume: bool) -> list[list[dict[str, Any]]]:
    """Features in file order; in a volume, those named ``object <n>`` are joined by name."""
    groups: list[list[dict[str, Any]]] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in parsed:
        found = _OBJECT_NAME.match(item["name"]) if isinstance(item["name"], str) else None
        if volume and found:
            name = found.group(1)
            if name in by_name:
                by_name[name].append(item)
                continue
            by_name[name] = [item]
            groups.append(by_name[name])
        else:
            groups.append([item])
    return groups


def _object_box(members: list[dict[str, Any]],
                shape: tuple[int, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    from microseg.io.outlines import polygon_region

    if len(shape) == 2:
        return polygon_region(members[0]["polygons"], shape)
    return _stack_regions([(m["z"], *polygon_region(m["polygons"], shape[-2:]))
                           for m in members])


def _stack_regions(regions: Sequence[tuple[int, tuple[slice, slice], np.ndarray]]
                   ) -> tuple[tuple[slice, ...], np.ndarray]:
    """Plane regions ``(z, (rows, cols), mask)`` of one object as one 3D ``(box, mask)``."""
    zs = [z for z, _, _ in regions]
    top = min(r.start for _, (r, _), _ in regions)
    left = min(c.start for _, (_, c), _ in regions)
    bottom = max(max(r.stop, r.start) for _, (r, _), _ in regions)
    right = max(max(c.stop, c.start) for _, (_, c), _ in regions)
    mask = np.zeros((max(zs) - min(zs) + 1, bottom - top, right - left), bool)
    for z, (rows, cols), part in regions:
        mask[z - min(zs), rows.start - top: rows.stop - top, cols.start - left:
             cols.stop - left] |= part
    return (slice(min(zs), max(zs) + 1), slice(top, bottom), slice(left, right)), mask


def labels_to_geojson(labels: np.ndarray, class_names: Mapping[int, str] | None = None,
                      object_type: str = "annotation", image_name: str = "") -> dict[str, Any]:
    """A GeoJSON FeatureCollection of a label image ``(Y, X)`` or ``(Z, Y, X)``, for QuPath.

    One feature per object (per plane in 3D), its exact outline (holes included) as a Polygon
    or, for objects in several parts, a MultiPolygon; named ``object <id>`` (``object <id>
    z<k>`` in 3D, k the 1-based plane); classified as
    ``class_names[id]`` when given. ``object_type``: ``"annotation"`` (editable in QuPath) or
    ``"detection"``. ``image_name`` seeds reproducible feature ids.
    """
    from microseg.io.outlines import object_polygons

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise DataError(f"labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}; pass "
                        f"a label image without channel or time axis")
    planes = [labels] if labels.ndim == 2 else list(labels)
    features = []
    for z, plane in enumerate(planes):
        for label, polygons in object_polygons(plane).items():
            geometry = _geometry_of(polygons)
            if labels.ndim == 3:
                geometry["plane"] = {"c": -1, "z": z, "t": 0}
            name = f"object {label}" + (f" z{z + 1}" if labels.ndim == 3 else "")
            features.append(_feature(geometry, label, name, class_names, object_type,
                                     f"{image_name}/{label}/{z}"))
    return {"type": "FeatureCollection", "features": features}


def _geometry_of(polygons: list[list[np.ndarray]]) -> dict[str, Any]:
    rings = [[_closed(ring) for ring in polygon] for polygon in polygons]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


def _closed(ring: np.ndarray) -> list[list[float]]:
    points = np.concatenate([ring, ring[:1]])
    whole = np.all(points == np.round(points))
    return points.astype(np.int64).tolist() if whole else points.tolist()


def _feature(geometry: dict[str, Any], label: int, name: str,
             class_names: Mapping[int, str] | None, object_type: str,
             seed: str) -> dict[str, Any]:
    properties: dict[str, Any] = {"objectType": object_type, "name": name}
    class_name = (class_names or {}).get(label)
    if class_name:
        properties["classification"] = {"name": class_name,
                                         "color": list(_class_colour(class_name))}
    return {"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"microseg:{seed}")),
            "geometry": geometry, "properties": properties}


def _class_colour(name: str) -> tuple[int, int, int]:
    return _PALETTE[sum(name.encode()) % len(_PALETTE)]


def write_geojson(path: str | Path, labels: np.ndarray,
                  class_names: Mapping[int, str] | None = None,
                  object_type: str = "annotation") -> Path:
    """Write :func:`labels_to_geojson` of ``labels`` to ``path`` (atomically); returns the path."""
    from microseg.runs import atomic_write_text

    path = Path(path)
    collection = labels_to_geojson(labels, class_names, object_type, image_name=path.stem)
    return atomic_write_text(path, json.dumps(collection, separators=(",", ":")))


def _geojson_stem(path: Path) -> str:
    """The image stem a GeoJSON file belongs to: ``a.geojson`` and ``a.tif.geojson`` → ``a``."""
    from microseg.io.images import image_stem

    name = path.name
    for extension in GEOJSON_EXTENSIONS:
        if name.lower().endswith(extension):
            name = name[: -len(extension)]
            break
    return image_stem(name)


def import_qupath_folder(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                         ndim: int | None = None, axes: str | None = None,
                         nucleus: bool = False) -> ImportedAnnotations:
    """Convert one GeoJSON file per image (``<stem>.geojson``) into label images in ``out_dir``.

    ``source`` is a folder of GeoJSON files or one file. Each label image gets its image's
    spatial shape (``images_dir/<stem>.*``, header only). Class ids follow the sorted class
    names over all files, so they agree between images. Checks everything before writing;
    raises :class:`DataError` listing files without an image and features that cannot be placed.
    """
    from microseg.io.images import image_stem, read_header
    from microseg.io.pairing import list_images

    if images_dir is None:
        raise DataError(f"{source}: QuPath objects hold shapes only; give images_dir, the "
                        f"folder of the images they were drawn on")
    images = {image_stem(p): p for p in list_images(images_dir)}
    check_output_dir(out_dir, [source, Path(images_dir)])
    files = [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.suffix.lower() in GEOJSON_EXTENSIONS)
    problems = [f"{p}: no image named {_geojson_stem(p)}.* in {images_dir}" for p in files
                if _geojson_stem(p) not in images]
    if not files:
        problems.append(f"{source} holds no GeoJSON file (<stem>.geojson)")
    if problems:
        raise DataError(f"{source}: cannot import the QuPath objects", problems)
    features = {_geojson_stem(p): read_geojson(p) for p in files}
    class_ids = _class_ids(features.values())
    read = {}
    for stem, found in features.items():
        shape = read_header(images[stem], axes=axes, ndim=ndim).spatial_shape
        read[stem] = geojson_to_labels(found, shape, class_ids, nucleus)
    return _write_import(read, class_ids, out_dir, Path(images_dir))


def _class_ids(collections: Any) -> dict[str, int]:
    names = {_class_name(f) for features in collections for f in features}
    names -= {None, *SKIPPED_CLASSES}
    return {name: k for k, name in enumerate(sorted(names), start=1)}


def _write_import(read: dict[str, GeoJsonLabels], class_ids: dict[str, int], out_dir: Path,
                  images_dir: Path) -> ImportedAnnotations:
    for stem, found in read.items():
        write_label_file(out_dir / "labels" / f"{stem}.tif", found.labels)
        if class_ids:
            write_label_file(out_dir / "class_labels" / f"{stem}.tif", found.classes)
    notes = notes_for_overlaps({s: r.n_overlapping for s, r in read.items()})
    notes += [f"{stem}: skipped {len(r.skipped)} feature(s): {', '.join(r.skipped[:5])}"
              for stem, r in read.items() if r.skipped]
    return ImportedAnnotations(
        "qupath", images_dir.parent, out_dir / "labels", len(read),
        sum(count_objects(r.labels) for r in read.values()),
        out_dir / "class_labels" if class_ids else None, tuple(class_ids), tuple(notes))
