"""Sketch-style LoRAs in the extension, in the real bpy module: Export Animation
for Training writes clip folders the trainer reads, and the LoRA list of the
preferences travels with every job the add-on submits."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import json
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from flipsketch.clips import load_clips

from .conftest import ROOT
from .test_blender import SQUARE, _reference_square, _world_points, addon, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module


def _moved(strokes: dict, dx: float) -> dict:
    return {**strokes, "strokes": [{**s, "points": [[x + dx, y] for x, y in s["points"]]} for s in strokes["strokes"]]}


def _points(drawing: dict) -> np.ndarray:
    return np.concatenate([np.asarray(s["points"]) for s in drawing["strokes"]])


def _placement(scene, ob):
    """Where `ob`'s drawing is, as a job records it."""
    projection, export = addon_module("projection"), addon_module("export")
    frame = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    return export.export_drawing(ob, scene.frame_current, frame)[1]


def _clip(folder: Path) -> tuple[list[str], list[dict], str]:
    """File names, drawings in frame order, caption."""
    names = sorted(p.name for p in folder.iterdir())
    drawings = [json.loads((folder / n).read_text(encoding="utf-8")) for n in names if n.startswith("frame_")]
    return names, drawings, (folder / "caption.txt").read_text(encoding="utf-8")


def test_training_clip_holds_every_frame_as_jobs_project_it(scene, tmp_path: Path) -> None:
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080  # letterboxed into the square
    add_camera()
    ob = add_drawing(SQUARE)
    ob.location = (0.3, 2.0, -0.4)
    bpy.context.view_layer.update()
    layer = ob.data.layers["Lines"]
    addon_module("importer").write_traced(ob, layer, {"frames": [_moved(SQUARE, 0.1)]}, 3, 1, _placement(scene, ob))
    scene.frame_start, scene.frame_end = 1, 4
    scene.frame_set(1)

    assert bpy.ops.flipsketch.export_training_clip(directory=str(tmp_path), caption=" the plus\nslides ") == {
        "FINISHED"
    }
    clip = tmp_path / "Sketch_Lines"
    names, drawings, caption = _clip(clip)
    assert names == ["caption.txt", "frame_0001.json", "frame_0002.json", "frame_0003.json", "frame_0004.json"]
    assert caption == "the plus slides\n"
    assert [sorted(d) for d in drawings] == [["schema", "strokes", "version"]] * 4
    assert scene.frame_current == 1  # the scene is left at its frame
    first = _points(drawings[0])
    assert np.abs(first - _reference_square(_world_points(ob), scene)).max() < 1e-4
    assert np.array_equal(_points(drawings[1]), first)  # frame 2 holds key 1
    assert np.abs(_points(drawings[2]) - _points(_moved(SQUARE, 0.1))).max() < 1e-4  # key 3, where it was drawn
    assert np.abs(_points(drawings[2]) - first).max() > 0.05
    assert np.array_equal(_points(drawings[3]), _points(drawings[2]))
    assert [p.name for p in tmp_path.iterdir()] == ["Sketch_Lines"]  # no temporary folder left

    (trainable,) = load_clips(tmp_path, 256, 2)  # what `flipsketch train-lora` will learn from
    assert trainable.caption == "the plus slides" and trainable.frames.shape == (2, 256, 256)
    assert trainable.holds == 2  # frames 2 and 4 hold the drawings of frames 1 and 3
    for frame, drawing in zip(trainable.frames, drawings[::2], strict=True):
        columns, rows = (np.clip(_points(drawing) * 256, 0, 255).astype(int)).T
        assert frame[rows, columns].mean() < 128 and np.median(frame) == 255  # ink where the camera saw strokes

    result = bpy.ops.flipsketch.export_training_clip(
        directory=str(tmp_path), clip_name="every other", caption="x", frame_start=1, frame_end=5, step=2
    )
    assert result == {"FINISHED"}
    names, drawings, _ = _clip(tmp_path / "every_other")
    assert names == ["caption.txt", "frame_0001.json", "frame_0002.json", "frame_0003.json"]  # frames 1, 3, 5
    assert np.array_equal(_points(drawings[1]), _points(drawings[2])) and not np.array_equal(
        _points(drawings[0]), _points(drawings[1])
    )


def test_training_clip_follows_a_moving_camera(scene, tmp_path: Path) -> None:
    camera = add_camera()
    ob = add_drawing(SQUARE)
    camera.keyframe_insert("location", frame=1)
    camera.location.x = 1.0
    camera.keyframe_insert("location", frame=3)
    assert bpy.ops.flipsketch.export_training_clip(
        directory=str(tmp_path), caption="pan", frame_start=1, frame_end=3
    ) == {"FINISHED"}
    _, drawings, _ = _clip(tmp_path / "Sketch_Lines")
    for number, drawing in enumerate(drawings, start=1):
        scene.frame_set(number)
        assert np.abs(_points(drawing) - _reference_square(_world_points(ob), scene)).max() < 1e-4
    assert _points(drawings[2])[:, 0].max() < _points(drawings[0])[:, 0].max() - 0.05  # the camera moved right


def test_training_defaults_come_from_the_scene_preferences_and_generating_job(scene, addon, tmp_path: Path) -> None:
    add_camera()
    add_drawing(SQUARE)
    scene.frame_start, scene.frame_end = 2, 4
    job = scene.flipsketch.jobs.add()
    job.state, job.object_name, job.prompt = "imported", "Sketch", "the plus spins"
    for name in ("Other", "Lines"):
        job.variants.add().layer = name
    saved, addon.training_data_dir = addon.training_data_dir, str(tmp_path / "data")
    try:
        assert bpy.ops.flipsketch.export_training_clip() == {"FINISHED"}
    finally:
        addon.training_data_dir = saved
    names, _, caption = _clip(tmp_path / "data" / "Sketch_Lines")
    assert names == ["caption.txt", "frame_0001.json", "frame_0002.json", "frame_0003.json"]
    assert caption == "the plus spins\n"


def test_training_export_refuses_clearly_and_leaves_nothing_behind(scene, tmp_path: Path) -> None:
    add_camera()
    ob = add_drawing(SQUARE, frame=3)
    ob.keyframe_insert("location", frame=4)
    ob.location.x = 50.0  # out of the camera at frame 5
    ob.keyframe_insert("location", frame=5)
    export = bpy.ops.flipsketch.export_training_clip
    with pytest.raises(RuntimeError, match="Type a caption"):
        export(directory=str(tmp_path), frame_start=3, frame_end=4)
    with pytest.raises(RuntimeError, match=r"Frame 2: .*nothing drawn at frame 2"):
        export(directory=str(tmp_path), caption="a plus", frame_start=2, frame_end=4)
    with pytest.raises(RuntimeError, match="Frame 5: The drawing is outside the camera frame"):
        export(directory=str(tmp_path), caption="a plus", frame_start=3, frame_end=6)
    assert list(tmp_path.iterdir()) == []

    assert export(directory=str(tmp_path), caption="a plus", frame_start=3, frame_end=4) == {"FINISHED"}
    clip = tmp_path / "Sketch_Lines"
    before = {p.name: p.read_bytes() for p in clip.iterdir()}
    with pytest.raises(RuntimeError, match="exists already: choose another clip name, or tick Overwrite"):
        export(directory=str(tmp_path), caption="another", frame_start=3, frame_end=3)
    assert {p.name: p.read_bytes() for p in clip.iterdir()} == before
    assert export(directory=str(tmp_path), caption="another", frame_start=3, frame_end=3, overwrite=True) == {
        "FINISHED"
    }
    assert _clip(clip)[0] == ["caption.txt", "frame_0001.json"] and _clip(clip)[2] == "another\n"

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="is not a training clip"):
        export(directory=str(tmp_path), clip_name="notes", caption="a plus", frame_start=3, frame_end=3, overwrite=True)
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Sketch_Lines", "notes"]  # no temporary folders


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """The requests jobs would send to the backend (none is started)."""
    requests: list[dict] = []
    monkeypatch.setattr(
        addon_module("backend"), "start_job", lambda key, settings, request, *rest: requests.append(request)
    )
    return requests


@pytest.fixture
def loras(addon):
    yield addon.loras
    addon.loras.clear()


def _generated_job(scene, ob, recorded_loras: list[dict]):
    """An imported job whose layer is the drawing's, with its run record (as the importer leaves it)."""
    job = scene.flipsketch.jobs.add()
    job.key, job.state, job.prompt, job.object_name = "made", "imported", "spin", ob.name
    job.variants.add().layer = "Lines"
    job.frame, job.timing, job.placement = 1, 2, json.dumps(_placement(scene, ob).to_json())
    params = {**scene.flipsketch.params(), "loras": recorded_loras, "lambda": 0.5}
    bpy.data.texts.new("FlipSketch made.json").write(json.dumps({"run": {"params": params}}))
    return job.key


def test_enabled_loras_go_with_every_job_and_regenerate_keeps_the_recorded_ones(
    scene, addon, loras, sent: list[dict], tmp_path: Path
) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))  # for the blend-relative entry
    scene = bpy.context.scene
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    assert "loras" not in sent[-1]["params"]  # none: older backends get what they know

    assert bpy.ops.flipsketch.lora_add(directory=str(tmp_path / "ink")) == {"FINISHED"}
    loras[-1].weight = 0.75
    bpy.ops.flipsketch.lora_add(directory="//styles/pencil/")
    bpy.ops.flipsketch.lora_add(directory=str(tmp_path / "off"))
    loras[-1].enabled = False
    bpy.ops.flipsketch.lora_add()  # no folder chosen yet
    kohya = tmp_path / "styles" / "charcoal.safetensors"  # a single-file LoRA chosen in the browser
    assert bpy.ops.flipsketch.lora_add(directory=str(kohya.parent) + "/", filepath=str(kohya)) == {"FINISHED"}
    assert Path(loras[-1].path) == kohya
    loras[-1].enabled = False
    listed = len(loras)
    assert bpy.ops.flipsketch.lora_add(directory=str(tmp_path / "ink") + "/") == {"CANCELLED"}  # listed already
    assert bpy.ops.flipsketch.lora_add(directory=str(kohya.parent), filepath=str(kohya)) == {"CANCELLED"}
    assert len(loras) == listed and loras[0].weight == 0.75
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    sent_loras = sent[-1]["params"]["loras"]
    assert [lora["weight"] for lora in sent_loras] == [0.75, 1.0]
    assert [Path(lora["path"]) for lora in sent_loras] == [tmp_path / "ink", tmp_path / "styles" / "pencil"]
    assert all(Path(lora["path"]).is_absolute() for lora in sent_loras)

    scene.timeline_markers.new("a", frame=1)
    bpy.ops.flipsketch.shots_from_markers()
    scene.flipsketch.shots[0].prompt = "the plus spins"
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    assert sent[-1]["params"]["loras"] == sent_loras

    recorded = [{"path": "/recorded/ink", "weight": 0.5}]
    key = _generated_job(scene, ob, recorded)
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
    assert sent[-1]["params"]["loras"] == sent_loras
    scene.flipsketch.jobs[-1].state = "failed"  # the extension ended: the layer is free for a regeneration
    assert bpy.ops.flipsketch.regenerate(key=key) == {"FINISHED"}
    assert sent[-1]["params"]["loras"] == recorded  # the segment's own LoRAs, not today's list
    assert "lambda" not in sent[-1]["params"]

    loras_before = len(loras)
    addon.lora_index = 0
    assert bpy.ops.flipsketch.lora_remove() == {"FINISHED"} and len(loras) == loras_before - 1
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    assert [Path(lora["path"]) for lora in sent[-1]["params"]["loras"]] == [tmp_path / "styles" / "pencil"]
    for lora in loras:
        lora.enabled = False
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    assert "loras" not in sent[-1]["params"]
    loras.clear()
    with pytest.raises(RuntimeError, match="No LoRA is selected"):
        bpy.ops.flipsketch.lora_remove()
