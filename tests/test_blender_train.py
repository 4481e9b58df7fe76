"""Train LoRA in the extension, in the real bpy module with the managed backend
on the tiny model: a training run is a job of the job list, and its LoRA joins
the preferences' LoRA list when it is done."""

# ruff: noqa: F811  (the fixtures `addon`, `scene` and `loras` are imported from the other Blender tests)

import json
import sys
import time
from pathlib import Path

import bpy
import pytest

from .conftest import ROOT
from .synthetic import write_clips
from .test_blender import addon, preferences, scene  # noqa: F401
from .test_blender_lora import loras  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import addon_module

TINY = dict(steps=2, rank=4, resolution=64, frames=4, validation_steps=2)


@pytest.fixture
def lora_dir(addon, tmp_path: Path) -> Path:
    with preferences(addon, lora_dir=str(tmp_path / "loras")):  # not there yet: training makes it
        yield tmp_path / "loras"


def follow(job, timeout_s: float = 600.0) -> list[tuple[str, str, float, str]]:
    """Pump (as Blender's timer would) until no job runs; every distinct
    (state, stage, progress, message) the job's row showed on the way."""
    runtime, backend = addon_module("runtime"), addon_module("backend")
    seen, deadline = [], time.time() + timeout_s
    while True:
        running = backend.running_jobs() or not backend.messages.empty()
        runtime.pump()
        row = (job.state, job.stage, job.progress, job.message)
        if not seen or seen[-1] != row:
            seen.append(row)
        if not running:
            return seen
        assert time.time() < deadline, "the training job did not end"
        time.sleep(0.02)


def listed(loras) -> list[tuple[Path, bool, float]]:
    return [(Path(lora.path), lora.enabled, lora.weight) for lora in loras]


def test_trained_lora_joins_the_list_once_and_an_occupied_folder_is_refused(
    scene, loras, lora_dir: Path, tmp_path: Path
) -> None:
    data = write_clips(tmp_path / "data")
    assert bpy.ops.flipsketch.train_lora(data_dir=str(data), name="ball style", **TINY) == {"FINISHED"}
    job = scene.flipsketch.jobs[-1]
    assert job.prompt == "Train LoRA ball_style" and job.active
    rows = follow(job)
    assert job.state == "done", job.message
    folder = lora_dir / "ball_style"
    assert Path(job.out_dir) == folder
    training = [row for row in rows if row[1] == "train" and row[0] in ("queued", "running")]
    assert training and all(0 < progress < 1 for _, _, progress, _ in training)
    assert any(message.startswith("Step ") and "loss" in message for *_, message in training)
    assert job.message == f"LoRA added to the list: {folder}"
    assert (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "run.json").read_text())["steps_done"] == 2
    assert listed(loras) == [(folder, True, 1.0)]
    with pytest.raises(RuntimeError, match="Only an imported"):  # a LoRA is no animation to regenerate
        bpy.ops.flipsketch.regenerate(key=job.key)

    # The folder holds a run now: without Resume or Overwrite the server refuses it, and the row says why.
    assert bpy.ops.flipsketch.train_lora(data_dir=str(data), name="ball style", **TINY) == {"FINISHED"}
    refused = scene.flipsketch.jobs[-1]
    follow(refused)
    assert refused.state == "failed" and "already holds a LoRA training run" in refused.message
    assert "Tick Resume to continue it" in refused.message and "Overwrite" in refused.message
    assert json.loads((folder / "run.json").read_text())["steps_done"] == 2
    assert listed(loras) == [(folder, True, 1.0)]

    loras[0].weight = 0.5  # the artist's setting stays when the LoRA is trained again
    assert bpy.ops.flipsketch.train_lora(data_dir=str(data), name="ball style", overwrite=True, **TINY) == {"FINISHED"}
    again = scene.flipsketch.jobs[-1]
    follow(again)
    assert again.state == "done", again.message
    assert "in the list already" in again.message
    assert listed(loras) == [(folder, True, 0.5)]  # no second entry
    assert [job.state for job in scene.flipsketch.jobs] == ["done", "failed", "done"]


def test_training_can_be_cancelled_and_adds_nothing(scene, addon, loras, lora_dir: Path, tmp_path: Path) -> None:
    data = write_clips(tmp_path / "data")
    long = {**TINY, "steps": 100_000}
    with preferences(addon, training_data_dir=str(data)):  # a script may leave folder and name to the defaults
        assert bpy.ops.flipsketch.train_lora(**long) == {"FINISHED"}
        job = scene.flipsketch.jobs[-1]
        assert job.prompt == "Train LoRA data" and Path(job.out_dir) == lora_dir / "data"
        with pytest.raises(RuntimeError, match="is being trained already"):
            bpy.ops.flipsketch.train_lora(**long)
    runtime, deadline = addon_module("runtime"), time.time() + 300
    while job.stage != "train":
        runtime.pump()
        assert time.time() < deadline and job.active, job.message
        time.sleep(0.02)
    assert bpy.ops.flipsketch.cancel(key=job.key) == {"FINISHED"}
    follow(job)
    assert job.state == "cancelled" and "Resume" in job.message
    assert len(loras) == 0 and len(scene.flipsketch.jobs) == 1


def test_bad_training_requests_are_refused_clearly(scene, addon, loras, lora_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    train = bpy.ops.flipsketch.train_lora
    with pytest.raises(RuntimeError, match=f"The training data folder {missing} does not exist"):
        train(data_dir=str(missing), name="x", **TINY)
    data = write_clips(tmp_path / "data")
    with pytest.raises(RuntimeError, match="Type a name for the LoRA"):
        train(data_dir=str(data), name="  ", **TINY)
    with pytest.raises(RuntimeError, match=r"Resume \(.*\) or Overwrite \(.*\), not both"):
        train(data_dir=str(data), name="x", resume=True, overwrite=True, **TINY)
    assert len(scene.flipsketch.jobs) == 0 and not lora_dir.exists()

    # A remote server checks the folders on its own machine: its refusal shows in the job's row.
    backend, runtime = addon_module("backend"), addon_module("runtime")
    backend.connect(runtime.backend_settings(bpy.context))  # the managed server, used as a remote one
    info = json.loads((Path(addon.backend_path) / "server" / "server.json").read_text())
    remote = dict(backend_mode="REMOTE", remote_url=info["url"], remote_token=info["token"])
    with preferences(addon, **remote):
        assert train(data_dir=str(missing), name="x", **TINY) == {"FINISHED"}
    job = scene.flipsketch.jobs[-1]
    follow(job)
    assert job.state == "failed" and "does not exist" in job.message and str(missing) in job.message
    assert len(loras) == 0
