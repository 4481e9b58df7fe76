"""How good the traced strokes are: `flipsketch trace FRAMES_DIR` and `flipsketch bench --trace`.

Figures per drawing (all at the drawing's own size; the test set is 256²):

- chamfer: symmetric chamfer distance between the skeleton of the drawing's
  ink and the skeleton of the rasterised trace (mean of the two directions'
  mean nearest-pixel distance), pixels
- IoU: ink of the drawing against ink of the trace rasterised with
  `rasterize_strokes` (gray < INK_LEVEL for both)
- strokes per drawing, and the share of strokes with only two points
- ms per frame: one `trace_frame` call, the best of three
- id stability (clips): the fraction of strokes whose id is present in the
  next frame

`bench --trace` builds a set of line drawings (scikit-image sample images
turned into line drawings, drawings rasterised from stroke JSON, clean line
art drawn with Pillow and the example cat) and clips made by moving and
slightly deforming some of them, and compares the tracer with the baseline:
the tracer this project shipped before strokes ran through junctions (kept
here, and only here, so both run on the same inputs in the same process).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial.distance import cdist
from skimage import data as samples
from skimage.measure import approximate_polygon, find_contours
from skimage.morphology import skeletonize
from skimage.transform import warp

from flipsketch import SCHEMA_VERSION
from flipsketch.errors import InputError
from flipsketch.sketch import load_image, normalise_drawing, prepare_image, rasterize_strokes
from flipsketch.stroke_match import MATCH_DISTANCE, MATCH_FRACTION, SAMPLES, chamfer_matrix, resample
from flipsketch.trace import INK_LEVEL, trace_frame, trace_frames

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cat.png"
CLIP_FRAMES = 16
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
Tracer = Callable[[Image.Image], dict[str, Any]]


# -- the baseline: the tracer before this one (one stroke per skeleton branch) --

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _baseline_paths(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    pixels = set(zip(*np.nonzero(skeleton), strict=True))

    def neighbours(p: tuple[int, int]) -> list[tuple[int, int]]:
        return [(p[0] + dy, p[1] + dx) for dy, dx in _NEIGHBOURS if (p[0] + dy, p[1] + dx) in pixels]

    nodes = {p for p in pixels if len(neighbours(p)) != 2}
    visited: set[frozenset[tuple[int, int]]] = set()
    paths: list[list[tuple[int, int]]] = []

    def walk(start: tuple[int, int], nxt: tuple[int, int]) -> list[tuple[int, int]]:
        path = [start, nxt]
        visited.add(frozenset((start, nxt)))
        while path[-1] not in nodes:
            step = [q for q in neighbours(path[-1]) if frozenset((path[-1], q)) not in visited]
            if not step:
                break
            visited.add(frozenset((path[-1], step[0])))
            path.append(step[0])
            if step[0] == path[0]:
                break
        return path

    for p in sorted(nodes) + sorted(pixels):  # then closed loops, which have no end or junction
        for q in neighbours(p):
            if frozenset((p, q)) not in visited:
                paths.append(walk(p, q))
    return paths


def baseline_trace_frame(frame: Image.Image) -> dict[str, Any]:
    """The previous tracer: a stroke per skeleton branch between ends and junctions."""
    ink = np.asarray(frame.convert("L")) < INK_LEVEL
    h, w = ink.shape
    half_width = cast(np.ndarray, ndimage.distance_transform_edt(ink))
    strokes = []
    for path in _baseline_paths(skeletonize(ink)):
        if len(path) < 3:
            continue
        points = approximate_polygon(np.asarray(path, dtype=np.float64), 0.8)
        rows, cols = points[:, 0].round().astype(int), points[:, 1].round().astype(int)
        radius = np.maximum(half_width[rows, cols] - 0.5, 0.5) / w
        xy = np.c_[(points[:, 1] + 0.5) / w, (points[:, 0] + 0.5) / h]
        strokes.append({"points": xy.round(5).tolist(), "radius": radius.round(6).tolist(), "opacity": 1.0})
    return {"schema": "flipsketch.strokes", "version": SCHEMA_VERSION, "width": w, "height": h, "strokes": strokes}


# -- the test set --


def _fit_lines(lines: list[np.ndarray], size: int, margin: float = 0.08) -> list[np.ndarray]:
    """(x, y) polylines in any units -> pixels of a size² frame, aspect kept, centred."""
    every = np.concatenate(lines)
    low, high = every.min(axis=0), every.max(axis=0)
    scale = size * (1 - 2 * margin) / float((high - low).max())
    offset = (size - (high - low) * scale) / 2
    return [(line - low) * scale + offset for line in lines]


def _draw(lines: list[np.ndarray], size: int, width: int, ellipses: Sequence[tuple] = ()) -> Image.Image:
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for line in lines:
        draw.line([tuple(p) for p in line], fill=0, width=width, joint="curve")
    for box in ellipses:
        draw.ellipse(box, outline=0, width=width)
    return image


def _contours(mask: np.ndarray, levels: list[float], min_points: int = 20) -> list[np.ndarray]:
    """Iso-lines of an image as (x, y) polylines."""
    found = [c[:, ::-1] for level in levels for c in find_contours(mask.astype(np.float64), level)]
    return [c for c in found if len(c) >= min_points]


def _strokes(lines: list[list[tuple[float, float]]], radius: float) -> dict[str, Any]:
    return {
        "schema": "flipsketch.strokes",
        "version": SCHEMA_VERSION,
        "strokes": [{"points": [list(p) for p in line], "radius": radius} for line in lines],
    }


def stick_figure() -> dict[str, Any]:
    head = [(0.5 + 0.09 * math.cos(a), 0.2 + 0.09 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40)]
    return _strokes(
        [
            head,
            [(0.5, 0.29), (0.5, 0.62)],
            [(0.3, 0.38), (0.5, 0.45), (0.72, 0.36)],
            [(0.35, 0.9), (0.5, 0.62), (0.66, 0.9)],
        ],
        0.008,
    )


def spiral_and_wave() -> dict[str, Any]:
    turns = np.linspace(0, 5 * math.pi, 200)
    spiral = [(0.5 + 0.025 * t * math.cos(t), 0.5 + 0.025 * t * math.sin(t)) for t in turns]
    wave = [(x, 0.5 + 0.12 * math.sin(9 * x)) for x in np.linspace(0.08, 0.92, 80)]
    return _strokes([spiral, wave], 0.007)


def star() -> dict[str, Any]:
    corners = [(0.5 + 0.4 * math.sin(a), 0.52 - 0.4 * math.cos(a)) for a in np.arange(5) * 4 * math.pi / 5]
    ring = [(0.5 + 0.22 * math.cos(a), 0.52 + 0.22 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 60)]
    return _strokes([[*corners, corners[0]], ring], 0.006)


def tree() -> dict[str, Any]:
    lines = []

    def branch(x: float, y: float, angle: float, length: float, depth: int) -> None:
        tip = (x + length * math.sin(angle), y - length * math.cos(angle))
        lines.append([(x, y), tip])
        if depth:
            branch(*tip, angle - 0.5, length * 0.7, depth - 1)
            branch(*tip, angle + 0.45, length * 0.72, depth - 1)

    branch(0.5, 0.95, 0.0, 0.28, 3)
    return _strokes(lines, 0.007)


def house(size: int) -> Image.Image:
    s = size / 256
    image = _draw(
        [
            np.array([(50, 120), (50, 225), (206, 225), (206, 120), (50, 120)]) * s,
            np.array([(35, 132), (128, 40), (221, 132)]) * s,
            np.array([(110, 225), (110, 165), (146, 165), (146, 225)]) * s,
            np.array([(70, 140), (100, 140), (100, 170), (70, 170), (70, 140)]) * s,
            np.array([(85, 140), (85, 170)]) * s,
            np.array([(70, 155), (100, 155)]) * s,
        ],
        size,
        3,
    )
    return image


def face(size: int) -> Image.Image:
    s = size / 256
    smile = [(128 + 55 * math.cos(a), 140 + 45 * math.sin(a)) for a in np.linspace(0.3, math.pi - 0.3, 30)]
    return _draw(
        [np.array(smile) * s, np.array([(128, 110), (120, 140), (134, 142)]) * s],
        size,
        3,
        [
            tuple(np.array((30, 30, 226, 226)) * s),
            tuple(np.array((80, 80, 108, 100)) * s),
            tuple(np.array((148, 80, 176, 100)) * s),
        ],
    )


def flower(size: int) -> Image.Image:
    s = size / 256
    petals = []
    for k in range(6):
        a = k * math.pi / 3
        cx, cy = 128 + 45 * math.cos(a), 100 + 45 * math.sin(a)
        petals.append(tuple(np.array((cx - 26, cy - 26, cx + 26, cy + 26)) * s))
    stem = np.array([(128, 130), (122, 190), (130, 245)]) * s
    leaf = np.array([(124, 200), (90, 185), (80, 200), (124, 205)]) * s
    return _draw([stem, leaf], size, 3, [*petals, tuple(np.array((108, 80, 148, 120)) * s)])


def car(size: int) -> Image.Image:
    s = size / 256
    body = np.array([(20, 170), (20, 130), (70, 125), (95, 90), (170, 90), (200, 125), (236, 135), (236, 170)])
    return _draw(
        [np.vstack([body, body[:1]]) * s, np.array([(132, 92), (132, 125)]) * s, np.array([(82, 125), (200, 125)]) * s],
        size,
        3,
        [tuple(np.array((45, 150, 95, 200)) * s), tuple(np.array((160, 150, 210, 200)) * s)],
    )


def grid(size: int) -> Image.Image:
    steps = np.linspace(0.15, 0.85, 5) * size
    lines = [np.array([(x, 0.1 * size), (x, 0.9 * size)]) for x in steps]
    lines += [np.array([(0.1 * size, y), (0.9 * size, y)]) for y in steps]
    return _draw(lines, size, 3)


def line_drawings(size: int = 256) -> dict[str, Image.Image]:
    """The benchmark's line drawings, size² grayscale, black lines on white."""
    horse = _contours(np.logical_not(samples.horse()), [0.5])
    phantom = _contours(samples.shepp_logan_phantom(), [0.1, 0.25])
    blobs = _contours(samples.binary_blobs(length=160, blob_size_fraction=0.15, volume_fraction=0.35, rng=2), [0.5])
    return {
        "cat (examples/cat.png)": prepare_image(EXAMPLE, size, size),
        "horse outline, 2 px": _draw(_fit_lines(horse, size), size, 2),
        "horse outline, 5 px": _draw(_fit_lines(horse, size), size, 5),
        "phantom contours": _draw(_fit_lines(phantom, size), size, 2),
        "blob contours": _draw(_fit_lines(blobs, size), size, 3),
        "stick figure (JSON)": rasterize_strokes(stick_figure(), size, size),
        "spiral and wave (JSON)": rasterize_strokes(spiral_and_wave(), size, size),
        "star (JSON)": rasterize_strokes(star(), size, size),
        "tree (JSON)": rasterize_strokes(tree(), size, size),
        "house": house(size),
        "face": face(size),
        "flower": flower(size),
        "car": car(size),
        "grid": grid(size),
    }


def deformed_clip(drawing: Image.Image, frames: int = CLIP_FRAMES) -> list[Image.Image]:
    """`drawing` moving (up to 10 % of its width), turning (4°) and gently
    bending (a wave of up to 1.5 px) over `frames` frames."""
    data = np.asarray(drawing.convert("L"), dtype=np.float64) / 255
    size = data.shape[1]
    centre = np.array([size / 2, size / 2])
    clip = []
    for k in range(frames):
        t = k / max(frames - 1, 1)
        angle, shift = math.radians(4 * t), np.array([0.1 * size * t, 0.04 * size * t])
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

        def source(
            xy: np.ndarray, rotation: np.ndarray = rotation, shift: np.ndarray = shift, t: float = t
        ) -> np.ndarray:
            back = (xy - centre - shift) @ rotation + centre  # inverse of rotate-then-shift (rotation is orthogonal)
            wave = 1.5 * math.sin(math.pi * t)
            back[:, 0] += wave * np.sin(2 * math.pi * xy[:, 1] / size)
            back[:, 1] += wave * np.sin(2 * math.pi * xy[:, 0] / size)
            return back

        moved = warp(data, source, order=1, cval=1.0)
        clip.append(Image.fromarray((moved * 255).round().astype(np.uint8), "L"))
    return clip


# -- figures --


@dataclass
class Figures:
    chamfer: float
    iou: float
    strokes: int
    two_point: int
    ms: float


def skeleton_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric chamfer distance in pixels between the skeletons of two ink masks."""
    sa, sb = skeletonize(a), skeletonize(b)
    if not sa.any() or not sb.any():
        return math.inf
    to_a, to_b = (cast(np.ndarray, ndimage.distance_transform_edt(~mask)) for mask in (sa, sb))
    return 0.5 * float(to_b[sa].mean() + to_a[sb].mean())


def ink_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def figures(drawing: Image.Image, traced: dict[str, Any], ms: float) -> Figures:
    ink = np.asarray(drawing.convert("L")) < INK_LEVEL
    strokes = traced["strokes"]
    if strokes:
        back = np.asarray(rasterize_strokes(traced, drawing.width, drawing.height)) < INK_LEVEL
    else:
        back = np.zeros_like(ink)
    two = sum(len(s["points"]) == 2 for s in strokes)
    return Figures(skeleton_chamfer(ink, back), ink_iou(ink, back), len(strokes), two, ms)


def timed(tracer: Tracer, drawing: Image.Image, repeats: int = 3) -> tuple[dict[str, Any], float]:
    best, traced = math.inf, {}
    for _ in range(repeats):
        started = time.perf_counter()
        traced = tracer(drawing)
        best = min(best, time.perf_counter() - started)
    return traced, best * 1000


def baseline_chamfer_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """The previous stroke matching's cost: every pair of `a` x `b` compared
    at once (len(a) * len(b) * SAMPLES² distances in memory). Baseline only."""
    distances = cdist(np.concatenate(a), np.concatenate(b)).reshape(len(a), SAMPLES, len(b), SAMPLES)
    return 0.5 * (distances.min(axis=3).mean(axis=1) + distances.min(axis=1).mean(axis=2))


def speckle(size: int, seed: int, density: float = 0.08) -> Image.Image:
    """A dense frame: smoothed noise thresholded into `density` of ink, the
    hundreds of short strokes an untrained or diverging model draws."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random((size, size)), 1.5)
    return Image.fromarray(np.where(noise < np.quantile(noise, density), 0, 255).astype(np.uint8), "L")


def matching_cost(size: int) -> tuple[int, int, list[tuple[str, float, float]]]:
    """Stroke counts of two speckle frames, and (label, ms, peak MiB) of
    matching their strokes the baseline's way and today's."""
    first, second = (trace_frame(speckle(size, seed)) for seed in (1, 2))
    scale = np.array([size, size], dtype=np.float64)
    a = [resample(np.asarray(s["points"]) * scale, bool(s.get("cyclic"))) for s in second["strokes"]]
    b = [resample(np.asarray(s["points"]) * scale, bool(s.get("cyclic"))) for s in first["strokes"]]
    reach = np.maximum(MATCH_DISTANCE, MATCH_FRACTION * np.array([np.ptp(x, axis=0).max() for x in b]))
    rows = []
    for label, match in (
        ("baseline", lambda: baseline_chamfer_matrix(a, b)),
        ("today", lambda: chamfer_matrix(a, b, reach)),
    ):
        tracemalloc.start()
        started = time.perf_counter()
        match()
        ms = (time.perf_counter() - started) * 1000
        rows.append((label, ms, tracemalloc.get_traced_memory()[1] / 2**20))
        tracemalloc.stop()
    return len(a), len(b), rows


def id_stability(traced: dict[str, Any]) -> float:
    """Fraction of strokes (all frames but the last) whose id is in the next frame."""
    frames = [{s["id"] for s in f["strokes"]} for f in traced["frames"]]
    kept = sum(len(a & b) for a, b in itertools.pairwise(frames))
    total = sum(len(a) for a in frames[:-1])
    return kept / total if total else 1.0


def summary(rows: list[Figures]) -> dict[str, float]:
    strokes = sum(r.strokes for r in rows)
    return {
        "chamfer": float(np.mean([r.chamfer for r in rows])),
        "iou": float(np.mean([r.iou for r in rows])),
        "strokes": strokes / len(rows),
        "two_point": 100 * sum(r.two_point for r in rows) / max(strokes, 1),
        "ms": float(np.mean([r.ms for r in rows])),
    }


def _row(name: str, r: Figures) -> str:
    share = 100 * r.two_point / max(r.strokes, 1)
    return f"{name:28} {r.chamfer:8.2f} {r.iou:6.3f} {r.strokes:8d} {share:7.1f} {r.ms:8.1f}"


HEADER = f"{'drawing':28} {'chamfer':>8} {'IoU':>6} {'strokes':>8} {'2-pt %':>7} {'ms':>8}"


# -- commands --


def read_frames(folder: str | Path) -> list[Image.Image]:
    """Every image in `folder`, in name order, as a grayscale drawing on white."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder.", "Pass a folder of frame images (PNG, JPEG, …).")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"'{folder}' holds no images.", "Put the frames there as PNG or JPEG files.")
    return [normalise_drawing(load_image(p), allow_blank=True) for p in files]


def trace_command(args: argparse.Namespace) -> int:
    """`flipsketch trace FRAMES_DIR`: trace a folder as a clip, print its figures."""
    import json

    if args.workers is not None and args.workers < 1:
        raise InputError(
            f"--workers {args.workers} is not a thread count.", "Pass --workers 1 or more, or leave it out."
        )
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise InputError(f"The folder of '{out}' does not exist.", "Create it first or choose another --out file.")
    frames = read_frames(args.frames_dir)
    started = time.perf_counter()
    traced = trace_frames(frames, workers=args.workers)
    clip_ms = (time.perf_counter() - started) * 1000 / len(frames)
    print(HEADER)
    rows = []
    for index, (frame, drawing) in enumerate(zip(frames, traced["frames"], strict=True)):
        _, ms = timed(trace_frame, frame, repeats=1)
        rows.append(figures(frame, drawing, ms))
        print(_row(f"frame {index}", rows[-1]))
    mean = summary(rows)
    print(
        f"mean of {len(rows)}: chamfer {mean['chamfer']:.2f} px, IoU {mean['iou']:.3f}, "
        f"{mean['strokes']:.1f} strokes, {mean['two_point']:.1f} % 2-point, {mean['ms']:.1f} ms per frame "
        f"({clip_ms:.1f} ms per frame for the whole clip, linking included)"
    )
    print(f"stroke-id stability frame to frame: {100 * id_stability(traced):.1f} %")
    if out is not None:
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text(json.dumps(traced), encoding="utf-8")
        partial.replace(out)  # never a half-written file
        print(f"Wrote {out}")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """`flipsketch bench --trace`: this tracer against the baseline on the built set."""
    drawings = line_drawings(args.trace_size)
    results: dict[str, list[Figures]] = {"baseline": [], "today": []}
    for label, tracer in (("baseline", baseline_trace_frame), ("today", trace_frame)):
        print(f"{label} tracer\n{HEADER}")
        for name, drawing in drawings.items():
            traced, ms = timed(tracer, drawing)
            results[label].append(figures(drawing, traced, ms))
            print(_row(name, results[label][-1]))
    old, new = summary(results["baseline"]), summary(results["today"])
    print(f"\nmean of {len(drawings)} drawings, {args.trace_size}²")
    print(f"{'figure':22} {'baseline':>9} {'today':>9} {'today/baseline':>15}")
    for key, label in (
        ("chamfer", "chamfer px"),
        ("iou", "ink IoU"),
        ("strokes", "strokes per drawing"),
        ("two_point", "2-point strokes %"),
        ("ms", "ms per frame"),
    ):
        ratio = new[key] / old[key] if old[key] else math.nan
        print(f"{label:22} {old[key]:9.3f} {new[key]:9.3f} {ratio:15.2f}")
    count_a, count_b, rows = matching_cost(args.trace_size)
    print(f"\nmatching the strokes of two dense (speckle) frames, {count_a} x {count_b} strokes")
    for label, ms, mib in rows:
        ratios = f"{ms / rows[0][1]:.3f}, {mib / rows[0][2]:.3f} of baseline"
        print(f"{label:9} {ms:9.0f} ms {mib:9.0f} MiB peak  ({ratios})")
    print(f"\nclips of {CLIP_FRAMES} frames (moved, turned, bent)")
    for name in ("cat (examples/cat.png)", "house", "stick figure (JSON)", "horse outline, 2 px"):
        clip = deformed_clip(drawings[name])
        started = time.perf_counter()
        serial = trace_frames(clip, workers=1)
        one = time.perf_counter() - started
        started = time.perf_counter()
        trace_frames(clip)
        pooled = time.perf_counter() - started
        print(
            f"{name:28} id stability {100 * id_stability(serial):5.1f} %; clip {one * 1000:.0f} ms on 1 thread, "
            f"{pooled * 1000:.0f} ms pooled ({pooled / one:.2f})"
        )
    return 0
