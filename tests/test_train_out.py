"""Training writes and deletes only in folders it owns: `--out` must be new,
empty or a FlipSketch training run (its marker is written first), and
`--overwrite` removes only the run's own files."""

import json
from pathlib import Path

import pytest

from flipsketch.cli import main
from flipsketch.errors import InputError
from flipsketch.models import load_model
from flipsketch.train import train_lora
from flipsketch.train_config import RUN_MARKER, TrainConfig

from .synthetic import write_clips

CONFIG = dict(rank=4, learning_rate=1e-2, resolution=64, frames=4, checkpoint_every=2, validation_steps=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clips(tmp_path_factory.mktemp("data"), count=1)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir))  # of its own: training injects an adapter


def user_folder(folder: Path) -> dict[str, bytes]:
    """A folder that merely looks like a run: the user's own files."""
    files = {
        "checkpoints/notes.txt": b"mine",
        "validation/frame_0000.png": b"my drawing",
        "run.json": b'{"kind": "my-own-thing"}',
        "adapter_config.json": b"{}",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"], ["--check-data"]])
def test_cli_never_touches_a_folder_that_is_not_a_run(data: Path, tiny_model_dir, tmp_path, capsys, flags) -> None:
    out = tmp_path / "mine"
    files = user_folder(out)
    args = ["train-lora", str(data), "--out", str(out), "--model", str(tiny_model_dir), "--steps", "2", *flags]
    assert main([*args, "--resolution", "64", "--frames", "4", "--validation-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert f"'{out}' is not empty and is not a FlipSketch training run" in err
    assert "notes.txt" not in err and contents(out) == files  # nothing listed, nothing replaced


def test_overwrite_removes_only_the_runs_own_files(data: Path, model, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    train_lora(data, out, model, TrainConfig(steps=4, **CONFIG))
    assert (out / RUN_MARKER).is_file() and (out / "checkpoints" / "step-000004").is_dir()
    (out / "notes.txt").write_text("the user's")
    (out / "checkpoints" / "readme.txt").write_text("the user's too")
    with pytest.raises(InputError, match="already holds a LoRA training run"):
        train_lora(data, out, model, TrainConfig(steps=2, **CONFIG))
    train_lora(data, out, model, TrainConfig(steps=2, **CONFIG), overwrite=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["readme.txt", "step-000002"]
    assert (out / "notes.txt").read_text() == "the user's"
    assert json.loads((out / "run.json").read_text())["steps_done"] == 2


def test_an_empty_folder_or_a_run_from_before_the_marker_is_accepted(data: Path, model, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    train_lora(data, empty, model, TrainConfig(steps=2, **CONFIG))
    (empty / RUN_MARKER).unlink()  # written by an earlier version: run.json says what it is
    train_lora(data, empty, model, TrainConfig(steps=4, **CONFIG), resume=True)
    assert json.loads((empty / "run.json").read_text())["steps_done"] == 4 and (empty / RUN_MARKER).is_file()
    with pytest.raises(InputError, match="is a file"):
        train_lora(data, empty / "run.json", model, TrainConfig(steps=2, **CONFIG))
