"""Consistent strokes across a clip: the same line keeps its id, direction and place.

Each frame's strokes are matched to the previous frame's by a symmetric
chamfer distance between the two polylines (position and shape), with an
optimal one-to-one assignment (Hungarian, scipy). A matched stroke takes its
predecessor's id, runs the same way (reversed, and for a closed stroke started
at the same place, when needed) and strokes are listed in id order, so a
stroke that persists has the same index in every keyframe: what Grease
Pencil's interpolation, onion skin and a keyframe edit rely on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import KDTree

from flipsketch.skeleton_graph import Continued

MATCH_DISTANCE = 8.0  # pixels: strokes further apart than this (chamfer) are different lines
MATCH_FRACTION = 0.2  # ... or than this fraction of the stroke's size, for large strokes
HINT_DISTANCE = 4.0  # pixels: how far a line may move between frames and still guide a junction
SAMPLES = 48  # points per stroke when comparing shapes
PAIRS_PER_CHUNK = 2048  # stroke pairs compared at once (2048 x 48 x 48 distances: 38 MB)


def resample(points: np.ndarray, cyclic: bool, count: int = SAMPLES) -> np.ndarray:
    """A polyline (P, 2) -> `count` points evenly spaced along it (closed if cyclic)."""
    if cyclic and len(points) > 2:
        points = np.vstack([points, points[:1]])
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    if arc[-1] == 0:
        return np.repeat(points[:1], count, axis=0)
    at = np.linspace(0.0, arc[-1], count, endpoint=not cyclic)
    return np.c_[np.interp(at, arc, points[:, 0]), np.interp(at, arc, points[:, 1])]


def chamfer_matrix(a: list[np.ndarray], b: list[np.ndarray], reach: np.ndarray | float = np.inf) -> np.ndarray:
    """(len(a), len(b)) symmetric chamfer distances (mean of both directions'
    mean nearest-point distance) between the (SAMPLES, 2) sample sets of `a`
    and of `b`. A pair whose bounding boxes are more than `reach` apart (a
    number, or one per column of `b`; same units as the points) is not
    compared and gets inf: its chamfer distance is at least that gap. Memory
    and time follow the pairs compared, not len(a) x len(b)."""
    cost = np.full((len(a), len(b)), np.inf)
    if not a or not b:
        return cost
    samples_a, samples_b = np.stack(a), np.stack(b)  # (A, S, 2), (B, S, 2)
    low_a, high_a = samples_a.min(axis=1), samples_a.max(axis=1)
    low_b, high_b = samples_b.min(axis=1), samples_b.max(axis=1)
    gap = np.maximum(np.maximum(low_a[:, None] - high_b[None], low_b[None] - high_a[:, None]), 0.0)
    rows, cols = np.nonzero(np.linalg.norm(gap, axis=2) <= np.broadcast_to(reach, (len(b),))[None, :])
    for start in range(0, len(rows), PAIRS_PER_CHUNK):
        i, j = rows[start : start + PAIRS_PER_CHUNK], cols[start : start + PAIRS_PER_CHUNK]
        distances = np.linalg.norm(samples_a[i][:, :, None] - samples_b[j][:, None], axis=3)  # (K, S, S)
        cost[i, j] = 0.5 * (distances.min(axis=2).mean(axis=1) + distances.min(axis=1).mean(axis=1))
    return cost


def _pixels(stroke: dict[str, Any], size: np.ndarray) -> np.ndarray:
    return np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2) * size


def _reorient(stroke: dict[str, Any], previous: np.ndarray, size: np.ndarray) -> dict[str, Any]:
    """`stroke` running the way `previous` (its samples, pixels) ran: reversed if
    that fits better and, when closed, started at the point nearest to where
    `previous` started."""
    points, radius = np.asarray(stroke["points"]), np.asarray(stroke["radius"])
    candidates = []
    for order in (slice(None), slice(None, None, -1)):
        p, r = points[order], radius[order]
        if stroke.get("cyclic"):
            first = int(np.argmin(np.linalg.norm(p * size - previous[0], axis=1)))
            p, r = np.roll(p, -first, axis=0), np.roll(r, -first)
        gap = np.linalg.norm(resample(p * size, bool(stroke.get("cyclic"))) - previous, axis=1).mean()
        candidates.append((gap, p, r))
    _, p, r = min(candidates, key=lambda c: c[0])
    return {**stroke, "points": p.tolist(), "radius": r.tolist()}


def link_frame(previous: dict[str, Any] | None, drawing: dict[str, Any], next_id: int) -> tuple[dict[str, Any], int]:
    """Give `drawing`'s strokes the ids of the `previous` frame's strokes they
    match (new lines get `next_id`, `next_id` + 1, ...), run each matched stroke
    the way its predecessor ran, and list strokes in id order. Documents are
    `flipsketch.strokes` with width/height; returns a new document and the next
    free id (inputs are not changed)."""
    size = np.array([drawing["width"], drawing["height"]], dtype=np.float64)
    current = drawing["strokes"]
    before_strokes = previous["strokes"] if previous else []
    ids: list[int | None] = [None] * len(current)
    strokes = list(current)
    if before_strokes and current:
        before = [resample(_pixels(s, size), bool(s.get("cyclic"))) for s in before_strokes]
        now = [resample(_pixels(s, size), bool(s.get("cyclic"))) for s in current]
        extent = np.array([np.ptp(b, axis=0).max() for b in before])
        reach = np.maximum(MATCH_DISTANCE, MATCH_FRACTION * extent)
        cost = chamfer_matrix(now, before, reach)
        allowed = cost <= reach[None, :]
        # a pair too far apart costs the same whatever its distance, so it cannot pull the assignment
        rows, cols = linear_sum_assignment(np.where(allowed, cost, cost[allowed].sum() + 1.0))
        for i, j in zip(rows, cols, strict=True):
            if allowed[i, j]:
                ids[i] = before_strokes[j]["id"]
                strokes[i] = _reorient(current[i], before[j], size)
    for i in range(len(strokes)):
        if ids[i] is None:
            ids[i], next_id = next_id, next_id + 1
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    return {**drawing, "strokes": [{**strokes[i], "id": int(ids[i])} for i in order]}, next_id


def continuation_hint(drawing: dict[str, Any]) -> Continued:
    """`continued(p, q)` for the next frame's junctions: True when one stroke of
    `drawing` passes within HINT_DISTANCE of both pixels p and q ((2,) rows/cols)."""
    size = np.array([drawing["width"], drawing["height"]], dtype=np.float64)
    lines = []
    for stroke in drawing["strokes"]:
        points = _pixels(stroke, size)
        length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
        lines.append(resample(points, bool(stroke.get("cyclic")), max(2, math.ceil(length) + 1)))
    if not lines:
        return lambda p, q: False
    owner = np.repeat(np.arange(len(lines)), [len(line) for line in lines])
    tree = KDTree(np.concatenate(lines)[:, ::-1] - 0.5)  # x/y pixels -> rows/cols of pixel centres

    def continued(p: np.ndarray, q: np.ndarray) -> bool:
        near = [set(owner[tree.query_ball_point(point, HINT_DISTANCE)]) for point in (p, q)]
        return bool(near[0] & near[1])

    return continued
