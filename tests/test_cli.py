"""`flipsketch animate` as a user runs it, and the atomic output folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from flipsketch.outputs import atomic_folder

from .conftest import ROOT

FAST = ["--width", "64", "--height", "64", "--frames", "4", "--steps", "5", "--align-iters", "2", "--tau-align", "2"]


def flipsketch(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
    env = {**os.environ, **(env or {})}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def animate_cat(model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The example sketch through `flipsketch animate` with small, fast settings."""
    return flipsketch(
        "animate", ROOT / "examples" / "cat.png", "--prompt", "the cat meows", "--model", model, "--out", out, *FAST
    )


@pytest.fixture(scope="module")
def animated(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cat"
    result = animate_cat(tiny_model_dir, out)
    assert result.returncode == 0, result.stderr
    assert "tiny random test model" in result.stderr  # never passed off as a real animation
    return out


def test_animate_writes_every_output(animated: Path) -> None:
    frames = sorted(animated.glob("frame_*.png"))
    assert [f.name for f in frames] == [f"frame_{i:04d}.png" for i in range(4)]
    assert Image.open(frames[0]).size == (64, 64)
    gif = Image.open(animated / "animation.gif")
    assert gif.n_frames == 4 and gif.info["duration"] == 100 and gif.info["loop"] == 0
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(animated / "animation.mp4"))
    meta = next(reader)
    assert meta["size"] == (64, 64) and sum(1 for _ in reader) == 4
    assert Image.open(animated / "contact_sheet.png").size[0] > 4 * 64
    assert Image.open(animated / "sketch.png").size == (64, 64)
    assert not list(animated.parent.glob(".*partial*"))


def test_run_json_records_how_to_reproduce(animated: Path, tiny_model_dir: Path) -> None:
    record = json.loads((animated / "run.json").read_text())
    assert record["params"]["prompt"] == "the cat meows" and record["params"]["lambda"] == 0.5
    assert record["seeds"] == [0] and record["model"]["folder"] == str(tiny_model_dir.resolve())
    assert record["model"]["tiny_random"] is True and "noise" in record["notice"]
    assert {"torch", "diffusers", "transformers", "flipsketch"} <= set(record["versions"])
    assert record["stats"]["unet_calls"] == 5 + 1 + 5 + 2 * 2  # inversion, sampling, alignment
    assert record["stats"]["total_s"] > 0 and record["peak_cpu_rss_bytes"] > 0
    assert "animation.mp4" in record["files"]["."]


def test_same_seed_gives_identical_files(animated: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = animate_cat(tiny_model_dir, again)
    assert result.returncode == 0, result.stderr
    for frame in sorted(animated.glob("frame_*.png")):
        assert (again / frame.name).read_bytes() == frame.read_bytes()


def test_errors_are_messages_and_leave_nothing_behind(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    missing = flipsketch("animate", tmp_path / "nope.png", "--prompt", "x", "--model", tiny_model_dir, "--out", out)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad = flipsketch("animate", ROOT / "examples" / "cat.png", "--prompt", "x", "--frames", "99", "--out", out)
    assert bad.returncode == 2 and "'frames'" in bad.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "result"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(Exception, match="already exists"), atomic_folder(out):
        pass
    assert (out / "mine.txt").read_text() == "user data"


def test_a_crash_while_writing_leaves_no_partial_folder(tmp_path: Path) -> None:
    out = tmp_path / "result"
    with pytest.raises(RuntimeError), atomic_folder(out) as folder:
        (folder / "frame_0000.png").write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out, overwrite=True) as folder:
        (folder / "ok").write_text("1")
    assert (out / "ok").read_text() == "1"


def test_model_download_offline_and_list(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    result = flipsketch("model", "download", "Hmrishav/t2v_sketch-lora", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "checkpoint-2500 could not be downloaded" in result.stderr and "CC-BY-NC-4.0" in result.stdout
    listing = flipsketch("model", "list", env=env)
    assert listing.returncode == 0 and "(no models downloaded)" in listing.stdout
