"""A one-pixel skeleton -> long strokes that run through junctions.

The skeleton becomes a graph: nodes are line ends and junctions (a cluster of
touching junction pixels is one node), edges are the pixel chains between
them. Spurs shorter than the line width are pruned; at each junction the two
branches that turn the least continue into each other (good continuation), as
a hand drawing the figure would carry the pen through; what is left over ends
at the junction. Chains of joined edges that come back to their start are
closed loops.

Pixels use 8-neighbour adjacency minus the diagonal steps that a 4-neighbour
path already covers (m-adjacency), so a staircase is a chain, not a run of
false junctions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage

_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
MAX_TURN = math.radians(75)  # at a junction, branches that turn more than this do not continue
AMBIGUOUS = math.radians(15)  # a rival continuation this close in turn makes a junction's choice unstable
JUNCTION_SPAN = 2  # junctions closer than this many line widths are one crossing (shallow crossings are long)
DIRECTION_SPAN = 8  # pixels along a branch that give its direction at a junction


@dataclass
class Edge:
    start: int  # node ids
    end: int
    path: np.ndarray  # (P, 2) int rows, cols; first pixel at `start`, last at `end`

    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.path, axis=0), axis=1).sum())


@dataclass
class Stroke:
    path: np.ndarray  # (P, 2) int rows, cols, in drawing order
    cyclic: bool  # closed: the last pixel joins the first (not repeated)


def _adjacency(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and their neighbours (N, 8), -1 where none."""
    pixels = np.argwhere(skeleton)
    index = np.full((skeleton.shape[0] + 2, skeleton.shape[1] + 2), -1, np.int64)
    rows, cols = pixels[:, 0] + 1, pixels[:, 1] + 1
    index[rows, cols] = np.arange(len(pixels))
    neighbours = np.stack([index[rows + dy, cols + dx] for dy, dx in _OFFSETS], axis=1)
    for k, (dy, dx) in enumerate(_OFFSETS):
        if dy and dx:  # a diagonal step is redundant next to a 4-neighbour path
            covered = (index[rows + dy, cols] >= 0) | (index[rows, cols + dx] >= 0)
            neighbours[covered, k] = -1
    return pixels, neighbours


def build_graph(skeleton: np.ndarray) -> tuple[list[Edge], np.ndarray, list[int]]:
    """Skeleton (H, W) bool -> edges, node positions (M, 2) float rows/cols,
    and the ids of nodes that have no edge (isolated dots)."""
    pixels, neighbours = _adjacency(skeleton)
    degree = (neighbours >= 0).sum(axis=1)
    is_node = degree != 2
    junction = np.zeros(skeleton.shape, bool)
    junction[tuple(pixels[degree >= 3].T)] = True
    # scipy is unannotated: its inferred return also covers the in-place (output=...) form
    clusters, count = cast(tuple[np.ndarray, int], ndimage.label(junction, structure=np.ones((3, 3), bool)))
    node_of = np.full(len(pixels), -1, np.int64)
    node_of[degree >= 3] = clusters[tuple(pixels[degree >= 3].T)] - 1
    others = np.flatnonzero((degree < 3) & is_node)
    node_of[others] = count + np.arange(len(others))
    positions = np.zeros((count + len(others), 2))
    np.add.at(positions, node_of[is_node], pixels[is_node].astype(float))
    positions /= np.maximum(np.bincount(node_of[is_node], minlength=len(positions)), 1)[:, None]

    near = [[int(q) for q in row if q >= 0] for row in neighbours]
    node_flag = is_node.tolist()
    walked = [False] * len(pixels)  # pixels inside a chain already walked
    visited: set[tuple[int, int]] = set()
    edges: list[Edge] = []

    def walk(start: int, step: int) -> list[int]:
        chain = [start, step]
        visited.add((min(start, step), max(start, step)))
        while not node_flag[chain[-1]] and not (len(chain) > 2 and chain[-1] == chain[0]):
            here = chain[-1]
            walked[here] = True
            onward = [q for q in near[here] if (min(here, q), max(here, q)) not in visited]
            if not onward:
                break
            visited.add((min(here, onward[0]), max(here, onward[0])))
            chain.append(onward[0])
        return chain

    for p in np.flatnonzero(is_node).tolist():
        for q in near[p]:
            if (min(p, q), max(p, q)) in visited:
                continue
            if node_flag[q] and node_of[q] == node_of[p]:  # inside one junction cluster
                visited.add((min(p, q), max(p, q)))
                continue
            chain = walk(p, q)
            edges.append(Edge(int(node_of[chain[0]]), int(node_of[chain[-1]]), pixels[chain]))
    for p in np.flatnonzero(~is_node).tolist():  # closed loops have no node: one node at their first pixel
        if walked[p]:
            continue
        chain = walk(p, near[p][0])
        node = len(positions)
        positions = np.vstack([positions, pixels[p].astype(float)])
        edges.append(Edge(node, node, pixels[chain]))
    used = {e.start for e in edges} | {e.end for e in edges}
    isolated = [n for n in range(len(positions)) if n not in used]
    return edges, positions, isolated


def _degrees(edges: list[Edge], nodes: int) -> np.ndarray:
    return np.bincount([e.start for e in edges] + [e.end for e in edges], minlength=nodes)


def prune_spurs(edges: list[Edge], nodes: int, width_at: np.ndarray) -> list[Edge]:
    """Drop branches from a junction to a free end, and small loops at a
    junction, that are shorter than the line width there (`width_at`: (M,)
    ink width in pixels at each node). Repeats until nothing changes."""
    while True:
        degree = _degrees(edges, nodes)
        lengths = [e.length() for e in edges]
        dropped = set()
        for i in np.argsort(lengths, kind="stable"):  # shortest first: of two spurs at a fork, one goes
            e = edges[i]
            ends = {degree[e.start], degree[e.end]}
            junction = e.start if degree[e.start] >= 3 else e.end
            spur = 1 in ends and max(ends) >= 3
            small_loop = e.start == e.end and degree[e.start] >= 4
            if (spur or small_loop) and lengths[i] < width_at[junction]:
                degree[e.start] -= 1
                degree[e.end] -= 1
                dropped.add(i)
        if not dropped:
            return edges
        edges = [e for i, e in enumerate(edges) if i not in dropped]


def merge_junctions(edges: list[Edge], nodes: int, width_at: np.ndarray) -> tuple[list[Edge], np.ndarray]:
    """Junctions joined by an edge shorter than JUNCTION_SPAN line widths are
    one crossing (the skeleton splits a crossing of thick, nearly touching or
    shallow-crossing lines into several): the short edges go, their ends
    become one node. Returns the
    edges and the widths per node (a merged node takes the largest)."""
    degree = _degrees(edges, nodes)
    parent = np.arange(nodes)

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = int(parent[n])
        return n

    width_at = width_at.copy()
    kept = []
    for e in edges:
        a, b = root(e.start), root(e.end)
        if degree[e.start] >= 3 and degree[e.end] >= 3 and e.length() < JUNCTION_SPAN * min(width_at[a], width_at[b]):
            if a != b:
                parent[b] = a
                width_at[a] = max(width_at[a], width_at[b])
            continue
        kept.append(e)
    return [Edge(root(e.start), root(e.end), e.path) for e in kept], width_at


def simplify_graph(edges: list[Edge], nodes: int, width_at: np.ndarray) -> tuple[list[Edge], np.ndarray]:
    """Prune spurs and merge split junctions until neither changes the graph."""
    while True:
        count = len(edges)
        edges, width_at = merge_junctions(prune_spurs(edges, nodes, width_at), nodes, width_at)
        if len(edges) == count:
            return edges, width_at


def _direction(path: np.ndarray, skip: int) -> np.ndarray:
    """Unit direction of a branch (pixels from its node on) past the junction's blur."""
    near = path[min(skip, len(path) - 1)]
    far = path[min(skip + DIRECTION_SPAN, len(path) - 1)]
    vector = (far - near).astype(float)
    if not vector.any():
        vector = (path[-1] - path[0]).astype(float)
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


Continued = Callable[[np.ndarray, np.ndarray], bool]


def _pairs(turns: dict[tuple[int, int], float], continued: Callable[[int, int], bool] | None) -> list[tuple[int, int]]:
    """Which branch ends at one junction continue into which: the pair with the
    smallest turn first, while the turn is at most MAX_TURN. A choice that is a
    toss-up (a rival pair within AMBIGUOUS of it, or a turn within AMBIGUOUS of
    MAX_TURN) follows `continued` (did the previous frame draw these two
    branches as one line?) where it is given, else the contested branch ends."""
    free = set({end for pair in turns for end in pair})
    pairs = []
    while len(free) >= 2:
        turn, a, b = min((t, a, b) for (a, b), t in turns.items() if a in free and b in free)
        rival_turn, rival, shared = min(  # the best other pair that would use a or b
            (
                (t, pair, (set(pair) & {a, b}).pop())
                for pair, t in turns.items()
                if pair != (a, b) and set(pair) <= free and set(pair) & {a, b}
            ),
            default=(math.inf, (a, b), a),
        )
        contested = rival_turn - turn < AMBIGUOUS
        if continued is not None and (contested or abs(turn - MAX_TURN) < AMBIGUOUS):
            if turn <= MAX_TURN + AMBIGUOUS and continued(a, b):
                pass
            elif rival_turn <= MAX_TURN + AMBIGUOUS and continued(*rival):
                a, b = rival
            elif contested:
                free.discard(shared)
                continue
            else:
                break
        elif contested:
            free.discard(shared)
            continue
        elif turn > MAX_TURN:
            break
        pairs.append((a, b))
        free -= {a, b}
    return pairs


def _probed(continued: Continued, probes: list[np.ndarray]) -> Callable[[int, int], bool]:
    return lambda a, b: continued(probes[a], probes[b])


def join_strokes(
    edges: list[Edge], nodes: int, width_at: np.ndarray, continued: Continued | None = None
) -> list[Stroke]:
    """Chain edges through nodes by good continuation; loops become cyclic.

    `continued(p, q)`: whether the previous frame of a clip drew one line
    through the pixels p and q ((2,) rows/cols each); it settles junctions
    whose choice is a toss-up, so that they are settled the same way again."""
    ends_at: dict[int, list[tuple[int, int]]] = {}
    for i, e in enumerate(edges):
        ends_at.setdefault(e.start, []).append((i, 0))
        ends_at.setdefault(e.end, []).append((i, 1))
    link: dict[tuple[int, int], tuple[int, int]] = {}
    for node, ends in ends_at.items():
        if len(ends) == 2:  # a bend or a loop's seam: always one line
            link[ends[0]], link[ends[1]] = ends[1], ends[0]
            continue
        skip = math.ceil(width_at[node] / 2)
        paths = [edges[i].path if side == 0 else edges[i].path[::-1] for i, side in ends]
        directions = [_direction(path, skip) for path in paths]
        probes = [path[min(skip + DIRECTION_SPAN, len(path) - 1)] for path in paths]
        # turn from arriving along -d_a to leaving along d_b: the angle between d_b and -d_a
        turns = {
            (a, b): math.acos(float(np.clip(-directions[a] @ directions[b], -1, 1)))
            for a in range(len(ends))
            for b in range(a + 1, len(ends))
        }
        hint = None if continued is None else _probed(continued, probes)
        for a, b in _pairs(turns, hint):
            link[ends[a]], link[ends[b]] = ends[b], ends[a]

    done = [False] * len(edges)

    def follow(i: int, side: int) -> tuple[list[np.ndarray], bool]:
        """Walk edges from end (i, side); True if the chain closes on itself."""
        pieces = []
        first = (i, side)
        while True:
            done[i] = True
            pieces.append(edges[i].path if side == 0 else edges[i].path[::-1])
            other = (i, 1 - side)
            if other not in link:
                return pieces, False
            i, side = link[other]
            if (i, side) == first:
                return pieces, True
            if done[i]:
                return pieces, False

    strokes = []
    starts = [(i, side) for i in range(len(edges)) for side in (0, 1) if (i, side) not in link]
    for i, side in starts:
        if not done[i]:
            pieces, _ = follow(i, side)
            strokes.append(Stroke(_concatenate(pieces), False))
    for i in range(len(edges)):
        if not done[i]:
            pieces, closed = follow(i, 0)
            path = _concatenate(pieces)
            if closed and len(path) > 2 and (path[0] == path[-1]).all():
                path = path[:-1]
            strokes.append(Stroke(path, closed))
    return strokes


def _concatenate(pieces: list[np.ndarray]) -> np.ndarray:
    """Consecutive pixel chains -> one, without repeating the pixel they share."""
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append(piece[1:] if (piece[0] == out[-1][-1]).all() else piece)
    return np.concatenate(out)
