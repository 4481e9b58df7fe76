"""Frames -> centre-line strokes, checked against strokes we drew ourselves."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flipsketch.cli import main
from flipsketch.sketch import rasterize_strokes
from flipsketch.stroke_match import SAMPLES, chamfer_matrix, link_frame
from flipsketch.trace import trace_frame, trace_frames
from flipsketch.trace_bench import (
    baseline_trace_frame,
    deformed_clip,
    figures,
    id_stability,
    line_drawings,
    summary,
)


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def _strokes(lines: list[list[tuple[float, float]]], radius: float = 0.008) -> dict:
    return {
        "schema": "flipsketch.strokes",
        "version": 1,
        "strokes": [{"points": [list(p) for p in line], "radius": radius} for line in lines],
    }


def test_traced_centre_lines_lie_on_the_drawn_strokes() -> None:
    drawn = [((0.2, 0.3), (0.8, 0.3)), ((0.5, 0.4), (0.5, 0.9)), ((0.1, 0.95), (0.9, 0.55))]
    traced = trace_frame(rasterize_strokes(_strokes([list(d) for d in drawn]), 256, 256))
    points = np.concatenate([np.asarray(s["points"]) for s in traced["strokes"]])
    segments = [(np.asarray(a), np.asarray(b)) for a, b in drawn]
    worst = max(min(_distance_to_segment(p, a, b) for a, b in segments) for p in points) * 256
    assert worst < 1.5  # pixels: every traced point is on a drawn centre line
    covered = [any(_distance_to_segment(p, a, b) * 256 < 1.5 for p in points) for a, b in segments]
    assert all(covered)
    radii = np.concatenate([s["radius"] for s in traced["strokes"]]) * 256
    assert 1.0 < np.median(radii) < 3.5  # drawn radius 0.008 * 256 = 2 px


def test_lines_run_on_through_junctions_and_loops_are_cyclic() -> None:
    image = Image.new("L", (128, 128), 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), outline=0, width=3)  # a closed loop
    draw.line([(80, 20), (80, 100)], fill=0, width=3)  # a T: the bar runs on, the stem ends at it
    draw.line([(80, 60), (120, 60)], fill=0, width=3)
    traced = trace_frame(image)
    loops = [s for s in traced["strokes"] if max(p[0] for p in s["points"]) < 0.5]
    assert len(loops) == 1 and loops[0]["cyclic"] and len(loops[0]["points"]) > 6
    assert loops[0]["points"][0] != loops[0]["points"][-1]  # closed by the flag, not by a repeated point
    assert len(traced["strokes"]) == 3
    bar = max(traced["strokes"], key=lambda s: np.ptp(np.asarray(s["points"])[:, 1]))
    assert np.ptp(np.asarray(bar["points"])[:, 1]) * 128 > 75  # the whole bar, 80 px drawn
    back = np.asarray(rasterize_strokes(traced, 128, 128)) < 128
    assert (np.asarray(image) < 128)[back].mean() > 0.85  # the closing segment is drawn too


def test_a_crossing_is_two_long_strokes_and_spurs_are_pruned() -> None:
    image = Image.new("L", (256, 256), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(30, 30), (226, 226)], fill=0, width=7)
    draw.line([(30, 226), (226, 30)], fill=0, width=7)
    draw.ellipse((192, 64, 198, 70), fill=0)  # a bump on a thick line: a spur shorter than its width
    traced = trace_frame(image)
    assert len(traced["strokes"]) == 2
    for stroke in traced["strokes"]:
        ends = np.sort(np.asarray(stroke["points"])[[0, -1]] * 256, axis=0)
        assert np.ptp(ends[:, 0]) > 180 and np.ptp(ends[:, 1]) > 180  # corner to corner
        assert len(stroke["points"]) >= 3 and not stroke["cyclic"]


def test_radius_follows_the_ink_width_along_a_stroke() -> None:
    tapered = {
        "schema": "flipsketch.strokes",
        "version": 1,
        "strokes": [{"points": [[0.1, 0.5], [0.9, 0.5]], "radius": [0.004, 0.02]}],
    }
    (stroke,) = trace_frame(rasterize_strokes(tapered, 256, 256))["strokes"]
    x, radius = np.asarray(stroke["points"])[:, 0], np.asarray(stroke["radius"])
    radius = radius if x[0] < x[-1] else radius[::-1]
    body = radius[: round(0.8 * len(radius))]  # the thick end narrows inside its round cap
    assert len(radius) >= 6 and np.all(np.diff(body) * 256 > -0.1)
    assert radius[0] * 256 < 2 and body[-1] * 256 > 3.5  # 1 px -> 5 px drawn


def test_blank_frames_trace_to_nothing() -> None:
    clip = trace_frames([Image.new("L", (64, 64), 255)] * 3)
    assert clip["schema"] == "flipsketch.traced" and [f["strokes"] for f in clip["frames"]] == [[], [], []]


def test_matched_strokes_keep_their_id_direction_start_and_order() -> None:
    line = [[0.1, 0.2], [0.5, 0.25], [0.9, 0.2]]
    ring = [[0.5 + 0.1 * np.cos(a), 0.7 + 0.1 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]

    def doc(strokes: list[dict]) -> dict:
        return {"schema": "flipsketch.strokes", "version": 1, "width": 256, "height": 256, "strokes": strokes}

    first, next_id = link_frame(
        None,
        doc([{"points": line, "radius": [0.01, 0.02, 0.03]}, {"points": ring, "radius": [0.01] * 12, "cyclic": True}]),
        0,
    )
    assert [s["id"] for s in first["strokes"]] == [0, 1] and next_id == 2
    moved_ring = np.roll(np.asarray(ring)[::-1] + 0.004, 5, axis=0).tolist()  # other way round, other start
    new_line = [[0.3, 0.9], [0.4, 0.95]]
    second, next_id = link_frame(
        first,
        doc(
            [
                {"points": moved_ring, "radius": [0.01] * 12, "cyclic": True},
                {"points": new_line, "radius": [0.01, 0.01]},
                {"points": (np.asarray(line[::-1]) + 0.004).tolist(), "radius": [0.03, 0.02, 0.01]},
            ]
        ),
        next_id,
    )
    assert [s["id"] for s in second["strokes"]] == [0, 1, 2] and next_id == 3  # id order: matched lines first
    again_line, again_ring = second["strokes"][0], second["strokes"][1]
    assert np.allclose(again_line["points"][0], np.asarray(line[0]) + 0.004)  # runs the same way again
    assert again_line["radius"] == [0.01, 0.02, 0.03]  # radius travels with its point
    assert np.allclose(again_ring["points"][0], np.asarray(ring[0]) + 0.004)  # starts where it started
    assert np.allclose(again_ring["points"][1], np.asarray(ring[1]) + 0.004)  # and turns the same way
    assert second["strokes"][2]["points"] == new_line


def test_chamfer_matrix_compares_only_pairs_within_reach_and_equals_the_definition() -> None:
    rng = np.random.default_rng(3)
    a = [rng.uniform(0, 40, 2) + rng.normal(0, 3, (SAMPLES, 2)) for _ in range(30)]  # 30 scribbles on 0..40 px
    b = [rng.uniform(0, 40, 2) + rng.normal(0, 3, (SAMPLES, 2)) for _ in range(20)]

    def definition(p: np.ndarray, q: np.ndarray) -> float:  # mean nearest-point distance, both ways
        d = np.linalg.norm(p[:, None] - q[None], axis=2)
        return 0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean())

    expected = np.array([[definition(p, q) for q in b] for p in a])
    assert np.allclose(chamfer_matrix(a, b), expected, rtol=1e-12)
    reach = rng.uniform(2, 12, len(b))
    pruned = chamfer_matrix(a, b, reach)
    near = expected <= reach[None]
    assert 0 < near.sum() < near.size  # some pairs are out of reach: the test prunes something
    assert np.allclose(pruned[near], expected[near], rtol=1e-12)  # what can match is exact
    assert (pruned[~near] > reach[None].repeat(len(a), 0)[~near]).all()  # the rest stays out of reach
    assert chamfer_matrix([], b).shape == (0, 20) and chamfer_matrix(a, []).shape == (30, 0)


def test_a_moving_deforming_clip_keeps_stroke_ids() -> None:
    drawings = line_drawings(256)
    for name in ("stick figure (JSON)", "house"):
        traced = trace_frames(deformed_clip(drawings[name]))
        assert traced["version"] == 2 and len(traced["frames"]) == 16
        assert id_stability(traced) >= 0.9, name
        counts = [len(f["strokes"]) for f in traced["frames"]]
        assert max(counts) - min(counts) <= 1


def test_tracer_meets_the_issue_figures_against_the_baseline() -> None:
    drawings = line_drawings(256)
    subset = ["cat (examples/cat.png)", "house", "star (JSON)", "tree (JSON)", "horse outline, 5 px"]
    new = summary([figures(drawings[n], trace_frame(drawings[n]), 0.0) for n in subset])
    old = summary([figures(drawings[n], baseline_trace_frame(drawings[n]), 0.0) for n in subset])
    assert new["chamfer"] <= 0.5 and new["iou"] >= 0.75
    assert new["strokes"] <= old["strokes"] / 2
    assert new["two_point"] <= 5 < old["two_point"]


def test_trace_command_prints_figures_and_writes_strokes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(deformed_clip(line_drawings(256)["house"])[:3]):
        frame.save(frames / f"frame_{i:04d}.png")
    out = tmp_path / "strokes.json"
    assert main(["trace", str(frames), "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "stroke-id stability frame to frame: 100.0 %" in printed and "chamfer" in printed
    traced = json.loads(out.read_text())
    assert traced["schema"] == "flipsketch.traced" and len(traced["frames"]) == 3
    assert [s["id"] for s in traced["frames"][2]["strokes"]] == [s["id"] for s in traced["frames"][0]["strokes"]]


def test_trace_command_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["trace", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["trace", str(tmp_path)]) == 2
    assert "holds no images" in capsys.readouterr().err
    Image.new("L", (64, 64), 255).save(tmp_path / "frame.png")
    assert main(["trace", str(tmp_path), "--out", str(tmp_path / "no" / "strokes.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
