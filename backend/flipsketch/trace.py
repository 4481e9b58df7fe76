"""Generated frames -> centre-line strokes, for editable Grease Pencil keyframes.

A frame's ink is thinned to a one-pixel skeleton (scikit-image), the skeleton
is cut into paths at its ends and junctions, each path is simplified
(Douglas-Peucker) and given the ink's half-width as its radius. Strokes come
out in the same schema the add-on sends (`flipsketch.strokes`, x/y in [0, 1],
y down), so Blender places them with the same projection it used for export.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from flipsketch import SCHEMA_VERSION

INK_LEVEL = 128  # gray below this is ink
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _skeleton_paths(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """Split a skeleton into pixel paths between ends/junctions; loops too."""
    pixels = set(zip(*np.nonzero(skeleton), strict=True))

    def neighbours(p: tuple[int, int]) -> list[tuple[int, int]]:
        return [(p[0] + dy, p[1] + dx) for dy, dx in _NEIGHBOURS if (p[0] + dy, p[1] + dx) in pixels]

    degree = {p: len(neighbours(p)) for p in pixels}
    nodes = {p for p, d in degree.items() if d != 2}
    visited_edges: set[frozenset[tuple[int, int]]] = set()
    paths: list[list[tuple[int, int]]] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> list[tuple[int, int]]:
        path = [start, nxt]
        visited_edges.add(frozenset((start, nxt)))
        while path[-1] not in nodes:
            step = [q for q in neighbours(path[-1]) if frozenset((path[-1], q)) not in visited_edges]
            if not step:
                break
            visited_edges.add(frozenset((path[-1], step[0])))
            path.append(step[0])
            if step[0] == path[0]:
                break
        return path

    for node in sorted(nodes):
        for q in neighbours(node):
            if frozenset((node, q)) not in visited_edges:
                paths.append(walk(node, q))
    for p in sorted(pixels):  # closed loops have no end or junction
        for q in neighbours(p):
            if frozenset((p, q)) not in visited_edges:
                paths.append(walk(p, q))
    return [path for path in paths if len(path) >= 2]


def trace_frame(frame: Image.Image, tolerance: float = 0.8, min_length: int = 3) -> dict[str, Any]:
    """One frame -> strokes (schema `flipsketch.strokes`)."""
    import cv2
    from skimage.measure import approximate_polygon
    from skimage.morphology import skeletonize

    gray = np.asarray(frame.convert("L"))
    ink = gray < INK_LEVEL
    h, w = ink.shape
    # capped: a frame without paper has no finite distance to it
    half_width = np.minimum(cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, 3), max(h, w))
    strokes = []
    for path in _skeleton_paths(skeletonize(ink)):
        if len(path) < min_length:
            continue
        points = approximate_polygon(np.asarray(path, dtype=np.float64), tolerance)
        rows, cols = points[:, 0].round().astype(int), points[:, 1].round().astype(int)
        radius = np.maximum(half_width[rows, cols] - 0.5, 0.5) / w  # distance to paper minus the centre pixel
        xy = np.c_[(points[:, 1] + 0.5) / w, (points[:, 0] + 0.5) / h]  # pixel centres, edge-to-edge frame
        strokes.append({"points": xy.round(5).tolist(), "radius": radius.round(6).tolist(), "opacity": 1.0})
    return {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "width": w, "height": h, "strokes": strokes}


def trace_frames(frames: list[Image.Image]) -> dict[str, Any]:
    """A clip -> {"frames": [strokes per frame]} for the add-on's GP import."""
    return {"schema": "flipsketch.traced", "version": SCHEMA_VERSION, "frames": [trace_frame(f) for f in frames]}
