"""Storyboard shots land where the shot needs them, in the real bpy module:
clips fitted to the shot's range and ended by an empty keyframe, image cards
shown only inside their shot, the playhead put back, and an animatic whose
strips never overlap and fill the frame as the camera did."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import sys
from pathlib import Path

import bpy
import pytest
from PIL import Image

from .conftest import ROOT
from .test_blender import SQUARE, addon, scene  # noqa: F401

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, pump_until_done


def _overlaps(strips) -> list[tuple[str, str]]:
    found = []
    for a in strips:
        for b in strips:
            same_channel = a.name < b.name and a.channel == b.channel
            if same_channel and a.frame_final_start < b.frame_final_end and b.frame_final_start < a.frame_final_end:
                found.append((a.name, b.name))
    return found


def test_shots_fit_their_range_end_empty_and_the_animatic_fills_the_frame(scene) -> None:
    scene.render.resolution_x, scene.render.resolution_y = 1280, 720
    add_camera()
    scene.frame_end = 30
    for name, frame in (("a", 1), ("b", 6), ("c", 20), ("d", 21)):
        scene.timeline_markers.new(name, frame=frame)
    ob = add_drawing(SQUARE)
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    shots = scene.flipsketch.shots
    for shot in shots:
        shot.prompt = "the plus spins"
    scene.flipsketch.frames = 4  # on twos: 8 frames, more than shot a's 5
    scene.frame_set(13)
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    assert scene.frame_current == 13  # the playhead is where the artist left it
    assert [s.state for s in shots] == ["queued", "queued", "failed", "queued"]
    assert "2 drawings on 2s do not fit" in shots[2].message  # a 1-frame shot cannot hold a clip
    keys = {job.shot_name: job.key for job in scene.flipsketch.jobs}  # keys, not rows: the list may move
    assert addon_module("storyboard").fit_to_shot(shots[0], 4, 2) == (2, "")
    pump_until_done()
    jobs = {name: addon_module("runtime").find_job(key) for name, key in keys.items()}
    assert [s.state for s in shots] == ["done", "done", "failed", "done"]
    assert "4 drawings on 2s do not fit in 5 frames: 2 are made" in shots[0].message

    gpencil = addon_module("gpencil")
    for name, keys in (("a", [1, 3, 6]), ("b", [6, 8, 10, 12, 20]), ("d", [21, 23, 25, 27, 31])):
        job = jobs[name]
        (layer_name,) = job.layer_names()
        layer = ob.data.layers[layer_name]
        assert [f.frame_number for f in layer.frames] == keys, name
        assert gpencil.read_strokes(layer, keys[-1]) is None  # the clip ends empty: nothing stays on screen
    card = bpy.data.objects[jobs["b"].sequence_object]
    for frame, hidden in ((5, True), (6, False), (19, False), (20, True)):
        scene.frame_set(frame)
        assert card.hide_viewport == card.hide_render == hidden, frame

    assert bpy.ops.flipsketch.storyboard_to_sequencer() == {"FINISHED"}
    assert bpy.ops.flipsketch.storyboard_to_sequencer() == {"FINISHED"}  # again: beside the first, not over it
    strips = list(scene.sequence_editor.strips)
    assert _overlaps(strips) == []
    images = sorted((s for s in strips if s.type == "IMAGE"), key=lambda s: (s.frame_final_start, s.channel))
    assert [(s.frame_final_start, s.frame_final_duration, s.channel) for s in images] == [
        (1, 5, 1),
        (1, 5, 3),
        (6, 14, 1),
        (6, 14, 3),
        (21, 10, 1),
        (21, 10, 3),
    ]
    size = Image.open(next((Path(jobs["a"].out_dir) / "sequence").glob("seq_*.png"))).size[0]
    for strip in images:  # the square covers the 1280 px width: the camera's 720 rows are its centre
        assert strip.transform.scale_x == strip.transform.scale_y == pytest.approx(1280 / size, rel=1e-6)
        assert (strip.transform.offset_x, strip.transform.offset_y) == (0, 0)
    scene.render.resolution_x, scene.render.resolution_y = 720, 1280  # portrait now: the 16:9 frame still fills it
    assert bpy.ops.flipsketch.storyboard_to_sequencer() == {"FINISHED"}
    newest = sorted((s for s in scene.sequence_editor.strips if s.type == "IMAGE"), key=lambda s: s.channel)[-1]
    assert newest.transform.scale_x == pytest.approx(1280 / (size * 9 / 16), rel=1e-6)  # its 9/16 rows span 1280


def test_shots_from_markers_again_keep_each_shots_job_and_settings_through_duplicated_moved_and_renamed_markers(
    scene,
) -> None:
    scene.frame_end = 40
    markers = [scene.timeline_markers.new(name, frame=frame) for name, frame in (("sh010", 1), ("sh010", 10))]
    markers.append(scene.timeline_markers.new("sh020", frame=20))  # the second 'sh010': a Shift+D duplicate
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    shots = scene.flipsketch.shots
    for shot, prompt, key in zip(shots, ("first", "second", "third"), ("k1", "k2", "k3"), strict=True):
        shot.prompt, shot.job_key, shot.state = prompt, key, "done"
    shots[0].seed, shots[1].frames = 5, 6
    markers[1].name = "sh015"  # renamed
    markers[2].frame = 25  # moved
    scene.timeline_markers.new("new", frame=30)
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    got = [(s.name, s.frame_start, s.frame_end, s.prompt, s.job_key, s.state, s.seed, s.frames) for s in shots]
    assert got == [
        ("sh010", 1, 9, "first", "k1", "done", 5, 0),
        ("sh015", 10, 24, "second", "k2", "done", -1, 6),
        ("sh020", 25, 29, "third", "k3", "done", -1, 0),
        ("new", 30, 40, "", "", "todo", -1, 0),
    ]


def test_a_redone_storyboard_hides_the_old_clips_and_a_shots_clip_extends_from_its_last_drawing(scene) -> None:
    add_camera()
    scene.frame_end = 20
    for name, frame in (("a", 1), ("b", 11)):
        scene.timeline_markers.new(name, frame=frame)
    ob = add_drawing(SQUARE)
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    for shot in scene.flipsketch.shots:
        shot.prompt = "the plus spins"
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    pump_until_done()
    runtime = addon_module("runtime")
    first = [runtime.find_job(shot.job_key) for shot in scene.flipsketch.shots]
    old = [(job.layer_names()[0], job.sequence_object) for job in first]
    assert bpy.ops.flipsketch.animate_storyboard(force=True) == {"FINISHED"}
    pump_until_done()
    shots = scene.flipsketch.shots
    assert [s.state for s in shots] == ["done", "done"]
    new = [runtime.find_job(shot.job_key) for shot in shots]
    scene.frame_set(3)
    for (layer, card), job in zip(old, new, strict=True):
        assert ob.data.layers[layer].hide and bpy.data.objects[card].hide_viewport  # the old clip, hidden
        assert bpy.data.objects[card].hide_render
        assert not ob.data.layers[job.layer_names()[0]].hide  # the new one shows
    assert not bpy.data.objects[new[0].sequence_object].hide_viewport

    layer = ob.data.layers[new[0].layer_names()[0]]
    assert [f.frame_number for f in layer.frames] == [1, 3, 5, 7, 11]  # shot a: 4 drawings, then empty at 11
    ob.data.layers.active = layer
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}  # from frame 7, the last drawing, not the empty key
    key = scene.flipsketch.jobs[-1].key
    pump_until_done()
    assert runtime.find_job(key).state == "imported", runtime.find_job(key).message
    extension = runtime.find_job(key)
    assert (extension.frame, extension.first_key, extension.key_count) == (7, 9, 3)  # the join frame is not repeated
    assert [f.frame_number for f in layer.frames] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert addon_module("gpencil").read_strokes(layer, 15) is None  # the clip still ends empty
    assert addon_module("gpencil").read_strokes(layer, 11) is not None  # a drawing where the empty key was
