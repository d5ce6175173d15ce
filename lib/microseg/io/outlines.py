"""Exact outlines of label images along pixel edges, and polygons filled back into pixels.

Shared by the QuPath GeoJSON, Fiji ROI set and COCO polygon formats. Coordinates are ``(x, y)``
pixel corners, as ImageJ, QuPath and COCO tools use them: pixel ``(row, col)`` spans
``[col, col+1) × [row, row+1)``, and a pixel belongs to a polygon when its centre
``(col + 0.5, row + 0.5)`` lies inside. An outline traced along pixel edges therefore fills back
to exactly the pixels it came from: :func:`fill_polygons` of :func:`object_polygons` is the
object, holes and objects touching the image border included.

Each object becomes one or more polygons, one per 4-connected part; a polygon is a list of
closed rings ``(n, 2)`` float64 arrays (first point not repeated): its outer boundary first
(positive shoelace area in ``(x, y)`` numbers), then its holes (negative area). Parts touching
only at a corner are separate polygons; a hole touching the boundary at a corner stays a hole,
so every ring is simple, as GeoJSON and JTS (QuPath) expect.

Example
-------
>>> labels = np.zeros((4, 5), np.int32)
>>> labels[1:3, 1:4] = 7
>>> polygons = object_polygons(labels)[7]
>>> polygons[0][0].tolist()
[[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]]
>>> np.array_equal(fill_polygons(polygons, labels.shape), labels == 7)
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from microseg.errors import DataError

__all__ = ["fill_polygons", "mask_polygons", "object_polygons", "polygon_region", "ring_area"]

Polygon = list[np.ndarray]

# Directed pixel edges with the object on their right (y down): (start corner, step) per side.
_SIDES = {  # side: (neighbour offset (drow, dcol), start corner (dx, dy), step (dx, dy))
    "top": ((-1, 0), (0, 0), (1, 0)),
    "right": ((0, 1), (1, 0), (0, 1)),
    "bottom": ((1, 0), (1, 1), (-1, 0)),
    "left": ((0, -1), (0, 1), (0, -1)),
}


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area of a closed ring ``(n, 2)`` of ``(x, y)``; outer rings are > 0."""
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def mask_polygons(mask: np.ndarray, offset: Sequence[float] = (0, 0)) -> list[Polygon]:
    """Polygons (outer ring, then holes) of the True pixels of a 2D mask, one per 4-connected part.

    ``offset`` ``(x, y)`` is added to every coordinate (the position of a crop in its image).
    Returns an empty list for an empty mask.
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise DataError(f"mask_polygons takes a 2D mask (Y, X), got shape {mask.shape}; pass "
                        f"one plane, e.g. mask[z]")
    parts, count = ndimage.label(mask)
    polygons = []
    for index, box in enumerate(ndimage.find_objects(parts), start=1):
        rows, cols = box
        rings = _trace_rings(parts[box] == index)
        shift = np.array([cols.start + offset[0], rows.start + offset[1]], np.float64)
        rings = sorted((ring + shift for ring in rings), key=ring_area, reverse=True)
        polygons.append(rings)
    return polygons


def object_polygons(labels: np.ndarray) -> dict[int, list[Polygon]]:
    """``{object id: polygons}`` of every object of a 2D label image ``(Y, X)``, ids ascending."""
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"object_polygons takes a 2D label image (Y, X), got {labels.shape}; "
                        f"pass one plane, e.g. labels[z]")
    found = {}
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if box is not None:
            offset = (box[1].start, box[0].start)
            found[index] = mask_polygons(labels[box] == index, offset)
    return found


def fill_polygons(polygons: Iterable[Sequence[np.ndarray]], shape: Sequence[int]) -> np.ndarray:
    """A boolean mask of ``shape`` ``(Y, X)``: pixels whose centre is inside any polygon.

    Each polygon is a sequence of rings ``(n, 2)`` of ``(x, y)`` corner coordinates (outer ring
    and holes, even-odd within a polygon); polygons are joined. Parts outside are cut off.
    """
    from skimage.draw import polygon as draw_polygon

    shape = tuple(int(s) for s in shape)
    mask = np.zeros(shape, bool)
    for rings in polygons:
        rings = [np.asarray(ring, np.float64) for ring in rings if len(ring) >= 3]
        if all(_on_pixel_edges(ring) for ring in rings):
            mask |= _fill_pixel_edge_rings(rings, shape)
            continue
        inside = np.zeros(shape, bool)
        for ring in rings:
            # skimage tests pixel centres at integer coordinates; ours sit at +0.5.
            rr, cc = draw_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape=shape)
            one = np.zeros(shape, bool)
            one[rr, cc] = True
            inside ^= one
        mask |= inside
    return mask


def _on_pixel_edges(ring: np.ndarray) -> bool:
    """Integer corners joined by horizontal and vertical steps only (traced outlines)."""
    if not np.array_equal(ring, np.round(ring)):
        return False
    step = np.roll(ring, -1, axis=0) - ring
    return bool(np.all((step[:, 0] == 0) | (step[:, 1] == 0)))


def _fill_pixel_edge_rings(rings: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Even-odd fill of axis-parallel integer rings: a pixel is inside when an odd number of
    vertical edges lies left of its centre on its row (exact, and fast for large objects)."""
    height, width = shape
    crossings = np.zeros((height, width + 1), np.int32)
    for ring in rings:
        ends = np.roll(ring, -1, axis=0)
        for (x, y0), (_, y1) in zip(ring[ring[:, 0] == ends[:, 0]].astype(int),
                                    ends[ring[:, 0] == ends[:, 0]].astype(int), strict=True):
            top, bottom = max(min(y0, y1), 0), min(max(y0, y1), height)
            crossings[top:bottom, min(max(x, 0), width)] += 1
    return (np.cumsum(crossings, axis=1)[:, :width] % 2) == 1


def polygon_region(polygons: Sequence[Sequence[np.ndarray]], shape: Sequence[int]
                   ) -> tuple[tuple[slice, slice], np.ndarray]:
    """:func:`fill_polygons` cropped to the polygons' bounding box within ``shape`` (Y, X).

    Returns ``(box, mask)``: the box as ``(rows, cols)`` slices and the mask inside it (empty
    slices and an empty mask for polygons outside the image). Memory follows the object, not
    the image.
    """
    rings = [np.asarray(r, np.float64) for rings in polygons for r in rings if len(r)]
    if not rings:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
    corners = np.concatenate(rings)
    low = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(corners.max(axis=0)).astype(int), [shape[1], shape[0]])
    high = np.maximum(high, low)
    shift = np.array([low[0], low[1]], np.float64)
    moved = [[np.asarray(r, np.float64) - shift for r in rings] for rings in polygons]
    box = (slice(int(low[1]), int(high[1])), slice(int(low[0]), int(high[0])))
    return box, fill_polygons(moved, (high[1] - low[1], high[0] - low[0]))


def _trace_rings(mask: np.ndarray) -> list[np.ndarray]:
    """Closed rings along the pixel edges of a (4-connected) mask, corners only."""
    starts, steps = _boundary_edges(np.pad(mask, 1))
    start_of = [tuple(p) for p in starts.tolist()]
    step_of = [tuple(p) for p in steps.tolist()]
    outgoing: dict[tuple[int, int], list[int]] = {}
    for index, corner in enumerate(start_of):
        outgoing.setdefault(corner, []).append(index)
    used = [False] * len(start_of)
    rings = []
    for first in range(len(start_of)):
        if not used[first]:
            rings.append(np.array(_walk(first, start_of, step_of, outgoing, used), np.float64)
                         - 1.0)
    return rings


def _boundary_edges(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts, steps = [], []
    for (drow, dcol), corner, step in _SIDES.values():
        neighbour = np.roll(padded, (-drow, -dcol), axis=(0, 1))
        rows, cols = np.nonzero(padded & ~neighbour)
        starts.append(np.stack([cols + corner[0], rows + corner[1]], axis=1))
        steps.append(np.broadcast_to(np.array(step), (len(rows), 2)))
    return np.concatenate(starts).astype(np.int64), np.concatenate(steps).astype(np.int64)


def _walk(first: int, start_of: list[tuple[int, int]], step_of: list[tuple[int, int]],
          outgoing: dict[tuple[int, int], list[int]], used: list[bool]) -> list[tuple[int, int]]:
    """The corners of the ring through edge ``first`` (where the direction changes)."""
    corners, edge, previous = [], first, None
    while not used[edge]:
        used[edge] = True
        (x, y), (dx, dy) = start_of[edge], step_of[edge]
        if (dx, dy) != previous:
            corners.append((x, y))
            previous = (dx, dy)
        candidates = outgoing[(x + dx, y + dy)]
        # Where object pixels meet diagonally, turn left (y down): they stay one part, and the
        # background pixels on the other diagonal stay apart (a hole touching at a corner).
        edge = candidates[0] if len(candidates) == 1 or step_of[candidates[0]] == (dy, -dx) \
            else candidates[1]
    if len(corners) > 1 and step_of[first] == previous:
        corners.pop(0)
    return corners
