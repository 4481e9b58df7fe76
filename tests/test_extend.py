"""`flipsketch extend`: chained segments continue exactly where the last one ended."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .test_cli import animate_cat, flipsketch


def _ink_box(path: Path) -> tuple[int, int, int, int]:
    ink = np.asarray(Image.open(path).convert("L")) < 128
    rows, cols = np.nonzero(ink)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_four_extensions_continue_numbering_without_drift(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert animate_cat(tiny_model_dir, tmp_path / "seg0").returncode == 0
    previous, last_index = tmp_path / "seg0", 3  # FAST makes 4 frames: 0..3
    for n in range(1, 5):
        segment = tmp_path / f"seg{n}"
        prompt = [] if n < 3 else ["--prompt", "now it waves"]  # same prompt, then a new one
        result = flipsketch("extend", previous, "--out", segment, *prompt)
        assert result.returncode == 0, result.stderr
        names = sorted(p.name for p in segment.glob("frame_*.png"))
        assert names == [f"frame_{i:04d}.png" for i in range(last_index + 1, last_index + 4)]  # 3 new, no join copy
        reference = np.asarray(Image.open(segment / "sketch.png").convert("L"))
        parent_last = np.asarray(Image.open(previous / f"frame_{last_index:04d}.png").convert("L"))
        assert np.array_equal(reference, parent_last)  # the reference is the parent's last frame, exactly
        assert _ink_box(segment / "sketch.png") == _ink_box(previous / f"frame_{last_index:04d}.png")  # drift: 0 px
        record = json.loads((segment / "run.json").read_text())
        assert record["parent"]["folder"] == str(previous.resolve())
        assert record["parent"]["frame"] == f"frame_{last_index:04d}.png"
        assert record["params"]["prompt"] == ("the cat meows" if n < 3 else "now it waves")
        assert record["params"]["frames"] == 4 and record["params"]["align"] is True  # inherited from seg0
        assert record["first_frame_index"] == last_index + 1
        previous, last_index = segment, last_index + 3


def test_extend_names_what_is_wrong(tmp_path: Path) -> None:
    result = flipsketch("extend", tmp_path, "--out", tmp_path / "x")
    assert result.returncode == 2 and "is not a FlipSketch result" in result.stderr


def test_regenerating_one_segment_leaves_the_others_untouched(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert animate_cat(tiny_model_dir, tmp_path / "seg0").returncode == 0
    for n in (1, 2):
        assert flipsketch("extend", tmp_path / f"seg{n - 1}", "--out", tmp_path / f"seg{n}").returncode == 0

    def snapshot(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.glob("frame_*.png"))}

    before = {n: snapshot(tmp_path / f"seg{n}") for n in range(3)}
    again = flipsketch("extend", tmp_path / "seg0", "--out", tmp_path / "seg1", "--overwrite", "--seed", "9")
    assert again.returncode == 0, again.stderr
    after = {n: snapshot(tmp_path / f"seg{n}") for n in range(3)}
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1].keys() == before[1].keys() and after[1] != before[1]  # same numbering, new drawings
    assert json.loads((tmp_path / "seg1" / "run.json").read_text())["seeds"] == [9]
