"""The extension in the real bpy module: export geometry, the Animate Sketch
round trip through a managed backend, cancel, and every bad situation."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))
from scene import add_camera, add_drawing, addon_module, install_extension, pump_until_done

FAST = dict(frames=4, steps=4, quality="draft", tau_compose=2, resolution=64)  # the tiny model's size
SQUARE = {  # a plus sign, radius in square-frame units
    "schema": "flipsketch.strokes",
    "version": 1,
    "strokes": [
        {"points": [[0.3, 0.5], [0.7, 0.5]], "radius": [0.01, 0.01]},
        {"points": [[0.5, 0.3], [0.5, 0.7]], "radius": [0.01, 0.01]},
    ],
}


@contextmanager
def preferences(addon, **values):
    """The add-on preferences set to `values` for a while."""
    saved = {name: getattr(addon, name) for name in values}
    for name, value in values.items():
        setattr(addon, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(addon, name, value)


@pytest.fixture(scope="module")
def addon(tmp_path_factory, extension_zip: Path, tiny_model_dir: Path, backend_python: Path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    install_extension(extension_zip)
    prefs = bpy.context.preferences.addons["bl_ext.user_default.flipsketch"].preferences
    prefs.backend_python = str(backend_python)
    prefs.backend_path = str(tmp_path_factory.mktemp("backend"))
    prefs.model, prefs.model_subfolder = str(tiny_model_dir), ""
    prefs.output_dir = str(tmp_path_factory.mktemp("results"))
    yield prefs
    addon_module("backend").stop_managed_server()


@pytest.fixture
def scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)  # keeps the enabled extension
    scene = bpy.context.scene
    scene.flipsketch.prompt = "the cat meows"
    for name, value in FAST.items():
        setattr(scene.flipsketch, name, value)
    return scene


def _reference_square(world: np.ndarray, scene) -> np.ndarray:
    """Blender's own world_to_camera_view, letterboxed into the square by hand."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    uv = np.array([world_to_camera_view(scene, scene.camera, Vector(p))[:2] for p in world])
    aspect = scene.render.resolution_x / scene.render.resolution_y
    fw, fh = (1.0, 1.0 / aspect) if aspect >= 1 else (aspect, 1.0)
    return np.c_[0.5 + (uv[:, 0] - 0.5) * fw, 0.5 - (uv[:, 1] - 0.5) * fh]


def _world_points(ob) -> np.ndarray:
    gpencil = addon_module("gpencil")
    layer = ob.data.layers["Lines"]
    strokes = gpencil.read_strokes(layer, bpy.context.scene.frame_current)
    matrix = np.array(ob.matrix_world @ layer.matrix_local)
    return (np.c_[strokes.positions, np.ones(len(strokes.positions))] @ matrix.T)[:, :3]


@pytest.mark.parametrize(
    ("ortho", "resolution"), [(False, (1024, 1024)), (True, (1024, 1024)), (False, (1920, 1080)), (False, (720, 1280))]
)
def test_export_matches_blenders_camera_projection(scene, ortho: bool, resolution: tuple[int, int]) -> None:
    scene.render.resolution_x, scene.render.resolution_y = resolution
    add_camera(ortho=ortho)
    ob = add_drawing(SQUARE)
    ob.location = (0.3, 2.0, -0.4)  # off-centre and deeper: projection must follow the object transform
    bpy.context.view_layer.update()
    projection, export = addon_module("projection"), addon_module("export")
    frame = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    strokes, placement = export.export_drawing(ob, scene.frame_current, frame)
    got = np.concatenate([np.asarray(s["points"]) for s in strokes["strokes"]])
    expected = _reference_square(_world_points(ob), scene)
    assert np.abs(got - expected).max() * 256 < 0.01  # in pixels of the 256 px square
    if resolution[0] != resolution[1]:  # letterboxed, not squashed: the plus stays a plus
        arms = [np.ptp(np.asarray(s["points"]), axis=0).max() for s in strokes["strokes"]]
        assert abs(arms[0] - arms[1]) < 1e-3
    assert np.allclose(placement.normal, [0, 1, 0], atol=1e-6)


def test_export_through_the_view_when_there_is_no_camera(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    projection, export = addon_module("projection"), addon_module("export")
    through_camera = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    scene.camera = None
    view = SimpleNamespace(perspective_matrix=through_camera.matrix)  # what a 3D view's region_data offers
    frame = projection.view_frame(view, scene.render.resolution_x, scene.render.resolution_y)
    strokes, _ = export.export_drawing(ob, scene.frame_current, frame)
    expected = np.concatenate([np.asarray(s["points"]) for s in SQUARE["strokes"]])
    got = np.concatenate([np.asarray(s["points"]) for s in strokes["strokes"]])
    assert np.abs(got - expected).max() < 1e-4


def test_traced_loops_are_cyclic_strokes_and_export_closed(scene) -> None:
    from flipsketch.sketch import rasterize_strokes

    add_camera()
    ring = [[0.5 + 0.2 * np.cos(a), 0.5 + 0.2 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    traced = {
        "schema": "flipsketch.strokes",
        "version": 1,
        "strokes": [
            {"id": 7, "points": ring, "radius": [0.01] * 16, "cyclic": True},
            {"id": 3, "points": [[0.1, 0.25], [0.3, 0.25]], "radius": [0.01, 0.01]},  # no flag: open
        ],
    }
    ob = add_drawing(traced)
    layer = ob.data.layers["Lines"]
    cyclic = np.zeros(2, bool)
    layer.get_frame_at(1).drawing.attributes["cyclic"].data.foreach_get("value", cyclic)
    assert cyclic.tolist() == [True, False]
    projection, export = addon_module("projection"), addon_module("export")
    frame = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    sent, _ = export.export_drawing(ob, 1, frame)
    closed, open_ = (np.asarray(stroke["points"]) for stroke in sent["strokes"])
    assert np.abs(closed - [*ring, ring[0]]).max() < 1e-4  # sent closed: the first point again at the end
    assert len(open_) == 2
    closing = np.asarray(rasterize_strokes(sent, 256, 256))[
        round(256 * (ring[-1][1] + ring[0][1]) / 2), round(256 * (ring[-1][0] + ring[0][0]) / 2)
    ]
    assert closing < 128  # the segment from the last point back to the first is drawn


def test_animate_sketch_round_trip(scene) -> None:
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    camera = add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    original = _world_points(ob).copy()
    layers_before = [layer.name for layer in ob.data.layers]
    export, projection = addon_module("export"), addon_module("projection")
    through_camera = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    sent_before, _ = export.export_drawing(ob, 1, through_camera)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    assert [layer.name for layer in ob.data.layers][: len(layers_before)] == layers_before
    assert export.export_drawing(ob, 1, through_camera)[0] == sent_before  # generated layers are never input
    assert np.array_equal(_world_points(ob), original)  # the user's drawing is untouched

    assert [(variant.layer, variant.seed) for variant in job.variants] == [(job.variants[0].layer, 0)]
    layer = ob.data.layers[job.variants[0].layer]
    assert [f.frame_number for f in layer.frames] == [1, 3, 5, 7]  # 4 drawings on twos
    empty = bpy.data.objects[job.sequence_object]
    assert empty.empty_display_type == "IMAGE" and empty.image_user.frame_start == 1
    assert empty.image_user.frame_duration == 8
    sequence = sorted((Path(job.out_dir) / "sequence").glob("seq_*.png"))
    assert len(sequence) == 8 and sequence[1].read_bytes() == sequence[0].read_bytes()

    # Imported strokes lie on the drawing's plane and re-project onto the traced pixels.
    import json

    traced = json.loads((Path(job.out_dir) / "strokes.json").read_text())["frames"]
    projection = addon_module("projection")
    frame = projection.camera_frame(scene, bpy.context.evaluated_depsgraph_get())
    plane_point, normal = original.mean(axis=0), np.array([0.0, 1.0, 0.0])
    gpencil = addon_module("gpencil")
    for k, drawing in enumerate(traced):
        strokes = gpencil.read_strokes(layer, 1 + 2 * k)
        if not drawing["strokes"]:
            continue
        world = (np.c_[strokes.positions, np.ones(len(strokes.positions))] @ np.array(ob.matrix_world).T)[:, :3]
        assert np.abs((world - plane_point) @ normal).max() < 1e-4
        xy, _ = frame.to_square(world)
        expected = np.concatenate([np.asarray(s["points"]) for s in drawing["strokes"]])
        assert np.abs(xy - expected).max() * 256 < 0.05  # pixels
    assert camera.name == job.camera_name
    assert bpy.data.texts[f"FlipSketch {job.key}.json"].as_string().startswith("{")


def test_cancel_then_killed_backend_then_recovery(scene, addon) -> None:
    add_camera()
    add_drawing(SQUARE)
    scene.flipsketch.steps = 60  # long enough to cancel while it runs
    runtime, backend = addon_module("runtime"), addon_module("backend")
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    job = scene.flipsketch.jobs[-1]
    deadline = time.time() + 300
    while job.stage != "denoise":
        runtime.pump()
        assert time.time() < deadline and job.state not in ("failed", "cancelled"), job.message
        time.sleep(0.05)
    assert bpy.ops.flipsketch.cancel(key=job.key) == {"FINISHED"}
    pump_until_done()
    assert job.state == "cancelled"

    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    job = scene.flipsketch.jobs[-1]
    while job.stage != "denoise":
        runtime.pump()
        assert time.time() < deadline, job.message
        time.sleep(0.05)
    backend._server["process"].kill()  # the backend dies mid-job
    pump_until_done()
    assert job.state == "failed" and "Lost the connection" in job.message

    scene.flipsketch.steps = 4
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}  # the next click starts a new backend
    pump_until_done()
    assert scene.flipsketch.jobs[-1].state == "imported", scene.flipsketch.jobs[-1].message


def test_bad_situations_are_reported_and_change_nothing(scene, addon, tmp_path: Path) -> None:
    assert not bpy.ops.flipsketch.animate.poll()  # no active Grease Pencil object
    add_camera()
    ob = add_drawing(SQUARE, frame=5)
    scene.frame_set(1)  # before the first drawn frame
    with pytest.raises(RuntimeError, match="nothing drawn at frame 1"):
        bpy.ops.flipsketch.animate()
    scene.frame_set(5)
    ob.location = (50.0, 0.0, 0.0)  # outside the camera frame
    bpy.context.view_layer.update()
    with pytest.raises(RuntimeError, match="outside the camera frame"):
        bpy.ops.flipsketch.animate()
    ob.location = (0.0, 0.0, 0.0)
    bpy.context.view_layer.update()

    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    saved_output, addon.output_dir = addon.output_dir, str(blocked / "out")
    with pytest.raises(RuntimeError, match="Cannot write to the output folder"):
        bpy.ops.flipsketch.animate()
    addon.output_dir = "//flipsketch/"  # unsaved .blend: falls back to a temp folder
    result = bpy.ops.flipsketch.animate()
    assert result == {"FINISHED"} and "flipsketch" in scene.flipsketch.jobs[-1].out_dir
    pump_until_done()
    addon.output_dir = saved_output

    saved_python, addon.backend_python = addon.backend_python, str(tmp_path / "no-python")
    addon_module("backend").stop_managed_server()
    (Path(addon.backend_path) / "server" / "server.json").unlink(missing_ok=True)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    assert "not installed" in scene.flipsketch.jobs[-1].message
    addon.backend_python = saved_python

    addon.backend_mode, addon.remote_url = "REMOTE", "http://127.0.0.1:9"  # nothing listens there
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    assert scene.flipsketch.jobs[-1].state == "failed" and "Cannot reach" in scene.flipsketch.jobs[-1].message
    addon.backend_mode = "LOCAL"
    assert len(ob.data.layers) == 2  # only the one successful import added a layer


def test_collect_diagnostics_fills_a_text_block(scene, addon) -> None:
    assert bpy.ops.flipsketch.diagnostics() == {"FINISHED"}
    runtime, deadline = addon_module("runtime"), time.time() + 120
    while "FlipSketch diagnostics" not in bpy.data.texts:
        runtime.pump()
        assert time.time() < deadline, "no diagnostics"
        time.sleep(0.1)
    text = bpy.data.texts["FlipSketch diagnostics"].as_string()
    assert f"Blender {bpy.app.version_string} (tested)" in text  # CI runs these tests on every tested Blender
    assert "FlipSketch is tested on Blender 4.5 LTS and 5.3; supported: 4.5 LTS, 5.0, 5.2 LTS, 5.3" in text
    assert "flipsketch doctor:" in text and "CPU only" in text


def test_extend_continues_the_layer_and_sequence_from_a_redrawn_last_key(scene) -> None:
    import json

    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    assert not bpy.ops.flipsketch.extend.poll()  # nothing generated yet
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    parent = scene.flipsketch.jobs[-1]
    parent_key, parent_prompt, sequence_object = parent.key, parent.prompt, parent.sequence_object
    layer = ob.data.layers[parent.variants[0].layer]
    first_key = addon_module("gpencil").read_strokes(layer, 1).positions.copy()

    # The artist redraws the last keyframe (7) as a small diagonal line in the middle.
    layer.frames.remove(7)
    importer, export = addon_module("importer"), addon_module("export")
    diagonal = {"frames": [{"strokes": [{"points": [[0.45, 0.45], [0.55, 0.55]], "radius": [0.01, 0.01]}]}]}
    importer.write_traced(ob, layer, diagonal, 7, 1, export.Placement(**json.loads(parent.placement)))
    ob.data.layers.active = layer
    scene.flipsketch.prompt = ""  # an empty prompt continues with the parent's
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
    pump_until_done()
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    assert job.parent_key == parent_key and job.prompt == parent_prompt

    assert [f.frame_number for f in layer.frames] == [1, 3, 5, 7, 9, 11, 13]  # 3 new keys on twos, no repeat of 7
    assert np.array_equal(addon_module("gpencil").read_strokes(layer, 1).positions, first_key)
    sent = np.asarray(Image.open(Path(job.out_dir) / "sketch.png").convert("L"))
    middle, off = len(sent) // 2, len(sent) * 5 // 32  # the square's centre, and 5/32 of the side in
    assert sent[middle, middle] < 128 and sent[off, off] == 255 and sent[middle, off] == 255  # the redrawn line
    empty = bpy.data.objects[sequence_object]
    assert empty.image_user.frame_duration == 14
    sequence = sorted(Path(bpy.path.abspath(empty.data.filepath)).parent.glob("seq_*.png"))
    assert [p.name for p in sequence] == [f"seq_{n:04d}.png" for n in range(1, 15)]
    record = json.loads(bpy.data.texts[f"FlipSketch {job.key}.json"].as_string())
    assert record["parent"] == parent_key and record["run"]["segment"] == {"first_index": 4}


def test_storyboard_from_markers_keeps_going_and_resumes_after_reopening(scene, tmp_path: Path) -> None:
    add_camera()
    scene.frame_end = 45
    for name, frame in (("sh010", 1), ("sh020", 10), ("sh030", 20), ("sh040", 30)):
        scene.timeline_markers.new(name, frame=frame)
    ob = add_drawing(SQUARE, frame=10)  # nothing is drawn at frame 1: the first shot cannot start
    assert bpy.ops.flipsketch.shots_from_markers() == {"FINISHED"}
    shots = scene.flipsketch.shots
    assert [(s.name, s.frame_start, s.frame_end) for s in shots] == [
        ("sh010", 1, 9),
        ("sh020", 10, 19),
        ("sh030", 20, 29),
        ("sh040", 30, 45),
    ]
    for shot in shots:
        shot.prompt = f"{shot.name}: the plus spins"
    shots[3].seed = 7
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    pump_until_done()
    assert [s.state for s in shots] == ["failed", "done", "done", "done"]
    assert "nothing drawn at frame 1" in shots[0].message
    assert len(scene.flipsketch.jobs) == 3

    # Fix the first shot, save, and reopen the file (as after closing Blender); only that shot runs.
    importer, export = addon_module("importer"), addon_module("export")
    import json

    placement = export.Placement(**json.loads(scene.flipsketch.jobs[0].placement))
    importer.write_traced(ob, ob.data.layers["Lines"], {"frames": [SQUARE]}, 1, 1, placement)
    path = tmp_path / "board.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    pump_until_done()
    assert [s.state for s in scene.flipsketch.shots] == ["done"] * 4
    assert len(scene.flipsketch.jobs) == 4  # one new job: nothing done twice

    assert bpy.ops.flipsketch.storyboard_to_sequencer() == {"FINISHED"}
    strips = scene.sequence_editor.strips
    images = sorted((s for s in strips if s.type == "IMAGE"), key=lambda s: s.frame_final_start)
    assert [(s.name, s.frame_final_start, s.frame_final_duration) for s in images] == [
        ("sh010", 1, 9),
        ("sh020", 10, 10),
        ("sh030", 20, 10),
        ("sh040", 30, 16),
    ]  # 4 drawings on twos each from the shot's first frame, the last one held to the shot's end
    assert sorted(s.text for s in strips if s.type == "TEXT") == ["sh010", "sh020", "sh030", "sh040"]


def test_headless_storyboard_command_saves_the_result(
    scene, addon, extension_zip: Path, tmp_path: Path, backend_python: Path
) -> None:
    add_camera()
    scene.timeline_markers.new("a", frame=1)
    scene.timeline_markers.new("b", frame=12)
    add_drawing(SQUARE)
    bpy.ops.flipsketch.shots_from_markers()
    for shot in scene.flipsketch.shots:
        shot.prompt = "the plus spins"
    board = tmp_path / "board.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(board), copy=True)
    result = subprocess.run(
        [
            sys.executable,
            ROOT / "examples" / "run_storyboard.py",
            extension_zip,
            board,
            tmp_path / "done.blend",
            "--backend-python",
            backend_python,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "FLIPSKETCH_MODEL": addon.model, "BLENDER_USER_RESOURCES": str(tmp_path / "user")},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "a: done" in result.stdout and "b: done" in result.stdout
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "done.blend"))
    assert [s.state for s in bpy.context.scene.flipsketch.shots] == ["done", "done"]
    assert sum(layer.name.startswith("FlipSketch:") for layer in bpy.data.objects["Sketch"].data.layers) == 2


def test_storyboard_can_be_cancelled_and_shot_overrides_apply(scene) -> None:
    add_camera()
    scene.timeline_markers.new("a", frame=1)
    scene.timeline_markers.new("b", frame=12)
    add_drawing(SQUARE)
    bpy.ops.flipsketch.shots_from_markers()
    shots = scene.flipsketch.shots
    for shot in shots:
        shot.prompt = "the plus spins"
    shots[1].frames, shots[1].variants, shots[1].motion = 6, 2, 0.9
    assert scene.flipsketch.shot_params(shots[1]) == {
        **scene.flipsketch.params(),
        "prompt": "the plus spins",
        "frames": 6,
        "variants": 2,
        "motion": pytest.approx(0.9),
    }
    scene.flipsketch.steps = 60
    assert bpy.ops.flipsketch.animate_storyboard() == {"FINISHED"}
    assert [s.state for s in shots] == ["queued", "queued"]
    assert bpy.ops.flipsketch.cancel_storyboard() == {"FINISHED"}
    pump_until_done()
    assert [(s.state, s.message) for s in shots] == [("todo", "Cancelled."), ("todo", "Cancelled.")]


def test_extend_from_the_image_sequence_uses_its_last_frame_exactly(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    parent = scene.flipsketch.jobs[-1]
    parent_dir, parent_layer = parent.out_dir, parent.variants[0].layer
    empty = bpy.data.objects[parent.sequence_object]
    bpy.context.view_layer.objects.active = empty
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
    pump_until_done()
    job = scene.flipsketch.jobs[-1]
    assert job.state == "imported", job.message
    last_generated = np.asarray(Image.open(Path(parent_dir) / "frame_0003.png").convert("L"))
    sent = np.asarray(Image.open(Path(job.out_dir) / "sketch.png").convert("L"))
    assert np.array_equal(sent, last_generated)  # the reference is the last frame, exactly
    assert [f.frame_number for f in ob.data.layers[parent_layer].frames] == [1, 3, 5, 7, 9, 11, 13]
    assert empty.image_user.frame_duration == 14


def test_regenerating_one_segment_leaves_the_others_untouched(scene) -> None:
    add_camera()
    ob = add_drawing(SQUARE)
    scene.frame_set(1)
    assert bpy.ops.flipsketch.animate() == {"FINISHED"}
    pump_until_done()
    root = scene.flipsketch.jobs[-1]
    layer_name, sequence_object = root.variants[0].layer, root.sequence_object
    ob.data.layers.active = ob.data.layers[layer_name]
    assert bpy.ops.flipsketch.extend() == {"FINISHED"}
    pump_until_done()
    extension_key = scene.flipsketch.jobs[-1].key
    layer, gpencil = ob.data.layers[layer_name], addon_module("gpencil")
    sequence = Path(bpy.path.abspath(bpy.data.objects[sequence_object].data.filepath)).parent

    def keys() -> dict[int, bytes]:
        return {f.frame_number: gpencil.read_strokes(layer, f.frame_number).positions.tobytes() for f in layer.frames}

    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(sequence.glob("seq_*.png"))}

    keys_before, files_before = keys(), files()
    scene.flipsketch.seed = 1234
    assert bpy.ops.flipsketch.regenerate(key=extension_key) == {"FINISHED"}
    pump_until_done()
    assert scene.flipsketch.jobs[-1].state == "imported", scene.flipsketch.jobs[-1].message
    assert addon_module("runtime").find_job(extension_key).state == "replaced"
    keys_after, files_after = keys(), files()
    assert sorted(keys_after) == sorted(keys_before) == [1, 3, 5, 7, 9, 11, 13]
    assert all(keys_after[f] == keys_before[f] for f in (1, 3, 5, 7))  # the first segment is untouched
    assert any(keys_after[f] != keys_before[f] for f in (9, 11, 13))  # the regenerated one changed
    assert all(files_after[f"seq_{n:04d}.png"] == files_before[f"seq_{n:04d}.png"] for n in range(1, 9))
    assert files_after.keys() == files_before.keys()
