"""Frames -> centre-line strokes, checked against strokes we drew ourselves."""

import numpy as np
from PIL import Image, ImageDraw

from flipsketch.sketch import rasterize_strokes
from flipsketch.trace import trace_frame, trace_frames


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def test_traced_centre_lines_lie_on_the_drawn_strokes() -> None:
    drawn = [((0.2, 0.3), (0.8, 0.3)), ((0.5, 0.4), (0.5, 0.9)), ((0.1, 0.95), (0.9, 0.55))]
    strokes = {
        "schema": "flipsketch.strokes",
        "version": 1,
        "strokes": [{"points": [list(a), list(b)], "radius": 0.008} for a, b in drawn],
    }
    traced = trace_frame(rasterize_strokes(strokes, 256, 256))
    points = np.concatenate([np.asarray(s["points"]) for s in traced["strokes"]])
    segments = [(np.asarray(a), np.asarray(b)) for a, b in drawn]
    worst = max(min(_distance_to_segment(p, a, b) for a, b in segments) for p in points) * 256
    assert worst < 1.5  # pixels: every traced point is on a drawn centre line
    covered = [any(_distance_to_segment(p, a, b) * 256 < 1.5 for p in points) for a, b in segments]
    assert all(covered)
    radii = np.concatenate([s["radius"] for s in traced["strokes"]]) * 256
    assert 1.0 < np.median(radii) < 3.5  # drawn radius 0.008 * 256 = 2 px


def test_loops_and_junctions_become_separate_strokes() -> None:
    image = Image.new("L", (128, 128), 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), outline=0, width=3)  # a closed loop
    draw.line([(80, 20), (80, 100)], fill=0, width=3)  # a T: three branches
    draw.line([(80, 60), (120, 60)], fill=0, width=3)
    traced = trace_frame(image)
    loops = [s for s in traced["strokes"] if max(p[0] for p in s["points"]) < 0.5]
    assert len(loops) == 1 and len(loops[0]["points"]) > 6
    assert len(traced["strokes"]) == 4  # the loop + three branches of the T


def test_blank_frames_trace_to_nothing() -> None:
    clip = trace_frames([Image.new("L", (64, 64), 255)] * 3)
    assert clip["schema"] == "flipsketch.traced" and [f["strokes"] for f in clip["frames"]] == [[], [], []]
