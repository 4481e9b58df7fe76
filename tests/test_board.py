"""`flipsketch batch`: storyboards, resumable, failures reported, Ray = sequential."""

import json
from pathlib import Path

import pytest

from flipsketch.board import parse_board, run_board, sequential
from flipsketch.errors import InputError

from .conftest import ROOT
from .test_cli import flipsketch

FAST = {"width": 64, "height": 64, "frames": 3, "steps": 3, "align": False}
LINE = {"schema": "flipsketch.strokes", "version": 1, "strokes": [{"points": [[0.2, 0.2], [0.8, 0.7]], "radius": 0.01}]}


def write_board(folder: Path, shots: list[dict], defaults: dict | None = None) -> Path:
    (folder / "cat.png").write_bytes((ROOT / "examples" / "cat.png").read_bytes())
    board = {"schema": "flipsketch.board", "version": 1, "defaults": {**FAST, **(defaults or {})}, "shots": shots}
    path = folder / "board.json"
    path.write_text(json.dumps(board))
    return path


def four_shots(bad: bool = True) -> list[dict]:
    blank = {"schema": "flipsketch.strokes", "version": 1, "strokes": []}
    return [
        {"name": "sh010", "sketch": "cat.png", "prompt": "the cat turns its head"},
        {"name": "sh020", "strokes": LINE, "prompt": "the line bends", "timing": 1},
        {"name": "sh030", "strokes": blank if bad else LINE, "prompt": "nothing to animate"},
        {"name": "sh040", "sketch": "cat.png", "prompt": "the cat meows", "params": {"seed": 5}, "timing": 3},
    ]


def test_batch_keeps_going_reports_failures_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    board = write_board(tmp_path, four_shots())
    out = tmp_path / "out"
    first = flipsketch("batch", board, "--out", out, "--model", tiny_model_dir)
    assert first.returncode == 1 and "3 of 4 shots done" in first.stdout
    report = json.loads((out / "report.json").read_text())
    assert [report[s]["state"] for s in ("sh010", "sh020", "sh030", "sh040")] == ["done", "done", "failed", "done"]
    assert "blank" in report["sh030"]["reason"]
    assert (out / "animatic.mp4").stat().st_size > 0 and (out / "sh040" / "animation.gif").is_file()
    done_mtime = (out / "sh010" / "run.json").stat().st_mtime_ns

    # The user fixes the broken shot; the rerun (as after a restart) does only that one.
    board = write_board(tmp_path, four_shots(bad=False))
    second = flipsketch("batch", board, "--out", out, "--model", tiny_model_dir)
    assert second.returncode == 0, second.stderr
    report = json.loads((out / "report.json").read_text())
    assert [report[s]["state"] for s in ("sh010", "sh020", "sh030", "sh040")] == [
        "skipped",
        "skipped",
        "done",
        "skipped",
    ]
    assert (out / "sh010" / "run.json").stat().st_mtime_ns == done_mtime

    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "animatic.mp4"))
    next(reader)
    assert sum(1 for _ in reader) == 3 * 2 + 3 * 1 + 3 * 2 + 3 * 3  # every shot at its timing


@pytest.mark.parametrize(
    ("shots", "message"),
    [
        ([], "'shots': must be a non-empty list"),
        ([{"name": "../up", "sketch": "cat.png", "prompt": "x"}], "shots\\[0\\].name"),
        (
            [{"name": "a", "sketch": "cat.png", "prompt": "x"}, {"name": "a", "strokes": LINE, "prompt": "y"}],
            "used twice",
        ),
        ([{"name": "a", "sketch": "cat.png"}], "shots\\[0\\] \\(a\\): Parameter 'prompt'"),
        ([{"name": "a", "sketch": "cat.png", "prompt": "x", "params": {"frames": "ten"}}], "'frames' must be int"),
        ([{"name": "a", "prompt": "x"}], "exactly one of 'sketch'"),
        ([{"name": "a", "sketch": "cat.png", "prompt": "x", "timing": 4}], "timing"),
    ],
)
def test_board_errors_name_shot_and_field(tmp_path: Path, shots: list[dict], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_board(write_board(tmp_path, shots))


def test_ray_run_equals_the_sequential_run(tiny_model, tiny_model_dir: Path, tmp_path: Path) -> None:
    import ray
    import torch

    from flipsketch.farm import ray_generator
    from flipsketch.models import ModelSource

    shots = parse_board(write_board(tmp_path, four_shots(bad=False)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray actor: the same kernels, the same floating-point sums
    try:
        run_board(shots, tmp_path / "sequential", sequential(tiny_model), log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        generate = ray_generator("local", ModelSource(str(tiny_model_dir)), "cpu", "fp32")
        report = run_board(shots, tmp_path / "ray", generate, log=lambda _: None)
    finally:
        ray.shutdown()
    assert all(entry["state"] == "done" for entry in report.values())
    for shot in shots:
        frames = sorted((tmp_path / "sequential" / shot.name).glob("frame_*.png"))
        assert len(frames) == 3
        for frame in frames:
            assert (tmp_path / "ray" / shot.name / frame.name).read_bytes() == frame.read_bytes(), (shot.name, frame)


def test_a_shot_with_variants_keeps_the_best_one(tiny_model, tmp_path: Path) -> None:
    from PIL import Image

    from flipsketch.metrics import ChamferScorer

    shots = parse_board(
        write_board(tmp_path, [{"name": "sh010", "sketch": "cat.png", "prompt": "the cat meows"}], {"variants": 3})
    )
    report = run_board(shots, tmp_path / "out", sequential(tiny_model), log=lambda _: None, scorer=ChamferScorer())
    folder = tmp_path / "out" / "sh010"
    record = json.loads((folder / "run.json").read_text())
    sketch = Image.open(folder / "sketch.png")
    frames = {seed: [Image.open(p) for p in sorted((folder / f"variant_{seed}").glob("frame_*"))] for seed in (0, 1, 2)}
    scores = {seed: ChamferScorer().score(sketch, frames[seed]) for seed in frames}
    best = max(scores, key=scores.get)
    assert [v["seed"] for v in record["variants"]] == sorted(scores, key=lambda s: -scores[s])
    assert report["sh010"]["best_seed"] == best == record["variants"][0]["seed"]
    assert report["sh010"]["score"] == pytest.approx(scores[best], abs=1e-6)
