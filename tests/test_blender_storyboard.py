"""Storyboard shots land where the shot needs them, in the real bpy module:
clips fitted to the shot's range and ended by an empty keyframe, image cards
shown only inside their shot, the playhead put back, and an animatic whose
strips never overlap and fill the frame as the camera did."""

# ruff: noqa: F811  (the fixtures `addon` and `scene` are test_blender's, imported)

import sys
from pathlib import Path

import bpy
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
        assert strip.transform.scale_x == strip.transform.scale_y == 1280 / size
        assert (strip.transform.offset_x, strip.transform.offset_y) == (0, 0)
