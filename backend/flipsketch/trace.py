"""Generated frames -> centre-line strokes, for editable Grease Pencil keyframes.

A frame's ink is thinned to a one-pixel skeleton (scikit-image); the skeleton
graph (`skeleton_graph`) loses its spurs and is joined through junctions by
good continuation, so a line runs on as one stroke where a hand would have
drawn it so, and closed lines are cyclic strokes. Each stroke is smoothed and
simplified (OpenCV's Douglas-Peucker, with a bounded point spacing), and its
radius follows the ink's half-width along it. Across a clip, strokes are matched
frame to frame (`stroke_match`): a line keeps its id, direction and index.

Per-frame documents are `flipsketch.strokes` (x/y in [0, 1], y down; see
sketch.py), so Blender places them with the projection it used for export.
Each stroke adds `id` (int, stable across a clip) and `cyclic` (bool: the last
point joins the first, which is not repeated).
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import remove_small_holes, skeletonize

from flipsketch import SCHEMA_VERSION
from flipsketch.skeleton_graph import Continued, Edge, build_graph, join_strokes, simplify_graph
from flipsketch.stroke_match import continuation_hint, link_frame

INK_LEVEL = 128  # gray below this is ink
TRACED_VERSION = 2  # flipsketch.traced: 2 = strokes carry `id` and `cyclic`
SMOOTHING = 1.5  # pixels: Gaussian sigma along a stroke before simplifying
RADIUS_SMOOTHING = 8.0  # pixels: Gaussian sigma of the radius along a stroke
TOLERANCE = 0.4  # pixels: Douglas-Peucker tolerance on the smoothed line
MAX_SPACING = 12  # pixels: longest gap between two points of a stroke
HOLE_AREA = 8  # pixels: smaller gaps inside the ink are where two lines touch, not a drawn loop
MIN_DOT_RADIUS = 1.5  # pixels: shorter marks with a smaller half-width are noise


def _simplified(line: np.ndarray, cyclic: bool) -> np.ndarray:
    """Indices into `line` (P, 2) of a Douglas-Peucker subset, with extra
    points on the line wherever two kept ones are more than MAX_SPACING apart."""
    closed = np.vstack([line, line[:1]]) if cyclic else line
    as_float32 = closed.astype(np.float32)
    kept = cv2.approxPolyDP(as_float32[:, None, :], TOLERANCE, False)[:, 0]
    indices, j = [], 0
    for point in kept:  # the kept points are rows of `closed`, in order
        while not (as_float32[j] == point).all():
            j += 1
        indices.append(j)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))]
    dense = []
    for a, b in itertools.pairwise(indices):
        pieces = math.ceil((arc[b] - arc[a]) / MAX_SPACING)
        targets = arc[a] + (arc[b] - arc[a]) * np.arange(1, pieces) / pieces
        dense += [a, *np.searchsorted(arc, targets).tolist()]
    dense.append(indices[-1])
    out = np.unique(dense)
    return out[out < len(line)] if cyclic else out


def _fit(path: np.ndarray, cyclic: bool, half_width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel chain (P, 2) rows/cols -> smoothed polyline (K, 2) and radius (K,), pixels."""
    line = path.astype(np.float64)
    if len(line) >= 3:
        line = ndimage.gaussian_filter1d(line, SMOOTHING, axis=0, mode="wrap" if cyclic else "nearest")
        if not cyclic:
            line[0], line[-1] = path[0], path[-1]
    radius = np.maximum(half_width[path[:, 0], path[:, 1]] - 0.5, 0.5)  # distance to paper minus the centre pixel
    window = 2 * math.ceil(float(np.median(radius))) + 1  # junctions widen the ink for about one width
    mode = "wrap" if cyclic else "nearest"
    radius = ndimage.median_filter(radius, size=window, mode=mode)
    radius = ndimage.gaussian_filter1d(radius, RADIUS_SMOOTHING, mode=mode)  # whole-pixel steps -> a taper
    keep = _simplified(line, cyclic)
    return line[keep], radius[keep]


@dataclass
class FrameGraph:
    """A frame's skeleton graph, pruned, before its branches are joined."""

    edges: list[Edge]
    nodes: np.ndarray  # (M, 2) rows/cols
    width_at: np.ndarray  # (M,) ink width at each node, pixels
    isolated: list[int]  # nodes without edges: dots
    half_width: np.ndarray  # (H, W) distance from each ink pixel to the paper, pixels


def frame_graph(frame: Image.Image) -> FrameGraph:
    """One frame (any mode; ink darker than INK_LEVEL) -> its skeleton graph."""
    ink = remove_small_holes(np.asarray(frame.convert("L")) < INK_LEVEL, max_size=HOLE_AREA)
    # capped: a frame without paper has no finite distance to it (cast: scipy is unannotated, its
    # inferred return also covers the return_indices / in-place forms)
    half_width = np.minimum(cast(np.ndarray, ndimage.distance_transform_edt(ink)), max(ink.shape))
    edges, nodes, isolated = build_graph(skeletonize(ink))
    node_pixels = nodes.round().astype(int)
    width_at = 2 * half_width[node_pixels[:, 0], node_pixels[:, 1]]
    edges, width_at = simplify_graph(edges, len(nodes), width_at)
    return FrameGraph(edges, nodes, width_at, isolated, half_width)


def frame_strokes(graph: FrameGraph, continued: Continued | None = None) -> dict[str, Any]:
    """A frame's graph -> a `flipsketch.strokes` document with `width`,
    `height` and strokes longest first, ids 0..n-1. `continued`: see
    `skeleton_graph.join_strokes` (how the previous frame ran through junctions)."""
    half_width = graph.half_width
    h, w = half_width.shape
    fitted = []
    for stroke in join_strokes(graph.edges, len(graph.nodes), graph.width_at, continued):
        points, radius = _fit(stroke.path, stroke.cyclic, half_width)
        length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
        if length < 2:  # a mark barely longer than a pixel: a dot
            points, radius = points.mean(axis=0, keepdims=True), radius.max(keepdims=True)
        fitted.append((length, points, radius, stroke.cyclic and len(points) > 2))
    for node in graph.isolated:
        row, col = graph.nodes[node].round().astype(int)
        fitted.append((0.0, graph.nodes[node : node + 1], np.array([half_width[row, col] - 0.5]), False))
    strokes = []
    for _, points, radius, cyclic in sorted(fitted, key=lambda f: -f[0]):
        if len(points) == 1 and radius[0] < MIN_DOT_RADIUS:
            continue
        xy = np.c_[(points[:, 1] + 0.5) / w, (points[:, 0] + 0.5) / h]  # pixel centres, edge-to-edge frame
        strokes.append(
            {
                "id": len(strokes),
                "points": xy.round(5).tolist(),
                "radius": (radius / w).round(6).tolist(),
                "opacity": 1.0,
                "cyclic": bool(cyclic),
            }
        )
    return {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "width": w, "height": h, "strokes": strokes}


def trace_frame(frame: Image.Image) -> dict[str, Any]:
    """One frame (any mode; ink darker than INK_LEVEL) -> a `flipsketch.strokes`
    document with `width`, `height` and strokes longest first, ids 0..n-1."""
    return frame_strokes(frame_graph(frame))


def trace_frames(frames: list[Image.Image], workers: int | None = None) -> dict[str, Any]:
    """A clip -> {"frames": [strokes per frame]} for the add-on's GP import.

    Frames are thinned and their graphs built in a thread pool (`workers`,
    default: one per CPU up to the frame count); then, in order, each frame's
    branches are joined the way the previous frame's were where a junction is
    a toss-up, and its strokes are matched to the previous frame's ids."""
    workers = workers or max(1, min(len(frames), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        graphs = list(pool.map(frame_graph, frames))
    linked: list[dict[str, Any]] = []
    next_id = 0
    for graph in graphs:
        previous = linked[-1] if linked else None
        drawing = frame_strokes(graph, continuation_hint(previous) if previous else None)
        drawing, next_id = link_frame(previous, drawing, next_id)
        linked.append(drawing)
    return {"schema": "flipsketch.traced", "version": TRACED_VERSION, "frames": linked}
